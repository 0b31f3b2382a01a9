"""Fixtures for scanner tests: the generated corpus, built once per test session."""

from __future__ import annotations

import pytest

from trainwarden.drill import Corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Factory-built corpus (malicious + clean), shared by every scanner test of the session."""
    return Corpus.build(tmp_path_factory.mktemp("corpus"))
