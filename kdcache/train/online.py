"""Online KD, for comparison with the cache: the teacher runs in memory on each batch's fresh random crops.

:class:`OnlineTeacherSource` offers the trainer what :class:`kdcache.train.sources.CacheSource` offers
(``prepare``, ``fields``, ``hints``, ``teacher``, ``speakers``, ``settings``, ``features``,
``fingerprint``, ``provenance``, ``len()``, ``batches``), so the methods, loss, schedule, student and
checkpoints are the cached path's own. What differs is where a batch comes from:

- each epoch draws ``crops_per_utt`` fresh random crops of ``crop_seconds`` per utterance
  (:class:`kdcache.data.datasets.RandomCropDataset`, the teacher-training data path, seeded by
  ``(seed, epoch, index)``), with the teacher's FeatureConfig without dither, as the cache build uses;
- the teacher (``load_model_dir``, weights-only) runs on the batch in the main process, after the
  DataLoader yields the fbank, through the build's own runner (:class:`kdcache.teacher.build.TeacherRunner`:
  inference mode, autocast on GPU), giving the margin-free ``s*cos`` logits and the raw embeddings the
  cache would store (here in float32, without the cache's float16 rounding);
- labels are in the teacher's label space (``teacher_labels``: corpus speakers unknown to the teacher are
  refused unless ``allow_unknown_speakers``, then they get label -1, as in the build).

Steps per epoch: ``(utterances * crops_per_utt) // world_size // batch_size``, the rows of a cache built
with ``--crops-per-utt K`` divided by the batch size (docs/online.md says how to match steps).
Integrated-gradient outputs (``saliency``, ``integrated_*``, read by ``imlkd``) are not offered: they cost
about ``ig_steps`` teacher forward and backward passes per crop and duration on every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from kdcache.cache import schema as sc
from kdcache.cache.fingerprint import cache_fingerprint
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import load_corpus
from kdcache.data.crops import CropPlan
from kdcache.data.datasets import RandomCropDataset
from kdcache.distill import methods
from kdcache.distributed import DistContext
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import load_model_dir
from kdcache.teacher.build import BuildConfig, TeacherRunner, build_attrs, teacher_features, teacher_labels
from kdcache.train.teacher import epoch_loader

# The teacher outputs a plain forward gives (by output name) and their batch fields.
ONLINE_OUTPUTS = ("logits", "embedding")
ONLINE_FIELDS = {o.name: o.field for o in sc.OUTPUTS if o.name in ONLINE_OUTPUTS}


class OnlineTeacherSource:
    """Batches of fresh random crops with the teacher's outputs on them, computed per batch."""

    def __init__(self, teacher: str, data: str, *, batch_size: int, ctx: DistContext, crop_seconds: float = 2.0,
                 crops_per_utt: int = 1, seed: int = 0, augment: AugmentConfig | None = None,
                 allow_unknown_speakers: bool = False) -> None:
        if not crop_seconds > 0:
            raise KdcacheError(f"--crop-seconds must be positive, got {crop_seconds}")
        if int(crops_per_utt) < 1:
            raise KdcacheError(f"--crops-per-utt must be at least 1, got {crops_per_utt}")
        self.teacher_dir = str(teacher)
        self.data = data
        self.batch_size = int(batch_size)
        self.ctx = ctx
        self.crop_seconds = float(crop_seconds)
        self.crops_per_utt = int(crops_per_utt)
        self.seed = int(seed)
        self.augment = augment
        self.allow_unknown_speakers = allow_unknown_speakers
        self.fields = frozenset(ONLINE_FIELDS.values())
        self.hints = sc.BATCH_FIELD_HINT  # the build option that adds a field this source does not offer

    def prepare(self, method: type[methods.Method]) -> None:
        """Refuse a method that reads integrated-gradient outputs; load the teacher and the corpus."""
        for name in method.reads:
            if name not in self.fields:
                raise KdcacheError(
                    f"--online-teacher: --loss {method.name} reads {name}, which would need integrated gradients on "
                    "every step (about ig_steps teacher passes per crop); train it from a cache built with --saliency"
                )
        self.reads = tuple(method.reads)
        self.model, self.tconf = load_model_dir(self.teacher_dir, map_location=self.ctx.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.features = teacher_features(self.tconf)
        self.corpus = load_corpus(self.data)
        labels = teacher_labels(self.corpus, self.tconf.speakers, self.allow_unknown_speakers)
        augmenter = Augmenter(self.augment) if self.augment is not None else None
        self.dataset = RandomCropDataset(
            self.corpus, labels, self.features.crop_num_samples(self.crop_seconds), self.features, seed=self.seed,
            augmenter=augmenter, repeats=self.crops_per_utt,
        )
        self.num_batches = (len(self.dataset) // self.ctx.world_size) // self.batch_size
        if self.num_batches < 1:
            raise KdcacheError(
                f"--batch-size {self.batch_size} is larger than the crops of one process per epoch "
                f"({len(self.dataset) // self.ctx.world_size}); lower it or raise --crops-per-utt"
            )
        build = BuildConfig(data=self.data, teacher=self.teacher_dir, out="", crops_per_utt=self.crops_per_utt,
                            crop_seconds=self.crop_seconds, seed=self.seed)
        plan = CropPlan(self.crop_seconds, self.crops_per_utt, self.seed)
        # The cache's provenance, marked online: crops are drawn per epoch, not replayed from a plan.
        self.settings = build_attrs(build, self.tconf, self.features, plan, self.corpus, augmenter, [])
        self.settings |= {"online": True, "logits": None, "crop_plan": plan.to_dict() | {"online": True}}
        self.runner = TeacherRunner(self.model, self.ctx.device, build, [])

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher's provenance, as a cache records it: ``scale``, ``margin``, ``embed_dim``, ``arch``,
        ``weights_sha256``, ..."""
        return dict(self.settings["teacher"])

    @property
    def speakers(self) -> list[str]:
        return list(self.tconf.speakers)

    @property
    def fingerprint(self) -> str:
        """The cache fingerprint of these settings (teacher weights, features, online crop plan, corpus,
        augmentation); never equal to a cache's, whose crop plan is not marked online."""
        return cache_fingerprint(self.settings)

    @property
    def provenance(self) -> dict[str, Any]:
        """What the student's config records about where its teacher targets came from."""
        return {"online_teacher": {
            "dir": str(Path(self.teacher_dir).resolve()), "weights_sha256": self.settings["teacher"]["weights_sha256"],
            "arch": self.tconf.arch, "crop_seconds": self.crop_seconds, "crops_per_utt": self.crops_per_utt,
            "seed": self.seed,
        }}

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.num_batches

    def teacher_fields(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch fields the method reads, from the teacher on ``feats [B, T, F]`` (float32, on the
        teacher's device): ``teacher_logits [B, S]`` (margin-free s*cos), ``teacher_embedding [B, D]``."""
        if not self.reads:
            return {}
        outputs = self.runner(feats, labels)
        # clone: the runner's inference-mode tensors could not be saved for the student's backward.
        return {ONLINE_FIELDS[name]: outputs[name].clone() for name in ONLINE_OUTPUTS
                if ONLINE_FIELDS[name] in self.reads}

    def batches(self, epoch: int, num_workers: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """This epoch's batches: fresh crops from DataLoader workers, the teacher run here on each."""
        self.dataset.epoch = epoch
        loader = epoch_loader(self.dataset, self.batch_size, epoch, self.seed, self.ctx, num_workers)
        for feats, labels in loader:
            feats = feats.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            yield {"feats": feats, "label": labels} | self.teacher_fields(feats, labels)
