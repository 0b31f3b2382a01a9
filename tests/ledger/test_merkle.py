"""The Merkle tree against RFC 9162's recursive definitions, written out plainly here, and the
proof verifiers against proofs that were tampered with."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwarden.ledger._log import compose_entry
from trainwarden.ledger._merkle import (
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _tree(n: int) -> tuple[list[bytes], MerkleTree]:
    data = [b"entry %d" % i for i in range(n)]
    t = MerkleTree()
    t.extend([leaf_hash(x) for x in data])
    return data, t


@given(st.integers(min_value=0, max_value=70))
def test_root_matches_rfc_definition(n: int) -> None:
    data, t = _tree(n)
    for size in range(n + 1):
        assert t.root(size) == ref_mth(data[:size])


@given(st.integers(min_value=1, max_value=40), st.data())
def test_inclusion_proofs_match_rfc_and_verify(n: int, draw: st.DataObject) -> None:
    data, t = _tree(n)
    size = draw.draw(st.integers(min_value=1, max_value=n))
    i = draw.draw(st.integers(min_value=0, max_value=size - 1))
    proof = t.inclusion_proof(i, size)
    assert proof == ref_path(i, data[:size])
    verify_inclusion(i, size, leaf_hash(data[i]), proof, t.root(size))


@given(st.integers(min_value=1, max_value=40), st.data())
def test_consistency_proofs_match_rfc_and_verify(n: int, draw: st.DataObject) -> None:
    data, t = _tree(n)
    second = draw.draw(st.integers(min_value=1, max_value=n))
    first = draw.draw(st.integers(min_value=1, max_value=second))
    proof = t.consistency_proof(first, second)
    expected = [] if first == second else ref_subproof(first, data[:second], True)
    assert proof == expected
    verify_consistency(first, second, t.root(first), t.root(second), proof)


@settings(max_examples=60)
@given(st.integers(min_value=2, max_value=33), st.data())
def test_tampered_inclusion_proofs_fail(n: int, draw: st.DataObject) -> None:
    data, t = _tree(n)
    i = draw.draw(st.integers(min_value=0, max_value=n - 1))
    proof = t.inclusion_proof(i, n)
    root = t.root(n)
    # another leaf, another index, a flipped proof byte, a truncated or extended proof
    with pytest.raises(ProofError):
        verify_inclusion(i, n, leaf_hash(b"forged"), proof, root)
    j = draw.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda x: x != i))
    with pytest.raises(ProofError):
        verify_inclusion(j, n, leaf_hash(data[i]), proof, root)
    if proof:
        k = draw.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(ProofError):
            verify_inclusion(i, n, leaf_hash(data[i]), bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(i, n, leaf_hash(data[i]), proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(i, n, leaf_hash(data[i]), [*proof, root], root)


@settings(max_examples=60)
@given(st.integers(min_value=3, max_value=33), st.data())
def test_consistency_with_a_rewritten_prefix_fails(n: int, draw: st.DataObject) -> None:
    data, t = _tree(n)
    first = draw.draw(st.integers(min_value=1, max_value=n - 1))
    victim = draw.draw(st.integers(min_value=0, max_value=first - 1))
    forged = list(data)
    forged[victim] = b"rewritten"
    _, _ = forged, None
    t2 = MerkleTree()
    t2.extend([leaf_hash(x) for x in forged])
    # The forger's tree is internally consistent but does not extend the honest old root.
    with pytest.raises(ProofError):
        verify_consistency(first, n, t.root(first), t2.root(n), t2.consistency_proof(first, n))
    # A smaller "new" tree is a rollback and never verifies.
    with pytest.raises(ProofError):
        verify_consistency(n, first, t.root(n), t.root(first), t.consistency_proof(first, n))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _json, max_size=8))
def test_composed_entries_are_rfc8785(obj: dict[str, Any]) -> None:
    fields = {k: rfc8785.dumps(v) for k, v in obj.items()}
    assert compose_entry(fields) == rfc8785.dumps(obj)


_json_wide = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [0.1, 1e-7, 1e21, 1e16, 123456789012345680.0, -0.0, 5e-324, 1.7976931348623157e308]
    )
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec="utf-8"), max_size=6), kids, max_size=4
        )
    ),
    max_leaves=16,
)


@settings(max_examples=400)
@given(_json_wide)
def test_fast_canonical_json_equals_the_rfc8785_package(value: Any) -> None:
    from trainwarden.ledger._canonical import canonical_bytes

    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=400)
@given(_json_wide)
def test_what_is_written_canonically_reads_back_to_the_same_bytes(value: Any) -> None:
    """Verification parses every stored entry and writes it again: that must give the stored
    bytes for every value a writer could store (doubles from 2**53 to 1e21 included, which RFC
    8785 spells as plain digits)."""
    from trainwarden.ledger._canonical import canonical_bytes, parse_json_strict

    written = canonical_bytes(value)
    assert canonical_bytes(parse_json_strict(written)) == written


def test_integer_literals_beyond_2_53_are_doubles_only_when_canonically_spelled() -> None:
    from trainwarden.ledger._canonical import CanonicalError, parse_json_strict

    assert parse_json_strict(b"[9007199254740991, 2692329619381729300, -1e20]") == [
        2**53 - 1,
        2692329619381729300.0,
        -1e20,
    ]
    assert type(parse_json_strict(b"100000000000000000000")) is float
    for bad in (b"9007199254740993", b"2692329619381729301", b"1" + b"0" * 21, b"9" * 400):
        with pytest.raises(CanonicalError, match=r"I-JSON range|malformed"):
            parse_json_strict(bad)


def test_canonical_json_refuses_what_rfc8785_refuses() -> None:
    from trainwarden.ledger._canonical import CanonicalError, canonical_bytes

    for bad in (float("nan"), float("inf"), 2**53, -(2**53), {1: 2}, "\ud800", {"a": object()}):
        with pytest.raises(CanonicalError):
            canonical_bytes(bad)
        with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
            rfc8785.dumps(bad)  # type: ignore[arg-type]
