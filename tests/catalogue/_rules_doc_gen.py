"""Render docs/rules.md, the rule reference, from the rule catalogue (``trainwarden.rules``).

Run ``python tests/catalogue/_rules_doc_gen.py`` to rewrite docs/rules.md after changing a rule;
``tests/catalogue/test_rules.py`` fails while the file and the catalogue disagree.
"""

from __future__ import annotations

from pathlib import Path

from trainwarden.rules import THREATS, catalogue

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"

_SECTIONS = (
    ("TWS", "Scanner", "`trainwarden scan` and the scan the safe loader runs first"),
    ("TWL", "Safe loader", "`trainwarden.load`: refusals, manifests and load telemetry"),
    ("TWA", "Attestation", "`trainwarden attest`: the environment and the code a job runs"),
    ("TWM", "Training monitor", "`trainwarden.monitor.watch` and its distributed checks"),
    ("TWR", "Replay audit", "`trainwarden audit`: replayed training intervals and step records"),
    ("TWD", "Training data", "declared data and dataset manifests (`trainwarden data`)"),
    ("TWE", "Sabotage drill", "`trainwarden drill`: a technique missed, a control that alerted"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole of docs/rules.md."""
    rules = catalogue()
    lines = [
        "# Rule reference",
        "",
        "<!-- Generated from the rule catalogue by"
        " `python tests/catalogue/_rules_doc_gen.py`; do not edit. -->",
        "",
        "Every rule id TrainWarden can report, with its default severity, the threats of the",
        "[threat model](threat-model.md) it answers, and what it means. A check that rates a",
        "finding by what it found says how in the severity column; `--fail-on` compares each",
        "finding's own severity. The guide named in the last column explains the check and what",
        "it does not cover.",
        "",
        "| Threat | |",
        "| --- | --- |",
    ]
    lines += [f"| {tid} | {_cell(text)} |" for tid, text in THREATS.items()]
    for prefix, name, what in _SECTIONS:
        mine = [r for r in rules.values() if r.rule_id.startswith(prefix + "-")]
        lines += [
            "",
            f"## {name} (`{prefix}-`)",
            "",
            f"{what}; {len(mine)} rules.",
            "",
            "| Rule | Severity | Threats | Meaning | Guide |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in mine:
            severity = r.severity_note or r.severity.name
            threats = ", ".join(r.threats) or "-"
            lines.append(
                f'| <a id="{r.anchor}"></a>`{r.rule_id}` | {_cell(severity)} | {threats} '
                f"| {_cell(r.title)} | [{r.guide}]({r.guide}) |"
            )
    other = [r for r in rules.values() if r.rule_id[:3] not in {s[0] for s in _SECTIONS}]
    if other:
        raise ValueError(f"rules outside every section: {[r.rule_id for r in other]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")  # noqa: T201 - a developer tool's one line of output
