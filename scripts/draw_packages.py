#!/usr/bin/env python
"""Draw docs/packages.png: diccae's packages and who imports whom, read from the code.

    python scripts/draw_packages.py [--out docs/packages.png] [--print]

The arrows are computed with ``ast`` from the import statements (module level solid,
inside functions dashed), so the picture cannot drift from the code; rerun it after
moving modules.  Packages are laid out in the order the data flows through them
(store -> extract -> kmeans/labels -> confusion -> analysis -> trainer -> demo -> cli),
and every arrow should point down the page: an arrow pointing up is a layering bug.
"""

from __future__ import annotations

import argparse
import ast
import textwrap
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("featstore", "trainer", "demo", "cli")

#: top (depends on most) to bottom (depends on nothing); one row per entry
LAYERS: list[list[str]] = [
    ["cli"],
    ["demo"],
    ["trainer"],
    ["featstore"],  # featstore/__init__.py: the public facade (FeatureStore, open_dataset)
    ["featstore.analysis"],
    ["featstore.confusion"],
    ["featstore.labels"],
    ["featstore.kmeans", "featstore.extract"],
    ["featstore.store"],
    ["featstore.common"],
    ["featstore.base"],  # errors.py and progress.py: what every layer may import
]


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "featstore" and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] == "featstore" and len(parts) == 2:
        sub = ROOT / "featstore" / parts[1]
        return module if sub.is_dir() else "featstore.base"
    return parts[0]


def module_files() -> dict[str, Path]:
    out = {}
    for top in ROOTS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts)
            out[name.removesuffix(".__init__")] = path
    return out


def import_edges() -> dict[tuple[str, str], str]:
    """(importer package, imported package) -> "module" or "function" (strongest seen)."""
    edges: dict[tuple[str, str], str] = {}
    for name, path in module_files().items():
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target.split(".")[0] not in ROOTS:
                    continue
                a, b = package_of(name), package_of(target)
                if a == b:
                    continue
                kind = "module" if id(node) in top_level else "function"
                if edges.get((a, b)) != "module":
                    edges[(a, b)] = kind
    return edges


def modules_by_package() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for name in module_files():
        leaf = name.rsplit(".", 1)[-1]
        if name in ROOTS or name.count(".") == 1 and (ROOT / name.replace(".", "/")).is_dir():
            if name != "featstore":
                continue
        out[package_of(name)].append(leaf)
    return out


def reduced(edges: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """The edges not implied by a longer path (transitive reduction), plus every upward edge.

    Without it the picture is a hairball: ``cli`` imports almost every package directly.
    """
    order = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    down = {e for e in edges if order.get(e[1], 99) > order.get(e[0], -1)}
    succ: dict[str, set[str]] = defaultdict(set)
    for a, b in down:
        succ[a].add(b)

    def reachable(start: str, skip: tuple[str, str]) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in succ[node]:
                if (node, nxt) != skip and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    keep = {(a, b) for a, b in down if b not in reachable(a, (a, b))}
    return keep | (set(edges) - down)


def draw(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    edges = import_edges()
    shown = reduced(edges)
    mods = modules_by_package()
    width, row_h, box_h = 12.0, 1.35, 0.95
    fig, ax = plt.subplots(figsize=(width, row_h * len(LAYERS) + 0.6))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.2, row_h * len(LAYERS) + 0.3)
    ax.axis("off")
    rects: dict[str, tuple[float, float, float, float]] = {}
    for i, layer in enumerate(LAYERS):
        y = row_h * (len(LAYERS) - 1 - i)
        w = (width - 0.6 * (len(layer) + 1)) / len(layer)
        for j, pkg in enumerate(layer):
            x = 0.6 + j * (w + 0.6)
            ax.add_patch(
                FancyBboxPatch(
                    (x, y),
                    w,
                    box_h,
                    boxstyle="round,pad=0.02,rounding_size=0.08",
                    fc="#dbe9f6",
                    ec="#2b5d8a",
                    lw=1.3,
                )
            )
            ax.text(x + w / 2, y + box_h - 0.12, pkg, ha="center", va="top", weight="bold")
            names = sorted(mods.get(pkg, []))
            body = "public facade: __init__" if names == ["featstore"] else ", ".join(names)
            body = textwrap.fill(body, width=int(w * 12.5))
            ax.text(
                x + w / 2,
                y + box_h - 0.45,
                body,
                ha="center",
                va="top",
                fontsize=7,
                wrap=True,
            )
            rects[pkg] = (x, y, w, box_h)
    order = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    for (a, b), kind in sorted(edges.items()):
        if (a, b) not in shown or a not in rects or b not in rects:
            continue
        xa, ya, wa, _ = rects[a]
        xb, yb, wb, hb = rects[b]
        up = order[b] <= order[a]
        color = "#c0392b" if up else ("#333333" if kind == "module" else "#888888")
        patch = FancyArrowPatch(
            (xa + wa * (0.35 + 0.3 * (hash(b) % 7) / 6), ya),
            (xb + wb * (0.35 + 0.3 * (hash(a) % 7) / 6), yb + hb),
            arrowstyle="-|>",
            mutation_scale=10,
            lw=0.9,
            color=color,
            ls="-" if kind == "module" else "--",
            connectionstyle="arc3,rad=0.08",
        )
        ax.add_patch(patch)
    ax.set_title(
        "diccae packages: an arrow means 'imports' (solid: at module level, dashed: inside a "
        "function;\nred: points up, a layering bug). Arrows implied by a longer path are left "
        "out; `python scripts/draw_packages.py --print` lists them all.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "packages.png")
    ap.add_argument("--print", action="store_true", help="print the edges instead of drawing")
    args = ap.parse_args()
    if args.print:
        order = {p: i for i, layer in enumerate(LAYERS) for p in layer}
        for (a, b), kind in sorted(import_edges().items()):
            flag = "  UP" if order.get(b, 99) <= order.get(a, -1) else ""
            print(f"{a:22s} -> {b:22s} {kind}{flag}")
        return
    draw(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
