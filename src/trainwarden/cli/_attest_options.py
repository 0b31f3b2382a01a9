"""The options of ``trainwarden attest verify`` for its start-up fast path.

Generated from the Typer command by ``python tests/catalogue/_attest_argv_gen.py``;
do not edit. A test fails while this table and the command disagree.
"""

from __future__ import annotations

#: Option string -> (parameter name, kind, repeatable).
OPTIONS: dict[str, tuple[str, str, bool]] = {
    "--baseline": ("baseline", "path", False),
    "--pub": ("key", "path", False),
    "--python": ("python", "str", False),
    "--code": ("code", "path", True),
    "--format": ("fmt", "format", False),
    "--fail-on": ("fail_on", "severity", False),
    "--no-cache": ("no_cache", "flag", False),
    "--key": ("old_key", "str", False),
    "--report-to": ("report_to", "str", False),
    "--ledger-token": ("ledger_token", "str", False),
    "--sign": ("report_sign", "path", False),
}

#: The environment variables the options read their defaults from.
ENVVARS: tuple[str, ...] = (
    "TRAINWARDEN_ATTEST_BASELINE",
    "TRAINWARDEN_ATTEST_PUBKEY",
    "TRAINWARDEN_ATTEST_KEY",
    "TRAINWARDEN_PYTHON",
    "TRAINWARDEN_FORMAT",
    "TRAINWARDEN_FAIL_ON",
    "TRAINWARDEN_NO_CACHE",
    "TRAINWARDEN_ATTEST_REPORT_TO",
    "TRAINWARDEN_LEDGER_TOKEN",
    "TRAINWARDEN_ATTEST_REPORT_KEY",
)

#: Each option's value when it is not given (a format by its name).
DEFAULTS: dict[str, object] = {
    "baseline": None,
    "key": None,
    "python": None,
    "code": (),
    "fmt": "text",
    "fail_on": None,
    "no_cache": False,
    "old_key": None,
    "report_to": None,
    "ledger_token": None,
    "report_sign": None,
}
