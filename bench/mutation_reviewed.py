"""Surviving mutants of bench/mutation.py that were reviewed and found equivalent.

``REVIEWED[target][key] = reason``: ``key`` is ``"FUNCTION | MUTATED LINE(S)"`` as bench/mutation.py
prints it for an unexplained survivor; ``reason`` says in one line why no test can or should tell
the mutant from the original. A survivor that could change a security decision never goes here:
it gets a test that kills it.
"""

from __future__ import annotations

REVIEWED: dict[str, dict[str, str]] = {}
