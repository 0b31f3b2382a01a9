"""Checkpoint manifests: an in-toto Statement of every file's sha256, optionally signed (Ed25519).

A manifest is stored as a DSSE envelope (``payloadType`` ``application/vnd.in-toto+json``)
beside what it covers: ``<file>.manifest.json`` for a single checkpoint file and
``<folder>/trainwarden.manifest.json`` for a checkpoint folder (every regular file below the
folder except the manifest itself is a subject, named by its POSIX path relative to the folder).
Unsigned manifests carry an empty ``signatures`` list.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden._internal import signing as _signing
from trainwarden._internal.files import atomic_path, read_limited
from trainwarden._internal.signing import PAYLOAD_TYPE, pae
from trainwarden.findings import Finding, Severity
from trainwarden.loading._types import ManifestError
from trainwarden.report import exit_code_for

__all__ = [
    "FOLDER_MANIFEST_NAME",
    "MANIFEST_SUFFIX",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "ManifestCheck",
    "create_manifest",
    "find_manifest_for_file",
    "generate_keypair",
    "hash_file",
    "load_private_key",
    "load_public_key",
    "manifest_path_for",
    "pae",
    "verify_file_bytes",
    "verify_manifest",
    "write_atomic",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trainwarden.dev/checkpoint-manifest/v1"
FOLDER_MANIFEST_NAME = "trainwarden.manifest.json"
MANIFEST_SUFFIX = ".manifest.json"

_CHUNK = 4 * 1024 * 1024


# -- atomic writes ------------------------------------------------------------------------------


# One atomic writer for the whole package; kept under this name for callers of this module.
write_atomic = atomic_path


# -- keys -------------------------------------------------------------------------------------


def generate_keypair(private_path: Path, public_path: Path | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (PKCS#8 PEM, mode 0600; public key as SPKI PEM)."""
    priv, pub, _ = _signing.generate_keypair(private_path, public_path, error=ManifestError)
    return priv, pub


def load_private_key(key: Any) -> Any:
    """Accept an Ed25519 private key object or a path to a PEM file."""
    return _signing.load_private_key(key, error=ManifestError)


def load_public_key(key: Any) -> Any:
    """Accept an Ed25519 public key object, or a path to a PEM public (or private) key."""
    return _signing.load_public_key(key, error=ManifestError)


# -- statements ---------------------------------------------------------------------------------


def manifest_path_for(path: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``path`` lives (folder: inside it; file: beside it)."""
    p = Path(path)
    if p.is_dir():
        return p / FOLDER_MANIFEST_NAME
    return p.with_name(p.name + MANIFEST_SUFFIX)


def hash_file(path: Path) -> str:
    """The sha256 of a regular file, read in chunks; pipes and devices are refused unread."""
    from trainwarden._internal.files import NOT_REGULAR_HINT, NotRegularFileError, open_regular

    h = hashlib.sha256()
    try:
        fd = open_regular(path)
    except NotRegularFileError as e:
        raise ManifestError(
            f"cannot hash {path}: not a regular file (a {e.kind})", hint=NOT_REGULAR_HINT
        ) from None
    except OSError as e:
        raise ManifestError(f"cannot read {path}: {e.strerror or e}", hint="check the path") from e
    with open(fd, "rb", buffering=0) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    # Everything but directories: a FIFO, socket, device or dangling link in a checkpoint folder
    # is an entry like any other (creating a manifest refuses it; verify reports it), never
    # skipped unseen.
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if not p.is_dir()
        and p.name != FOLDER_MANIFEST_NAME
        and not p.name.endswith(MANIFEST_SUFFIX)
        and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    ]
    return files


def _subjects(path: Path, digests: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    if path.is_dir():
        names = [(f.relative_to(path).as_posix(), f) for f in _folder_files(path)]
    else:
        names = [(path.name, path)]
    out = []
    for name, f in names:
        digest = digests[name] if digests and name in digests else hash_file(f)
        out.append({"name": name, "digest": {"sha256": digest}})
    return out


def _statement(path: Path, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    from trainwarden._version import __version__

    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "tool": {"name": "trainwarden", "version": __version__},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "kind": "folder" if path.is_dir() else "file",
        },
    }


def _envelope(statement: Mapping[str, Any], key: Any | None) -> dict[str, Any]:
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return _signing.envelope(payload, key, error=ManifestError)


def create_manifest(
    path: str | os.PathLike[str],
    *,
    key: Any | None = None,
    digests: Mapping[str, str] | None = None,
) -> Path:
    """Write the manifest of a checkpoint file or folder and return the manifest's path.

    ``key`` (an Ed25519 private key or the path of its PEM file) signs it. ``digests`` lets a
    caller that already hashed a file (by subject name) skip re-reading it.
    """
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p} does not exist", hint="check the path")
    subjects = _subjects(p, digests)
    if not subjects:
        raise ManifestError(f"{p} contains no files to list in a manifest")
    envelope = _envelope(_statement(p, subjects), key)
    target = manifest_path_for(p)
    with write_atomic(target) as tmp:
        tmp.write_text(json.dumps(envelope, indent=2) + "\n", encoding="utf-8")
    return target


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestCheck:
    """The outcome of a successful manifest check (failures raise :class:`ManifestError`).

    ``signed_by`` holds only the key id of a signature that was verified; the key ids that
    unchecked signature entries claim (anyone can write any key id) are in ``unverified_keyids``.
    """

    manifest: str
    subjects: int
    signed_by: tuple[str, ...]
    signature_verified: bool
    findings: tuple[Finding, ...] = ()
    unverified_keyids: tuple[str, ...] = ()
    path: str = ""

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0`` (a mismatch raises)."""
        return exit_code_for(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": True,
            "manifest": self.manifest,
            "files": self.subjects,
            "signed_by": list(self.signed_by),
            "signature_verified": self.signature_verified,
            "unverified_signatures": len(self.unverified_keyids),
        }


def _finding(rule: str, sev: Severity, msg: str, loc: str, **ev: Any) -> Finding:
    return Finding(rule, sev, msg, loc, ev)


# The largest manifest read: a folder of 100k files is about 20 MB of envelope.
MANIFEST_LIMIT = 64 << 20


def _read_envelope(manifest: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    loc = str(manifest)
    try:
        envelope = json.loads(read_limited(manifest, MANIFEST_LIMIT).decode("utf-8"))
        if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType is not {PAYLOAD_TYPE}")
        payload = base64.b64decode(envelope["payload"], validate=True)
        statement = json.loads(payload)
        if statement.get("_type") != STATEMENT_TYPE:
            raise ValueError(f"_type is not {STATEMENT_TYPE}")
        if statement.get("predicateType") != PREDICATE_TYPE:
            raise ValueError(f"predicateType is not {PREDICATE_TYPE}")
        subjects = statement["subject"]
        if not isinstance(subjects, list) or not all(
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and isinstance(s.get("digest", {}).get("sha256"), str)
            for s in subjects
        ):
            raise ValueError("subject must be a list of {name, digest: {sha256}}")
        if not isinstance(envelope.get("signatures", []), list):
            raise ValueError("signatures must be a list")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        f = _finding("TWL-MAN-INVALID", Severity.HIGH, f"manifest {manifest} is invalid: {e}", loc)
        raise ManifestError(
            f"manifest {manifest} is invalid: {e}",
            findings=[f],
            hint="recreate it with `trainwarden manifest create` from a trusted copy",
        ) from e
    return envelope, payload, statement


def _claimed(envelope: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(s.get("keyid", "")) for s in envelope.get("signatures", []))


def _check_signature(
    manifest: Path, envelope: Mapping[str, Any], payload: bytes, public_key: Any | None
) -> tuple[tuple[str, ...], bool]:
    signed_by = tuple(str(s.get("keyid", "")) for s in envelope.get("signatures", []))
    if public_key is None:
        return (), False
    pub = load_public_key(public_key)
    want = _signing.keyid(pub)
    if _signing.verify_signature(envelope, pub, error=ManifestError):
        return (want,), True
    why = "is not signed" if not signed_by else f"has no valid signature by key {want[:16]}"
    f = _finding(
        "TWL-MAN-SIGNATURE",
        Severity.CRITICAL,
        f"manifest {manifest} {why}",
        str(manifest),
        expected_keyid=want,
        signed_by=list(signed_by),
    )
    raise ManifestError(
        f"manifest {manifest} {why}",
        findings=[f],
        hint="the manifest (or the files) were changed after signing, or signed by another key; "
        "do not load this checkpoint",
    )


def _raise_mismatch(target: Path, findings: list[Finding]) -> None:
    names = ", ".join(str(f.evidence.get("file")) for f in findings[:5])
    more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
    raise ManifestError(
        f"{target} does not match its manifest: {names}{more}",
        findings=findings,
        hint="a file was changed, removed or added after the manifest was written; restore the "
        "checkpoint from a trusted copy (or recreate the manifest if the change is yours)",
    )


def verify_manifest(
    path: str | os.PathLike[str],
    *,
    public_key: Any | None = None,
) -> ManifestCheck:
    """Check every file of a checkpoint file or folder against its manifest.

    With ``public_key`` the manifest must carry a valid signature by that key. A changed, missing
    or extra file raises :class:`ManifestError` whose findings name each file.
    """
    p = Path(path)
    manifest = manifest_path_for(p)
    if not manifest.is_file():
        f = _finding("TWL-MAN-REQUIRED", Severity.HIGH, f"{p} has no manifest", str(p))
        raise ManifestError(
            f"{p} has no manifest (expected {manifest})",
            findings=[f],
            hint="create one with `trainwarden manifest create` where the checkpoint is written",
        )
    envelope, payload, statement = _read_envelope(manifest)
    signed_by, verified = _check_signature(manifest, envelope, payload, public_key)
    expected = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    actual: dict[str, Path]
    if p.is_dir():
        actual = {f.relative_to(p).as_posix(): f for f in _folder_files(p)}
    else:
        actual = {p.name: p}
    findings = _compare(p, expected, actual)
    if findings:
        _raise_mismatch(p, findings)
    return ManifestCheck(
        str(manifest),
        len(expected),
        signed_by,
        verified,
        unverified_keyids=() if verified else _claimed(envelope),
        path=str(path),
    )


def _not_regular(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (through links), else None."""
    from trainwarden._internal.files import kind_of

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "link to nothing" if os.path.islink(path) else "missing file"
    return None if stat.S_ISREG(mode) else kind_of(mode)


def _compare(base: Path, expected: Mapping[str, str], actual: Mapping[str, Path]) -> list[Finding]:
    findings: list[Finding] = []
    for name in sorted(set(expected) | set(actual)):
        loc = str(base / name) if base.is_dir() else str(base)
        if name not in actual:
            findings.append(
                _finding(
                    "TWL-MAN-MISSING",
                    Severity.CRITICAL,
                    f"{name} is listed in the manifest but missing",
                    loc,
                    file=name,
                )
            )
        elif name not in expected:
            findings.append(
                _finding(
                    "TWL-MAN-EXTRA",
                    Severity.HIGH,
                    f"{name} is not listed in the manifest",
                    loc,
                    file=name,
                )
            )
        elif (kind := _not_regular(actual[name])) is not None:
            findings.append(
                _finding(
                    "TWL-MAN-CHANGED",
                    Severity.CRITICAL,
                    f"{name} is no longer a regular file (a {kind})",
                    loc,
                    file=name,
                    expected=expected[name],
                )
            )
        else:
            digest = hash_file(actual[name])
            if digest != expected[name]:
                findings.append(
                    _finding(
                        "TWL-MAN-CHANGED",
                        Severity.CRITICAL,
                        f"{name} was changed (sha256 {digest[:16]}..., manifest says "
                        f"{expected[name][:16]}...)",
                        loc,
                        file=name,
                        sha256=digest,
                        expected=expected[name],
                    )
                )
    return findings


def find_manifest_for_file(path: Path) -> tuple[Path, str] | None:
    """The manifest covering ``path`` and the subject name it should use, if any.

    A file's own ``<file>.manifest.json`` wins; otherwise the nearest enclosing folder holding
    ``trainwarden.manifest.json``.
    """
    own = path.with_name(path.name + MANIFEST_SUFFIX)
    if own.is_file():
        return own, path.name
    resolved = path.resolve()
    for parent in resolved.parents:
        candidate = parent / FOLDER_MANIFEST_NAME
        if candidate.is_file():
            return candidate, resolved.relative_to(parent).as_posix()
    return None


def verify_file_bytes(
    path: Path,
    sha256: str | Callable[[], str],
    *,
    require: bool = False,
    public_key: Any | None = None,
) -> ManifestCheck | None:
    """Check the digest of bytes already read from ``path`` against the manifest covering it.

    Returns ``None`` when no manifest applies and none is required. Only this file is compared
    (``verify_manifest`` checks a whole folder). ``sha256`` may be a callable, called only when
    a manifest applies (hashing a large file is not free).
    """
    found = find_manifest_for_file(path)
    if found is None:
        if require or public_key is not None:
            f = _finding(
                "TWL-MAN-REQUIRED",
                Severity.HIGH,
                f"{path} has no manifest and the policy requires one",
                str(path),
            )
            raise ManifestError(
                f"{path} has no manifest and one is required",
                findings=[f],
                hint="create one with `trainwarden manifest create` (or trainwarden.save) where "
                "the checkpoint is written",
            )
        return None
    manifest, name = found
    if callable(sha256):
        sha256 = sha256()
    envelope, payload, statement = _read_envelope(manifest)
    signed_by, verified = _check_signature(manifest, envelope, payload, public_key)
    expected = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    findings: list[Finding] = []
    if name not in expected:
        findings.append(
            _finding(
                "TWL-MAN-EXTRA",
                Severity.HIGH,
                f"{name} is not listed in the manifest {manifest}",
                str(path),
                file=name,
            )
        )
    elif expected[name] != sha256:
        findings.append(
            _finding(
                "TWL-MAN-CHANGED",
                Severity.CRITICAL,
                f"{name} was changed (sha256 {sha256[:16]}..., manifest {manifest} says "
                f"{expected[name][:16]}...)",
                str(path),
                file=name,
                sha256=sha256,
                expected=expected[name],
            )
        )
    if findings:
        _raise_mismatch(path, findings)
    return ManifestCheck(
        str(manifest),
        len(expected),
        signed_by,
        verified,
        unverified_keyids=() if verified else _claimed(envelope),
        path=str(path),
    )


def subjects_of(manifest: Path) -> Iterable[tuple[str, str]]:
    """(name, sha256) pairs listed in ``manifest`` (validated)."""
    _, _, statement = _read_envelope(manifest)
    return [(s["name"], s["digest"]["sha256"]) for s in statement["subject"]]
