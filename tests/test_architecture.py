"""The package boundaries of issue 14, checked by reading the source (ast), not by convention.

Over featstore, trainer, cli and demo:

* no import cycles -- neither among module-level imports nor once imports inside
  functions are counted too (a deferred import still ties two modules together: the
  issue's own example, ``trainer.engine`` <-> ``trainer.distributed``, was one);
  imports under ``if TYPE_CHECKING:`` never run and do not count;
* no private name crosses a package line: no ``from x import _y``, no private module
  in the path (``x._impl``) and no ``module._y`` attribute on a module imported from
  another package (a private *method* called on an object cannot be seen without
  types and is left to review);
* no module over :data:`MAX_LINES` lines;
* ``featstore.errors`` and ``featstore.progress`` import nothing heavy (checked in a
  fresh interpreter, so the package ``__init__`` they run first counts too);
* the library (featstore, trainer, demo) never imports rich, nor the CLI: progress is
  data and rendering belongs to ``cli/``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featstore", "trainer", "cli", "demo")
LIBRARY = ("featstore", "trainer", "demo")  # what must not render or reach up into cli
MAX_LINES = 400
#: module -> why it may be longer; keep it short and justified
LONG_MODULES_ALLOWED: dict[str, str] = {}
#: what "nothing heavy" means for the light modules
HEAVY = ("numpy", "torch", "zarr", "av", "scipy", "sklearn", "matplotlib", "pandas", "dask", "rich")
LIGHT_MODULES = ("featstore.errors", "featstore.progress")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES: dict[str, Path] = {
    _module_name(p): p
    for pkg in PACKAGES
    for p in sorted((ROOT / pkg).rglob("*.py"))
    if "__pycache__" not in p.parts
}
TREES: dict[str, ast.Module] = {m: ast.parse(p.read_text(), str(p)) for m, p in FILES.items()}


def _is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py"


def package_of(module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to itself)."""
    return module if _is_package(module) else module.rpartition(".")[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module of ours the statement loads (longest known prefix)
    names: tuple[str, ...]  # names taken from ``target`` by ``from target import ...``
    written: str  # the dotted module path as written (after resolving relative imports)
    line: int
    in_function: bool


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = package_of(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _known_prefix(dotted: str) -> str | None:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FILES:
            return ".".join(parts[:n])
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # the ``else`` branch runs
                yield other, in_function
                yield from _walk(other, in_function)
            continue
        inner = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield child, inner
        yield from _walk(child, inner)


def imports_of(module: str) -> Iterator[Import]:
    for node, in_function in _walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known_prefix(alias.name)
                if target:
                    yield Import(module, target, (), alias.name, node.lineno, in_function)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in FILES:  # ``from pkg import submodule``
                    yield Import(module, sub, (), sub, node.lineno, in_function)
                else:
                    target = _known_prefix(base)
                    if target:
                        yield Import(module, target, (alias.name,), base, node.lineno, in_function)


IMPORTS: list[Import] = [i for m in FILES for i in imports_of(m)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(FILES)))
    for v in sorted(FILES):
        if v not in index:
            visit(v)
    return sorted(out)


def _graph(include_function_level: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if i.target != i.importer and (include_function_level or not i.in_function):
            edges.setdefault(i.importer, set()).add(i.target)
    return edges


def _describe(cycle: list[str], include_function_level: bool) -> str:
    inside = set(cycle)
    lines = [
        f"    {i.importer}:{i.line} -> {i.target}" + (" (in a function)" if i.in_function else "")
        for i in IMPORTS
        if i.importer in inside
        and i.target in inside
        and i.target != i.importer
        and (include_function_level or not i.in_function)
    ]
    return "  cycle " + " <-> ".join(cycle) + ":\n" + "\n".join(sorted(set(lines)))


def test_the_scan_sees_the_code():
    """Guards the checks below against passing because they read nothing."""
    assert {"featstore.errors", "cli.main", "trainer.phases", "demo.pipeline"} <= set(FILES)
    assert any(i.importer == "cli.main" and i.target == "featstore.errors" for i in IMPORTS)
    assert any(i.in_function for i in IMPORTS) and any(not i.in_function for i in IMPORTS)
    # the cycle finder finds a planted cycle
    assert _cycles({"featstore.errors": {"cli.main"}, "cli.main": {"featstore.errors"}}) == [
        ["cli.main", "featstore.errors"]
    ]


def test_no_module_level_import_cycles():
    cycles = _cycles(_graph(include_function_level=False))
    assert not cycles, "import cycles:\n" + "\n".join(_describe(c, False) for c in cycles)


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = _cycles(_graph(include_function_level=True))
    assert not cycles, "import cycles through deferred imports:\n" + "\n".join(
        _describe(c, True) for c in cycles
    )


def _module_aliases(module: str) -> dict[str, str]:
    """Local names bound to one of our modules (``import a.b as m``, ``from a import b``)."""
    out: dict[str, str] = {}
    for node, _ in _walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in FILES:
                    out[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in FILES:
                    out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def private_crossings() -> list[str]:
    found = []
    for i in IMPORTS:
        if package_of(i.importer) == package_of(i.target):
            continue
        where = f"{i.importer}:{i.line}"
        private_parts = [p for p in i.written.split(".") if _private(p)]
        if private_parts:
            found.append(f"{where} imports private module path {i.written}")
        found += [f"{where} imports {i.target}.{n}" for n in i.names if _private(n)]
    for module, tree in TREES.items():
        aliases = _module_aliases(module)
        for node, _ in _walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            head = _dotted(node.value)
            if head is None:
                continue
            first, _, rest = head.partition(".")
            if first in aliases:  # ``m._y`` or ``m.sub._y`` with ``m`` bound by an import
                target: str | None = f"{aliases[first]}.{rest}" if rest else aliases[first]
            else:  # ``import a.b`` then ``a.b._y``
                target = head
            if target not in FILES:
                continue
            if package_of(target) != package_of(module):
                found.append(f"{module}:{node.lineno} uses {target}.{node.attr}")
    return sorted(set(found))


def test_no_private_name_crosses_a_package_line():
    found = private_crossings()
    assert not found, "private names used across packages:\n  " + "\n  ".join(found)


def test_no_module_is_too_long():
    long = {
        m: n
        for m, p in FILES.items()
        if (n := len(p.read_text().splitlines())) > MAX_LINES and m not in LONG_MODULES_ALLOWED
    }
    assert not long, f"modules over {MAX_LINES} lines:\n  " + "\n  ".join(
        f"{FILES[m].relative_to(ROOT)}: {n}" for m, n in sorted(long.items(), key=lambda x: -x[1])
    )


def test_the_allow_list_is_current():
    for module, why in LONG_MODULES_ALLOWED.items():
        assert module in FILES and why.strip(), module
        assert len(FILES[module].read_text().splitlines()) > MAX_LINES, f"{module} fits now"


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_nothing_heavy(module):
    code = f"import sys, {module}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert res.stdout.strip() == "", f"importing {module} loads: {res.stdout.strip()}"


def _library_imports(prefix: str) -> list[str]:
    return sorted(
        f"{m}:{line} imports {name}"
        for m in FILES
        if m.split(".")[0] in LIBRARY
        for node, _ in _walk(TREES[m])
        for line, name in _imported_names(node)
        if name == prefix or name.startswith(prefix + ".")
    )


def _imported_names(node: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of an import statement; third-party ones included."""
    if isinstance(node, ast.Import):
        return [(node.lineno, a.name) for a in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level and node.module:
        return [(node.lineno, node.module)]
    return []


def test_library_does_not_import_rich():
    found = _library_imports("rich")
    assert not found, "rendering in library code (move it to cli/):\n  " + "\n  ".join(found)


def test_library_does_not_import_the_cli():
    found = _library_imports("cli")
    assert not found, "library code reaching up into cli/:\n  " + "\n  ".join(found)


def test_library_does_not_use_the_make_progress_shim():
    found = sorted(
        f"{i.importer}:{i.line}"
        for i in IMPORTS
        if i.importer.split(".")[0] in LIBRARY
        and i.importer != "featstore.progress"
        and "make_progress" in i.names
    )
    assert not found, (
        "featstore.progress.make_progress is a shim to delete; report ProgressUpdates:\n  "
        + "\n  ".join(found)
    )


def _draw_packages():
    """scripts/draw_packages.py, whose LAYERS and import_edges() both draw and check."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "draw_packages", ROOT / "scripts" / "draw_packages.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_imports_only_point_down_the_layers():
    """Each package imports only packages below it in docs/packages.png's order
    (store -> extract/kmeans -> labels -> confusion -> analysis -> trainer -> demo -> cli),
    so the stage order a reader sees in the folder names is the dependency order too."""
    draw = _draw_packages()
    order = {p: i for i, layer in enumerate(draw.LAYERS) for p in layer}
    edges = draw.import_edges()
    unknown = sorted({p for e in edges for p in e} - set(order))
    assert not unknown, f"packages missing from LAYERS in scripts/draw_packages.py: {unknown}"
    upward = [f"{a} -> {b} ({kind})" for (a, b), kind in edges.items() if order[b] <= order[a]]
    assert not upward, "imports pointing up the layers:\n  " + "\n  ".join(sorted(upward))


def test_trainer_never_imports_extraction():
    """Training needs only stores and label files, so a training machine needs no PyAV,
    no encoders and no manifests (docs/architecture.md)."""
    draw = _draw_packages()
    assert ("trainer", "featstore.extract") not in draw.import_edges()
