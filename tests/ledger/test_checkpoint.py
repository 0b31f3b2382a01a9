"""Signed checkpoints in the C2SP note format: what verifies and what is refused."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from trainwarden.ledger._checkpoint import (
    CheckpointError,
    Signer,
    Verifier,
    load_or_create_signer,
    load_verifier,
)

ROOT = bytes(range(32))


def test_note_layout_and_roundtrip(signer: Signer) -> None:
    cp = signer.sign(7, ROOT)
    body, _, sig = cp.note.partition("\n\n")
    assert body.split("\n") == [signer.name, "7", base64.b64encode(ROOT).decode()]
    assert sig.startswith("\u2014 " + signer.name + " ")
    raw = base64.b64decode(sig.split(" ")[2])
    assert len(raw) == 68 and raw[:4] == signer.key_hash
    v = Verifier.from_vkey(signer.vkey())
    got = v.open(cp.note)
    assert (got.size, got.root) == (7, ROOT)


def test_refuses_other_key_other_origin_and_edits(signer: Signer, tmp_path: Path) -> None:
    other = load_or_create_signer(tmp_path / "other", signer.name)
    v = Verifier.from_vkey(signer.vkey())
    with pytest.raises(CheckpointError, match="no signature by key"):
        v.open(other.sign(7, ROOT).note)
    stranger = load_or_create_signer(tmp_path / "stranger", "other.example/log")
    with pytest.raises(CheckpointError, match="not"):
        v.open(stranger.sign(7, ROOT).note)
    note = signer.sign(7, ROOT).note
    with pytest.raises(CheckpointError, match="does not verify"):
        v.open(note.replace("\n7\n", "\n8\n", 1))
    with pytest.raises(CheckpointError):
        v.open(note.split("\n\n")[0] + "\n")
    with pytest.raises(CheckpointError):
        v.open(note.replace("\n7\n", "\n07\n", 1))


def test_vkey_and_pem_loading(signer: Signer, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert load_verifier(str(keys / "ledger.vkey")).vkey() == signer.vkey()
    assert load_verifier(signer.vkey()).vkey() == signer.vkey()
    assert load_verifier(str(keys / "ledger.pub"), origin=signer.name).vkey() == signer.vkey()
    with pytest.raises(CheckpointError, match="origin"):
        load_verifier(str(keys / "ledger.pub"))
    tampered = signer.vkey().split("+", 2)
    with pytest.raises(CheckpointError, match="hash"):
        Verifier.from_vkey(f"{tampered[0]}x+{tampered[1]}+{tampered[2]}")
    assert (keys / "ledger.key").stat().st_mode & 0o777 == 0o600
