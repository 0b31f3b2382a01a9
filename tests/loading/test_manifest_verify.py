"""Manifest verification, pinned exactly: every outcome of ``verify_manifest`` and
``verify_file_bytes`` (the path the loader and the guard use) with its rule, severity, message,
location and evidence, and every way an envelope or a signature can be wrong."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainwarden._internal.signing import keyid as key_id
from trainwarden.findings import Finding, Severity
from trainwarden.loading import ManifestError
from trainwarden.loading import _manifest as manifest


def _f(f: Finding) -> tuple[Any, ...]:
    return (f.rule_id, f.severity, f.message, f.location, dict(f.evidence))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _envelope_of(path: Path) -> dict[str, Any]:
    env: dict[str, Any] = json.loads(path.read_text())
    return env


def _statement_of(env: dict[str, Any]) -> dict[str, Any]:
    st: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return st


def _write_envelope(path: Path, env: dict[str, Any], statement: dict[str, Any] | None) -> None:
    if statement is not None:
        env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(env))


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "m.bin"
    path.write_bytes(b"weights")
    manifest.create_manifest(path)
    return path


def test_verify_manifest_clean_file_unsigned(ckpt: Path) -> None:
    check = manifest.verify_manifest(ckpt)
    assert check == manifest.ManifestCheck(
        str(ckpt) + ".manifest.json", 1, (), False, (), (), path=str(ckpt)
    )


def test_verify_manifest_signed_reports_the_verified_key_only(tmp_path: Path, ckpt: Path) -> None:
    key, pub = manifest.generate_keypair(tmp_path / "k.pem")
    manifest.create_manifest(ckpt, key=key)
    keyid = key_id(manifest.load_public_key(pub))
    assert manifest.verify_manifest(ckpt, public_key=pub) == manifest.ManifestCheck(
        str(ckpt) + ".manifest.json", 1, (keyid,), True, (), (), path=str(ckpt)
    )
    # without a key to check against, a claimed key id is only "unverified"
    assert manifest.verify_manifest(ckpt) == manifest.ManifestCheck(
        str(ckpt) + ".manifest.json", 1, (), False, (), (keyid,), path=str(ckpt)
    )
    assert manifest.verify_file_bytes(ckpt, _sha(b"weights")) == manifest.ManifestCheck(
        str(ckpt) + ".manifest.json", 1, (), False, (), (keyid,), path=str(ckpt)
    )
    assert manifest.verify_file_bytes(
        ckpt, _sha(b"weights"), public_key=pub
    ) == manifest.ManifestCheck(
        str(ckpt) + ".manifest.json", 1, (keyid,), True, (), (), path=str(ckpt)
    )


def test_a_bad_signature_before_a_good_one_is_skipped(tmp_path: Path, ckpt: Path) -> None:
    key, pub = manifest.generate_keypair(tmp_path / "k.pem")
    manifest.create_manifest(ckpt, key=key)
    mpath = Path(str(ckpt) + ".manifest.json")
    env = _envelope_of(mpath)
    good = env["signatures"][0]
    env["signatures"] = [
        {"keyid": good["keyid"], "sig": "not base64!"},
        {"keyid": good["keyid"], "sig": base64.b64encode(b"x" * 64).decode()},
        {"keyid": "whatever"},
        good,
    ]
    _write_envelope(mpath, env, None)
    assert manifest.verify_manifest(ckpt, public_key=pub).signature_verified is True


@pytest.mark.parametrize("signed", [False, True])
def test_signature_refusal_is_exact(tmp_path: Path, ckpt: Path, signed: bool) -> None:
    _, pub = manifest.generate_keypair(tmp_path / "k.pem")
    other, _ = manifest.generate_keypair(tmp_path / "o.pem")
    if signed:
        manifest.create_manifest(ckpt, key=other)
    mpath = Path(str(ckpt) + ".manifest.json")
    claimed = [s["keyid"] for s in _envelope_of(mpath)["signatures"]]
    want = key_id(manifest.load_public_key(pub))
    why = f"has no valid signature by key {want[:16]}" if signed else "is not signed"
    verifiers: list[Callable[[], object]] = [
        lambda: manifest.verify_manifest(ckpt, public_key=pub),
        lambda: manifest.verify_file_bytes(ckpt, _sha(b"weights"), public_key=pub),
    ]
    for verify in verifiers:
        with pytest.raises(ManifestError) as err:
            verify()
        assert err.value.message == f"manifest {mpath} {why}"
        assert [_f(f) for f in err.value.findings] == [
            (
                "TWL-MAN-SIGNATURE",
                Severity.CRITICAL,
                f"manifest {mpath} {why}",
                str(mpath),
                {"expected_keyid": want, "signed_by": claimed},
            )
        ]
        assert err.value.hint == (
            "the manifest (or the files) were changed after signing, or signed by another key; "
            "do not load this checkpoint"
        )


def test_verify_file_bytes_without_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"x")
    called: list[int] = []

    def digest() -> str:
        called.append(1)
        return _sha(b"x")

    assert manifest.verify_file_bytes(path, digest) is None
    assert called == []  # no manifest applies: the file is not hashed
    _, pub = manifest.generate_keypair(tmp_path / "k.pem")
    for kw in ({"require": True}, {"public_key": pub}):
        with pytest.raises(ManifestError) as err:
            manifest.verify_file_bytes(path, digest, **kw)
        assert err.value.message == f"{path} has no manifest and one is required"
        assert err.value.hint == (
            "create one with `trainwarden manifest create` (or trainwarden.save) where the "
            "checkpoint is written"
        )
        assert [_f(f) for f in err.value.findings] == [
            (
                "TWL-MAN-REQUIRED",
                Severity.HIGH,
                f"{path} has no manifest and the policy requires one",
                str(path),
                {},
            )
        ]


def test_verify_file_bytes_changed_and_unlisted(tmp_path: Path, ckpt: Path) -> None:
    mpath = Path(str(ckpt) + ".manifest.json")
    good = _sha(b"weights")
    bad = _sha(b"evil")
    assert manifest.verify_file_bytes(ckpt, lambda: good) is not None
    with pytest.raises(ManifestError) as err:
        manifest.verify_file_bytes(ckpt, bad)
    assert err.value.message == f"{ckpt} does not match its manifest: m.bin"
    assert [_f(f) for f in err.value.findings] == [
        (
            "TWL-MAN-CHANGED",
            Severity.CRITICAL,
            f"m.bin was changed (sha256 {bad[:16]}..., manifest {mpath} says {good[:16]}...)",
            str(ckpt),
            {"file": "m.bin", "sha256": bad, "expected": good},
        )
    ]
    # a folder manifest that does not list the file
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a")
    manifest.create_manifest(folder)
    (folder / "b.bin").write_bytes(b"b")
    fm = folder / "trainwarden.manifest.json"
    with pytest.raises(ManifestError) as err:
        manifest.verify_file_bytes(folder / "b.bin", _sha(b"b"))
    assert [_f(f) for f in err.value.findings] == [
        (
            "TWL-MAN-EXTRA",
            Severity.HIGH,
            f"b.bin is not listed in the manifest {fm}",
            str(folder / "b.bin"),
            {"file": "b.bin"},
        )
    ]
    assert manifest.verify_file_bytes(folder / "a.bin", _sha(b"a")) == manifest.ManifestCheck(
        str(fm), 1, (), False, (), (), path=str(folder / "a.bin")
    )


def test_verify_manifest_folder_findings_are_exact_and_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for n in ("a.bin", "b.bin", "c.bin"):
        (folder / n).write_bytes(n.encode())
    manifest.create_manifest(folder)
    assert manifest.verify_manifest(folder).subjects == 3
    (folder / "a.bin").write_bytes(b"changed")
    (folder / "b.bin").unlink()
    (folder / "d.bin").write_bytes(b"d")
    with pytest.raises(ManifestError) as err:
        manifest.verify_manifest(folder)
    new, old = _sha(b"changed"), _sha(b"a.bin")
    assert [_f(f) for f in err.value.findings] == [
        (
            "TWL-MAN-CHANGED",
            Severity.CRITICAL,
            f"a.bin was changed (sha256 {new[:16]}..., manifest says {old[:16]}...)",
            str(folder / "a.bin"),
            {"file": "a.bin", "sha256": new, "expected": old},
        ),
        (
            "TWL-MAN-MISSING",
            Severity.CRITICAL,
            "b.bin is listed in the manifest but missing",
            str(folder / "b.bin"),
            {"file": "b.bin"},
        ),
        (
            "TWL-MAN-EXTRA",
            Severity.HIGH,
            "d.bin is not listed in the manifest",
            str(folder / "d.bin"),
            {"file": "d.bin"},
        ),
    ]
    assert err.value.message == f"{folder} does not match its manifest: a.bin, b.bin, d.bin"


def test_verify_manifest_single_file_changed_location_is_the_file(ckpt: Path) -> None:
    ckpt.write_bytes(b"other")
    with pytest.raises(ManifestError) as err:
        manifest.verify_manifest(ckpt)
    assert [(f.rule_id, f.location) for f in err.value.findings] == [("TWL-MAN-CHANGED", str(ckpt))]


def test_verify_manifest_without_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    with pytest.raises(ManifestError) as err:
        manifest.verify_manifest(path)
    assert err.value.message == f"{path} has no manifest (expected {path}.manifest.json)"
    assert err.value.hint == (
        "create one with `trainwarden manifest create` where the checkpoint is written"
    )
    assert [_f(f) for f in err.value.findings] == [
        ("TWL-MAN-REQUIRED", Severity.HIGH, f"{path} has no manifest", str(path), {})
    ]


_INVALID: list[tuple[str, Any, str]] = [
    ("not json", None, "Expecting property name"),
    ("list", [], "payloadType is not application/vnd.in-toto+json"),
    ("payload type", {"payloadType": "text/plain"}, "payloadType is not"),
    ("payload not base64", {"payload": "%%%"}, "Only base64 data is allowed"),
    ("statement type", {"statement": {"_type": "x"}}, "_type is not"),
    ("predicate type", {"statement": {"predicateType": "x"}}, "predicateType is not"),
    ("no subject", {"statement": {"subject": None}}, "subject must be a list"),
    ("subject not list", {"statement": {"subject": {"name": "m.bin"}}}, "subject must be"),
    ("subject name", {"statement": {"subject": [{"name": 1, "digest": {}}]}}, "subject must"),
    (
        "subject digest",
        {"statement": {"subject": [{"name": "m.bin", "digest": {"sha256": 5}}]}},
        "subject must be",
    ),
    ("signatures", {"signatures": {}}, "signatures must be a list"),
    ("missing payload", {"drop": "payload"}, "'payload'"),
]


@pytest.mark.parametrize(("case", "change", "why"), _INVALID, ids=[c[0] for c in _INVALID])
def test_every_invalid_envelope_is_refused_exactly(
    ckpt: Path, case: str, change: Any, why: str
) -> None:
    mpath = Path(str(ckpt) + ".manifest.json")
    env = _envelope_of(mpath)
    if case == "not json":
        mpath.write_text("{nope")
    elif case == "list":
        mpath.write_text("[]")
    else:
        statement = _statement_of(env)
        for k, v in change.items():
            if k == "statement":
                statement.update(v)
            elif k == "drop":
                del env[v]
            else:
                env[k] = v
        if "payload" in change:
            mpath.write_text(json.dumps(env))
        else:
            _write_envelope(mpath, env, statement if "payload" in env else None)
    checks: list[Callable[[], object]] = [
        lambda: manifest.verify_manifest(ckpt),
        lambda: manifest.verify_file_bytes(ckpt, _sha(b"weights")),
        lambda: manifest.subjects_of(mpath),
    ]
    for verify in checks:
        with pytest.raises(ManifestError) as err:
            verify()
        assert err.value.message.startswith(f"manifest {mpath} is invalid: ")
        assert f"is invalid: {why}" in err.value.message, err.value.message
        (f,) = err.value.findings
        assert (f.rule_id, f.severity, f.message, f.location, dict(f.evidence)) == (
            "TWL-MAN-INVALID",
            Severity.HIGH,
            err.value.message,
            str(mpath),
            {},
        )
        assert err.value.hint == (
            "recreate it with `trainwarden manifest create` from a trusted copy"
        )


def test_many_mismatches_are_summarised(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a")
    manifest.create_manifest(folder)
    for i in range(7):
        (folder / f"x{i}.bin").write_bytes(b"x")
    with pytest.raises(ManifestError) as err:
        manifest.verify_manifest(folder)
    assert err.value.message == (
        f"{folder} does not match its manifest: x0.bin, x1.bin, x2.bin, x3.bin, x4.bin and 2 more"
    )


def test_envelope_without_signatures_and_signature_without_keyid(
    tmp_path: Path, ckpt: Path
) -> None:
    _, pub = manifest.generate_keypair(tmp_path / "k.pem")
    mpath = Path(str(ckpt) + ".manifest.json")
    env = _envelope_of(mpath)
    del env["signatures"]
    _write_envelope(mpath, env, None)
    assert manifest.verify_manifest(ckpt).signature_verified is False
    with pytest.raises(ManifestError, match="is not signed") as err:
        manifest.verify_manifest(ckpt, public_key=pub)
    assert err.value.findings[0].evidence["signed_by"] == []
    env["signatures"] = [{"sig": base64.b64encode(b"y" * 64).decode()}]
    _write_envelope(mpath, env, None)
    with pytest.raises(ManifestError, match="has no valid signature") as err:
        manifest.verify_manifest(ckpt, public_key=pub)
    assert err.value.findings[0].evidence["signed_by"] == [""]


def test_a_signature_must_be_strict_base64(tmp_path: Path, ckpt: Path) -> None:
    """A valid signature with characters base64 would skip is not accepted (DSSE signatures are
    standard base64)."""
    key, pub = manifest.generate_keypair(tmp_path / "k.pem")
    manifest.create_manifest(ckpt, key=key)
    mpath = Path(str(ckpt) + ".manifest.json")
    env = _envelope_of(mpath)
    sig = env["signatures"][0]["sig"]
    env["signatures"][0]["sig"] = sig[:8] + "!" + sig[8:]
    _write_envelope(mpath, env, None)
    with pytest.raises(ManifestError, match="has no valid signature"):
        manifest.verify_manifest(ckpt, public_key=pub)


def _checkpoint(tmp_path: Path) -> Path:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.bin").write_bytes(b"weights")
    manifest.create_manifest(ck)
    return ck


def test_an_extra_fifo_in_a_checkpoint_folder_is_reported_not_skipped(tmp_path: Path) -> None:
    # A loader that opens it waits for a writer for ever: not a file to pass over unseen.
    ck = _checkpoint(tmp_path)
    os.mkfifo(ck / "model.safetensors.index.json")
    with pytest.raises(ManifestError) as e:
        manifest.verify_manifest(ck)
    assert [_f(f) for f in e.value.findings] == [
        (
            "TWL-MAN-EXTRA",
            Severity.HIGH,
            "model.safetensors.index.json is not listed in the manifest",
            str(ck / "model.safetensors.index.json"),
            {"file": "model.safetensors.index.json"},
        )
    ]


@pytest.mark.parametrize("kind", ["fifo", "dangling link"])
def test_a_listed_file_replaced_by_something_not_regular_is_changed(
    tmp_path: Path, kind: str
) -> None:
    ck = _checkpoint(tmp_path)
    expected = _sha(b"weights")
    (ck / "model.bin").unlink()
    if kind == "fifo":
        os.mkfifo(ck / "model.bin")
        what = "named pipe (FIFO)"
    else:
        (ck / "model.bin").symlink_to(tmp_path / "nowhere")
        what = "link to nothing"
    with pytest.raises(ManifestError) as e:
        manifest.verify_manifest(ck)
    assert [_f(f) for f in e.value.findings] == [
        (
            "TWL-MAN-CHANGED",
            Severity.CRITICAL,
            f"model.bin is no longer a regular file (a {what})",
            str(ck / "model.bin"),
            {"file": "model.bin", "expected": expected},
        )
    ]


def test_creating_a_manifest_refuses_a_fifo_in_the_folder(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.bin").write_bytes(b"weights")
    os.mkfifo(ck / "pipe.bin")
    with pytest.raises(ManifestError, match=r"pipe\.bin: not a regular file \(a named pipe"):
        manifest.create_manifest(ck)
    assert not manifest.manifest_path_for(ck).exists()
