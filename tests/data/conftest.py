"""Fixtures for kdcache.data tests."""

from pathlib import Path

import pytest

from kdcache.data.synthetic import make_synthetic_corpus

TINY = dict(speakers=4, utterances_per_speaker=3, seconds=1.0, test_speakers=3, seed=0,
            num_trials=20)


@pytest.fixture(scope="session")
def data_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic corpus of 4 training and 3 test speakers, 3 utterances of about 1 s each."""
    return make_synthetic_corpus(tmp_path_factory.mktemp("synthetic") / "corpus", **TINY)
