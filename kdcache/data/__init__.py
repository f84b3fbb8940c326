"""kdcache.data: corpus index, crop plans, audio reading, Kaldi fbank, augmentation, trials and the
synthetic speaker corpus."""

from kdcache.data.audio import read_audio, read_crop
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import Corpus, Utterance, load_corpus
from kdcache.data.crops import CropPlan, RowPlan, plan_rows
from kdcache.data.features import FeatureConfig, compute_fbank, compute_fbank_batch
from kdcache.data.synthetic import make_synthetic_corpus
from kdcache.data.trials import Trial, read_trials, write_trials

__all__ = [
    "AugmentConfig", "Augmenter", "Corpus", "CropPlan", "FeatureConfig", "RowPlan", "Trial",
    "Utterance", "compute_fbank", "compute_fbank_batch", "load_corpus", "make_synthetic_corpus",
    "plan_rows", "read_audio", "read_crop", "read_trials", "write_trials",
]
