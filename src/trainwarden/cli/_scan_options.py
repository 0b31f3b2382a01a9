"""The options of ``trainwarden scan`` for its start-up fast path.

Generated from the Typer command by ``python tests/catalogue/_scan_argv_gen.py``;
do not edit. A test fails while this table and the command disagree.
"""

from __future__ import annotations

#: Option string -> (parameter name, kind, repeatable).
OPTIONS: dict[str, tuple[str, str, bool]] = {
    "--format": ("fmt", "format", False),
    "--fail-on": ("fail_on", "severity", False),
    "--policy": ("policy_file", "str", False),
    "--allow": ("allow", "str", True),
    "--deny": ("deny", "str", True),
    "--include": ("include", "str", True),
    "--exclude": ("exclude", "str", True),
    "--workers": ("workers", "count", False),
    "--hash": ("hash_files", "flag", False),
    "--output": ("output", "str", False),
    "-o": ("output", "str", False),
    "--verbose": ("verbose", "flag", False),
    "-v": ("verbose", "flag", False),
    "--allow-empty": ("allow_empty", "flag", False),
}

#: The environment variables the options read their defaults from.
ENVVARS: tuple[str, ...] = (
    "TRAINWARDEN_SCAN_FORMAT",
    "TRAINWARDEN_FORMAT",
    "TRAINWARDEN_FAIL_ON",
    "TRAINWARDEN_POLICY",
    "TRAINWARDEN_ALLOW",
    "TRAINWARDEN_DENY",
    "TRAINWARDEN_INCLUDE",
    "TRAINWARDEN_EXCLUDE",
    "TRAINWARDEN_WORKERS",
    "TRAINWARDEN_HASH",
    "TRAINWARDEN_OUTPUT",
    "TRAINWARDEN_VERBOSE",
    "TRAINWARDEN_ALLOW_EMPTY",
)

#: Each option's value when it is not given (a format by its name).
DEFAULTS: dict[str, object] = {
    "fmt": "text",
    "fail_on": None,
    "policy_file": None,
    "allow": (),
    "deny": (),
    "include": (),
    "exclude": (),
    "workers": None,
    "hash_files": False,
    "output": None,
    "verbose": False,
    "allow_empty": False,
}
