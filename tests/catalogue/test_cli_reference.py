"""docs/cli.md is generated from the application: every command and option, nothing stale."""

from __future__ import annotations

import re

from ._cli_doc_gen import DOC, render


def test_docs_cli_md_is_generated_from_the_app() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale: run python tests/catalogue/_cli_doc_gen.py"
    )


def test_the_reference_lists_every_top_level_command() -> None:
    from trainwarden.cli._app import COMMANDS

    documented = set(re.findall(r"^## `trainwarden ([a-z-]+)", render(), flags=re.M))
    assert documented == set(COMMANDS)
