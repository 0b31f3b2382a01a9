"""The scan policy: which pickle globals are safe, dangerous or unknown, and when a scan fails.

Default deny: a global is SAFE only when it is on the allowlist (each entry with its reason).
Names are normalised exactly the way CPython's unpickler resolves them before they are matched.
"""

from __future__ import annotations

import _compat_pickle
import dataclasses
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwarden._internal.files import read_limited
from trainwarden.errors import TrainWardenError
from trainwarden.findings import Severity
from trainwarden.scan._types import Limits, ScanError, Verdict

__all__ = ["Policy"]


def _toml() -> Any:
    # Imported when a policy file is read: most scans find none, and tomllib (with datetime) is
    # a noticeable share of a small scan's start-up.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib


_POLICY_KEYS = {"allow", "deny", "fail_on", "unknown_severity", "limits", "require_manifest"}


def _is_dunder(part: str) -> bool:
    return len(part) > 4 and part.startswith("__") and part.endswith("__")


def _check_entry(entry: str, source: str) -> str:
    entry = entry.strip()
    parts = entry.split(".")
    if len(parts) < 2 or any(not p for p in parts) or "*" in entry[:-1]:
        raise ScanError(
            f"invalid policy entry {entry!r} in {source}",
            hint='entries are "module.qualname" (e.g. "torch.nn.Linear") or "module.*"',
        )
    return entry


@dataclass(frozen=True)
class Policy:
    """An immutable scan policy. Build it with :meth:`default`, :meth:`from_file` or
    :meth:`discover`, then refine it with :meth:`with_overrides`."""

    safe: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    dangerous: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    fail_on: Severity = Severity.HIGH
    unknown_severity: Severity = Severity.HIGH
    limits: Limits | None = None
    source: str | None = None
    require_manifest: bool = False

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        """The built-in allowlist and denylist (``trainwarden.scan._allowlist``/``denylist``)."""
        return _default_policy()

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read ``trainwarden.toml`` (top level or a ``[scan]`` table) or ``pyproject.toml``
        (``[tool.trainwarden]``). Raises :class:`ScanError` naming the file on any problem."""
        p = Path(path)
        try:
            raw = read_limited(p, 4 << 20)
        except OSError as e:
            raise ScanError(
                f"cannot read policy file {p}: {e.strerror or e}",
                hint="check the path given to --policy",
            ) from e
        tomllib = _toml()
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ScanError(f"policy file {p} is not valid TOML: {e}") from e
        if p.name == "pyproject.toml" or "tool" in doc:
            section = doc.get("tool", {}).get("trainwarden")
            if section is None:
                raise ScanError(
                    f"policy file {p} has no [tool.trainwarden] table",
                    hint="add [tool.trainwarden] with allow/deny/fail_on keys",
                )
        else:
            section = doc
        if not isinstance(section, dict):
            raise ScanError(f"policy file {p}: [tool.trainwarden] must be a table")
        if isinstance(section.get("scan"), dict):
            section = {**section, **section["scan"]}
        return cls.default()._apply_config(section, str(p))

    @classmethod
    def discover(cls, start: str | Path) -> Policy:
        """Walk up from ``start`` for ``trainwarden.toml`` or a ``pyproject.toml`` with a
        ``[tool.trainwarden]`` table; the built-in default when there is none."""
        here = Path(start).resolve()
        if not here.is_dir():
            here = here.parent
        for d in (here, *here.parents):
            cand = d / "trainwarden.toml"
            if cand.is_file():
                return cls.from_file(cand)
            pyproject = d / "pyproject.toml"
            if pyproject.is_file():
                tomllib = _toml()
                try:
                    doc = tomllib.loads(pyproject.read_text("utf-8"))
                except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                    raise ScanError(f"cannot parse {pyproject}: {e}") from e
                if isinstance(doc.get("tool"), dict) and "trainwarden" in doc["tool"]:
                    return cls.from_file(pyproject)
        return cls.default()

    def _apply_config(self, section: Mapping[str, Any], source: str) -> Policy:
        for key, value in section.items():
            if key not in _POLICY_KEYS and not isinstance(value, dict):
                raise ScanError(
                    f"unknown key {key!r} in policy file {source}",
                    hint=f"known keys: {', '.join(sorted(_POLICY_KEYS))}",
                )

        def entries(key: str) -> list[str]:
            value = section.get(key, [])
            if isinstance(value, dict):
                items = list(value.keys())
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                items = list(value)
            else:
                raise ScanError(
                    f"{key!r} in policy file {source} must be a list of strings",
                    hint=f'{key} = ["module.qualname", "module.*"]',
                )
            return [_check_entry(v, source) for v in items]

        try:
            fail_on = Severity.parse(section.get("fail_on", self.fail_on))
            unknown = Severity.parse(section.get("unknown_severity", self.unknown_severity))
        except TrainWardenError as e:
            raise ScanError(f"policy file {source}: {e.message}", hint=e.hint) from e
        limits = self.limits
        if "limits" in section:
            lim = section["limits"]
            if not isinstance(lim, dict):
                raise ScanError(f"'limits' in policy file {source} must be a table")
            known = {f.name for f in dataclasses.fields(Limits)}
            bad = sorted(set(lim) - known)
            if bad:
                raise ScanError(
                    f"unknown limit(s) {', '.join(bad)} in policy file {source}",
                    hint=f"known limits: {', '.join(sorted(known))}",
                )
            try:
                limits = Limits(**lim)
            except (ScanError, TypeError) as e:
                raise ScanError(f"policy file {source}: {e}") from e
        require_manifest = section.get("require_manifest", self.require_manifest)
        if not isinstance(require_manifest, bool):
            raise ScanError(f"'require_manifest' in policy file {source} must be true or false")
        return dataclasses.replace(
            self,
            require_manifest=require_manifest,
            allow=(*self.allow, *entries("allow")),
            deny=(*self.deny, *entries("deny")),
            fail_on=fail_on,
            unknown_severity=unknown,
            limits=limits,
            source=source,
        )

    def with_overrides(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> Policy:
        """A copy with extra ``allow``/``deny`` entries (``module.qualname`` or ``module.*``).

        Deny always wins. An exact allow entry overrides the built-in DANGEROUS list (an
        explicit decision); an ``allow`` wildcard never makes a DANGEROUS global safe.
        """
        return dataclasses.replace(
            self,
            allow=(*self.allow, *(_check_entry(a, "--allow") for a in allow)),
            deny=(*self.deny, *(_check_entry(d, "--deny") for d in deny)),
        )

    # -- classification ----------------------------------------------------------------------

    @staticmethod
    def normalize(module: str, name: str) -> tuple[str, str]:
        """Apply the ``fix_imports`` mapping CPython uses for protocol < 3 pickles."""
        key = (module, name)
        if key in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[key]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
        return module, name

    def classify(self, module: str, name: str, *, fix_imports: bool = True) -> tuple[Verdict, str]:
        """Classify the global ``module``/``name`` as an unpickler would resolve it.

        ``name`` may be a dotted attribute path (``os``/``path.join``); ``fix_imports`` applies
        the protocol-2 renames (``__builtin__`` -> ``builtins``). Returns the verdict and why.
        """
        if fix_imports:
            module, name = self.normalize(module, name)
        full = f"{module}.{name}"
        parts = name.split(".")
        prefixes = [f"{module}.{'.'.join(parts[: i + 1])}" for i in range(len(parts))]
        for pattern in self.deny:
            if _wild_match(pattern, full, module, deny=True):
                return Verdict.DANGEROUS, f"denied by policy entry {pattern!r}"
        if full in self.allow:
            return Verdict.SAFE, "allowed by policy"
        for pref in prefixes:
            if pref in self.dangerous:
                return Verdict.DANGEROUS, self.dangerous[pref]
        reason = self.safe.get(full)
        if reason is not None:
            return Verdict.SAFE, reason
        if any(_is_dunder(p) for p in parts) or "<locals>" in parts:
            return (
                Verdict.DANGEROUS,
                "walks a special attribute (e.g. __globals__, __builtins__, __subclasses__) "
                "that reaches arbitrary code",
            )
        for pattern, why in self.dangerous.items():
            if pattern.endswith(".*") and _wild_match(pattern, full, module, deny=True):
                return Verdict.DANGEROUS, why
        if len(parts) > 1:
            # An attribute path through another object (``pathlib`` / ``os.system`` reaches
            # os.system through pathlib's import of os) names an object the string cannot
            # identify; only exact entries above may allow one. Fail closed.
            return (
                Verdict.DANGEROUS,
                f"reaches {'.'.join(parts[1:])!r} through an attribute of {module}.{parts[0]}: "
                "the object cannot be decided by name",
            )
        if module == "__main__":
            return (
                Verdict.UNKNOWN,
                "defined by the loading program's own script: unknown code, not on the allowlist",
            )
        if any(_is_dunder(p) for p in module.split(".")):
            return Verdict.DANGEROUS, "imports a special module name"
        for pattern in self.allow:
            if pattern.endswith(".*") and _wild_match(pattern, full, module, deny=False):
                return Verdict.SAFE, f"allowed by policy entry {pattern!r}"
        if full.startswith("<extension>"):
            return Verdict.UNKNOWN, "unregistered copyreg extension code"
        return Verdict.UNKNOWN, "not on the allowlist"


def _wild_match(pattern: str, full: str, module: str, *, deny: bool) -> bool:
    if not pattern.endswith(".*"):
        return pattern == full or (deny and full.startswith(pattern + "."))
    base = pattern[:-2]
    if deny:
        return full.startswith(base + ".")
    rest = full[len(base) + 1 :] if full.startswith(base + ".") else None
    return module == base and rest is not None and "." not in rest


_DEFAULT: Policy | None = None


def _default_policy() -> Policy:
    global _DEFAULT
    if _DEFAULT is None:
        from trainwarden.scan._allowlist import SAFE
        from trainwarden.scan._denylist import DANGEROUS

        _DEFAULT = Policy(safe=dict(SAFE), dangerous=dict(DANGEROUS), source="<built-in>")
    return _DEFAULT
