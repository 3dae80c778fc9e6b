"""A short audit section for other reports (the demo's), read back from audit.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featstore.analysis.audit import FLAGS


def audit_summary_markdown(
    audit: dict[str, Any] | str | Path,
    *,
    designed_pairs: list[tuple[str, str]] | None = None,
    top: int = 5,
    heading: str = "## Audit",
) -> str:
    """A short report section from audit.json (its dict or its path) — for the demo report.

    ``designed_pairs`` (class-name pairs such as the demo's look-alike and sound-alike
    pairs) adds the share of ``modality_disagreement`` clips whose audio and video
    classes form one of those pairs, in either order.
    """
    if not isinstance(audit, dict):
        audit = dict(json.loads(Path(audit).read_text()))
    assert isinstance(audit, dict)
    flags = audit["flags"]
    n = max(int(audit["rows_audited"]), 1)
    lines = [heading, "", "| flag | clips | share | meaning |", "|---|---:|---:|---|"]
    for f in FLAGS:
        lines.append(
            f"| {f} | {flags[f]:,} | {100 * flags[f] / n:.1f} % | {audit['flag_meaning'][f]} |"
        )
    lines.append("")
    views = audit["metrics"]["views"]
    acc = ", ".join(
        f"{v} {100 * m['probe_cv_accuracy']:.1f} %"
        for v, m in views.items()
        if m["probe_cv_accuracy"] is not None
    )
    lines += [f"Cross-validated linear-probe accuracy against the labels: {acc}.", ""]
    pairs = audit.get("disagreement_pairs", [])[:top]
    if pairs:
        lines += ["Most frequent modality disagreements (audio says / video says):", ""]
        lines += [f"- {p['a']} / {p['b']}: {p['count']} clips" for p in pairs]
        lines.append("")
    if designed_pairs is not None and flags["modality_disagreement"]:
        wanted = {frozenset(p) for p in designed_pairs}
        on = sum(
            p["count"]
            for p in audit.get("disagreement_pairs", [])
            if frozenset((p["a"], p["b"])) in wanted
        )
        lines += [
            f"{on} of {flags['modality_disagreement']} disagreement clips "
            f"({100 * on / flags['modality_disagreement']:.0f} %) fall on the designed look-alike/sound-alike "
            "pairs (counted over the listed top pairs in audit.json).",
            "",
        ]
    mis = audit.get("mislabel_pairs", [])[:top]
    if mis:
        lines += ["Most frequent suggested relabellings (label -> suggested):", ""]
        lines += [f"- {p['a']} -> {p['b']}: {p['count']} clips" for p in mis]
        lines.append("")
    return "\n".join(lines)
