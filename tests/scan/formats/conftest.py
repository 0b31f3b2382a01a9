"""Fixtures for the format-handler tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """Path a malicious sample's payload would create; asserted absent after the test."""
    path = tmp_path / "CANARY_PWNED"
    yield path
    assert not path.exists(), "a malicious sample's payload ran"
