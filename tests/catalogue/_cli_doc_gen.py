"""Render docs/cli.md, the command-line reference, from the ``trainwarden`` application itself.

Run ``python tests/catalogue/_cli_doc_gen.py`` to rewrite docs/cli.md after changing a command or
an option; ``tests/catalogue/test_cli_reference.py`` fails while the file and the app disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return ""
    value = param.default
    if value is None or value == () or callable(value):
        return ""
    value = getattr(value, "value", value)
    return f"`{value}`"


def _commands(group: Any, prefix: str, context: Any) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    ctx = context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        path = f"{prefix} {name}"
        if hasattr(cmd, "list_commands"):
            found.extend(_commands(cmd, path, context))
        else:
            found.append((path, cmd))
    return found


def render() -> str:
    """The whole of docs/cli.md."""
    import typer.main

    from trainwarden.cli import app

    root = typer.main.get_command(app)
    context = type(root).context_class
    lines = [
        "# Command-line reference",
        "",
        "<!-- Generated from the trainwarden application by"
        " `python tests/catalogue/_cli_doc_gen.py`; do not edit. -->",
        "",
        "Every command and option of `trainwarden`. Exit codes everywhere: 0 clean, 1 findings at",
        "or above `--fail-on`, 2 usage, input or internal error. Options marked with an",
        "environment variable read it when the option is not given. Rule ids are in",
        "[rules.md](rules.md).",
        "",
        "Manifests, keys, policies, snapshots and saved checkpoints are read only when they are",
        "regular files within a size limit (manifests 64 MiB, snapshots 512 MiB, policies",
        "4 MiB, keys and saved checkpoints 64 KiB): a FIFO or a sparse file of many gigabytes",
        "planted in their place is refused in one line naming it, exit 2, without a wait and",
        "without reading it (`tests/test_bounded_inputs.py`).",
        "",
    ]
    for path, cmd in _commands(root, "trainwarden", context):
        lines += [f"## `{path}`", "", _cell(cmd.help or "").split("\f")[0], ""]
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        opts = [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]
        if args:
            lines.append(
                "Arguments: " + ", ".join(f"`{a.name.upper()}`" for a in args if a.name) + "."
            )
            lines.append("")
        if opts:
            lines += ["| option | default | environment | meaning |", "|---|---|---|---|"]
            for o in opts:
                names = ", ".join(f"`{n}`" for n in [*o.opts, *o.secondary_opts])
                envs = [o.envvar] if isinstance(o.envvar, str) else list(o.envvar or ())
                env = ", ".join(f"`{e}`" for e in envs)
                lines.append(f"| {names} | {_default(o)} | {env} | {_cell(o.help or '')} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")  # noqa: T201 - a developer tool's one line of output
