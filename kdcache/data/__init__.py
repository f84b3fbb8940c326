"""kdcache.data: corpus index, crop plans, audio reading, Kaldi fbank, augmentation, trials and the
synthetic speaker corpus."""

from kdcache.data.audio import read_audio, read_crop
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import Corpus, Utterance, load_corpus
from kdcache.data.crops import CropPlan, RowPlan, plan_rows
from kdcache.data.features import FeatureConfig, compute_fbank, compute_fbank_batch
from kdcache.data.trials import Trial, read_trials, write_trials

__all__ = [
    "AugmentConfig", "Augmenter", "Corpus", "CropPlan", "FeatureConfig", "RowPlan", "Trial",
    "Utterance", "compute_fbank", "compute_fbank_batch", "load_corpus", "make_synthetic_corpus",
    "plan_rows", "read_audio", "read_crop", "read_trials", "write_trials",
]


def __getattr__(name: str):
    # The synthetic corpus generator builds its STFT windows at import: load it only when asked for.
    if name == "make_synthetic_corpus":
        from kdcache.data.synthetic import make_synthetic_corpus

        return make_synthetic_corpus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
