"""Teacher (or any speaker model) training with AAM-softmax on fresh random crops."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import load_corpus
from kdcache.data.datasets import RandomCropDataset, loader_settings
from kdcache.data.features import FeatureConfig
from kdcache.distributed import DistContext, autocast_for, init_distributed
from kdcache.errors import KdcacheError
from kdcache.models import attach_head, build_model
from kdcache.models.average import average_into
from kdcache.models.checkpoint import save_trained_model
from kdcache.train.loop import RunConfig, fit
from kdcache.train.preflight import check_output_folder


class SpeakerClassifier(nn.Module):
    """Speaker model plus its AAM head in one forward, so DDP sees every parameter used."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, F] -> (embedding [B, D], AAM logits with margin [B, S])."""
        emb = self.model(feats)
        return emb, self.model.projection(emb, labels)


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    epoch: int,
    seed: int,
    ctx: DistContext,
    num_workers: int,
) -> DataLoader:
    """A DataLoader over this rank's share of one epoch-seeded permutation (drop_last)."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(len(dataset))
    per_rank = len(order) // ctx.world_size
    order = order[ctx.rank * per_rank:(ctx.rank + 1) * per_rank]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order.tolist(),
        drop_last=True,
        **loader_settings(num_workers, ctx.device),
    )


@dataclass(kw_only=True)
class TeacherTrainConfig(RunConfig):
    data: str
    arch: str
    out: str
    crop_seconds: float = 2.0
    crops_per_utt: int = 1
    augment: AugmentConfig | None = None
    features: FeatureConfig = field(default_factory=FeatureConfig)


def train_teacher(cfg: TeacherTrainConfig) -> Path:
    """Train ``cfg.arch`` on the corpus ``cfg.data``; write a model directory to ``cfg.out``."""
    num_avg = cfg.resolved_num_avg()  # checked before anything is written
    check_output_folder(cfg.out)
    ctx = init_distributed(cfg.device)
    corpus = load_corpus(cfg.data)
    speakers = corpus.speakers
    if len(speakers) < 2:
        raise KdcacheError(f"{cfg.data}: needs at least 2 speakers to train a classifier, found {len(speakers)}")
    label_of = {s: i for i, s in enumerate(speakers)}
    labels = [label_of[s] for s in corpus.utterance_speakers]
    crop_samples = cfg.features.crop_num_samples(cfg.crop_seconds)
    augmenter = Augmenter(cfg.augment) if cfg.augment is not None else None
    dataset = RandomCropDataset(
        corpus, labels, crop_samples, cfg.features, seed=cfg.seed, augmenter=augmenter, repeats=cfg.crops_per_utt
    )
    per_rank_batches = (len(dataset) // ctx.world_size) // cfg.batch_size
    if per_rank_batches < 1:
        raise KdcacheError(
            f"--batch-size {cfg.batch_size} is larger than the corpus share of one process "
            f"({len(dataset) // ctx.world_size} crops); lower it"
        )

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, **cfg.model_args)
    head = attach_head(model, len(speakers), scale=32.0)
    model.to(ctx.device)
    net: nn.Module = SpeakerClassifier(model)
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)

    def make_batches(epoch: int):
        dataset.epoch = epoch
        return epoch_loader(dataset, cfg.batch_size, epoch, cfg.seed, ctx, cfg.num_workers)

    def step(batch, progress: float):
        feats, target = batch
        feats = feats.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        with autocast_for(ctx.device):
            _, logits = net(feats, target)
        logits = logits.float()
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=1) == target).float().mean()
        return loss, {"acc": float(acc)}

    optim = cfg.optim()
    out = Path(cfg.out)
    fit(
        out_dir=out,
        modules={"model": model},
        head=head,
        make_batches=make_batches,
        batches_per_epoch=per_rank_batches,
        rows_per_batch=cfg.batch_size,
        step=step,
        cfg=optim,
        ctx=ctx,
        resume=cfg.resume,
        desc=f"train-teacher {cfg.arch}",
        show_progress=cfg.show_progress,
        snapshot=model,
        keep_snapshots=num_avg,
    )
    if ctx.is_main:
        averaged = average_into(model, out / "checkpoints", num_avg) if num_avg > 1 else None
        extra = {
            "trained_on": {"corpus_sha256": corpus.manifest_sha256(), "utterances": len(corpus)},
            "training": {k: v for k, v in asdict(cfg).items() if k not in ("features", "augment", "show_progress")},
        }
        if averaged:
            extra["averaged"] = {"epochs": averaged, "num": len(averaged)}
        save_trained_model(out, model, speakers=list(speakers), features=cfg.features.to_dict(), margin=cfg.margin,
                           extra=extra)
    ctx.barrier()
    return out
