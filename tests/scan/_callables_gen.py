"""Derive, from the live objects, which allowlist names the safe loader's closed constructor set
lets a pickle call, allocate or apply BUILD state to (``trainwarden.scan._callables``).

Run ``python tests/scan/_callables_gen.py`` to rewrite that module after changing the allowlist
or the constructor tables; ``tests/scan/test_callables.py`` fails while they disagree.
"""

from __future__ import annotations

import enum
import importlib
import warnings
from pathlib import Path

from trainwarden.loading import _constructors as C
from trainwarden.scan._allowlist import SAFE


def resolve_name(name: str) -> object:
    """Import ``name``'s module (longest importable prefix) and walk the rest as attributes."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj: object = importlib.import_module(".".join(parts[:i]))
                for p in parts[i:]:
                    obj = getattr(obj, p)
        except (ImportError, AttributeError):
            continue
        return obj
    return None


def derive() -> dict[str, list[str]]:
    callable_: set[str] = set()
    alloc: set[str] = set()
    build: set[str] = set()
    classes: set[str] = set()
    for name in sorted(SAFE):
        obj = resolve_name(name)
        if obj is None:
            continue
        if C._spec_for(obj) is not None or isinstance(obj, enum.EnumMeta):
            callable_.add(name)
        if isinstance(obj, type):
            classes.add(name)
            try:
                C._check_allocatable(obj, ())
                alloc.add(name)
            except C.Refused:
                pass
            owner = C._defined_in(obj, "__setstate__")
            if owner is None or C._key_of(owner) in C.SETSTATES or C._is(owner, C.SETSTATES):
                build.add(name)
    return {
        "CALLABLE": sorted(callable_),
        "ALLOCATABLE": sorted(alloc),
        "BUILDABLE": sorted(build),
        "CLASSES": sorted(classes),
    }


def render(sets: dict[str, list[str]]) -> str:
    out = [
        '"""Which allowlisted globals a pickle may call, allocate or BUILD (generated).',
        "",
        "Derived from the live objects by tests/scan/_callables_gen.py with the safe loader's",
        "closed constructor set (trainwarden.loading._constructors); tests/scan/test_callables.py",
        "keeps it true. The scanner reports any other use of an allowlisted name: a name that is",
        "safe to import is not thereby safe to call.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["ALLOCATABLE", "BUILDABLE", "CALLABLE", "CLASSES"]',
        "",
    ]
    docs = {
        "CALLABLE": "REDUCE (and INST/OBJ with arguments) may call these.",
        "ALLOCATABLE": "NEWOBJ, NEWOBJ_EX, copyreg.__newobj__/_reconstructor may allocate these.",
        "BUILDABLE": "BUILD may apply state to instances of these classes.",
        "CLASSES": "The allowlisted names that are classes.",
    }
    for key in ("CALLABLE", "ALLOCATABLE", "BUILDABLE", "CLASSES"):
        out.append(f"#: {docs[key]}")
        out.append(f"{key}: frozenset[str] = frozenset(")
        out.append("    {")
        out.extend(f'        "{n}",' for n in sets[key])
        out.append("    }")
        out.append(")")
        out.append("")
    return "\n".join(out)


TARGET = Path(__file__).resolve().parents[2] / "src/trainwarden/scan/_callables.py"

if __name__ == "__main__":
    TARGET.write_text(render(derive()), encoding="utf-8")
