"""Phase 2: train a student from the cache alone (the teacher is never loaded).

Each batch is a few whole 64-row blocks of the cache (the block sampler), whose crops are replayed
from the corpus (DataLoader workers: audio, seeded augmentation, fbank) and whose teacher rows are read
from the cache in the same worker. Losses (``kdcache.distill``): ce, embedding, kd, dkd, mlkd, imlkd.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdcache.cache import schema as sc
from kdcache.cache.fingerprint import cache_fingerprint
from kdcache.cache.reader import TeacherCache
from kdcache.cache.sampler import BlockSampler
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import Corpus, load_corpus
from kdcache.data.datasets import ReplayDataset, replay_waveform, waveform_crc, worker_init
from kdcache.data.features import FeatureConfig, compute_fbank
from kdcache.distill import losses as L
from kdcache.distill.integrated import integrated_inputs
from kdcache.distributed import autocast_for, init_distributed
from kdcache.errors import KdcacheError
from kdcache.models import attach_head, build_model, default_model_args
from kdcache.models.checkpoint import ModelConfig, save_model_dir
from kdcache.teacher.recompute import recipe_arrays
from kdcache.train.loop import RunConfig, fit
from kdcache.train.preflight import check_output_folder, student_batch_size

LOSSES = ("ce", "embedding", "kd", "dkd", "mlkd", "imlkd")


@dataclass(kw_only=True)
class StudentTrainConfig(RunConfig):
    cache: str
    data: str
    student: str
    loss: str
    out: str
    batch_size: int = 128
    kd_weight: float = 1.0
    temperature: float = 1.0
    alpha: float = 1.0
    beta: float = 2.0
    kd_warmup_epochs: float | None = None
    teacher_margin: float | None = None  # None: the margin the teacher was trained with (cache provenance)
    temperatures: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
    eta: float = 1.0
    embedding_weight: float = 1.0
    verify_inputs: int = 0
    allow_incomplete: bool = False
    augment: AugmentConfig | None = None

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise KdcacheError(f"--loss {self.loss}: choose one of {', '.join(LOSSES)}")
        for name in ("temperature", "beta", "eta", "lr"):
            if not getattr(self, name) > 0:
                raise KdcacheError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if any(t <= 0 for t in self.temperatures) or not self.temperatures:
            raise KdcacheError(f"--temperatures must be positive numbers, got {list(self.temperatures)}")
        if self.alpha < 0 or self.kd_weight < 0 or self.embedding_weight < 0:
            raise KdcacheError("--alpha, --kd-weight and --embedding-weight must not be negative")
        if self.kd_warmup_epochs is not None and not self.kd_warmup_epochs >= 0:
            raise KdcacheError(f"--kd-warmup-epochs must not be negative, got {self.kd_warmup_epochs}")

    @property
    def warmup_epochs(self) -> float:
        """DKD warm-up in epochs: ENSKD's 20 of 150, scaled to the run (a 6-epoch run ramps over 0.8)."""
        if self.kd_warmup_epochs is not None:
            return float(self.kd_warmup_epochs)
        return 20 * self.epochs / 150

    def kd_ramp(self, progress: float) -> float:
        """The DKD weight min(progress / warm-up, 1) at ``progress`` epochs done (fractional: per step).

        mdistiller ramps once per epoch (min(epoch / 20, 1) over 240 epochs); a run of a few epochs needs
        the same linear ramp per step, or its first epoch jumps straight to full weight."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(max(progress, 0.0) / self.warmup_epochs, 1.0)


# ----------------------------------------------------------------------------- cache x corpus


def check_corpus_matches(cache: TeacherCache, corpus: Corpus, limit: int = 5) -> None:
    """Refuse a corpus whose utterance ids, order or lengths differ from the cache's manifest."""
    ids, _, lengths = cache.utterances()
    problems: list[str] = []
    corpus_ids = [u.id for u in corpus.utterances]
    if len(ids) != len(corpus_ids):
        problems.append(f"{len(ids)} utterances in the cache, {len(corpus_ids)} in the corpus")
    cached = {u: int(n) for u, n in zip(ids, lengths)}
    for utt in corpus.utterances:
        if utt.id not in cached:
            problems.append(f"{utt.id} is not in the cache")
        elif cached[utt.id] != utt.num_samples:
            problems.append(f"{utt.id} has {utt.num_samples} samples, the cache recorded {cached[utt.id]}")
        if len(problems) >= limit:
            break
    present = set(corpus_ids)
    for u in ids:
        if len(problems) >= limit:
            break
        if u not in present:
            problems.append(f"{u} (in the cache) is missing from the corpus")
    if not problems and list(ids) != corpus_ids:
        problems.append("the utterance order differs from the cache's")
    if problems:
        raise KdcacheError(f"{cache.url}: the corpus does not match the cache: {'; '.join(problems[:limit])}")


def verify_replayed_inputs(cache: TeacherCache, corpus: Corpus, augmenter: Augmenter | None, count: int, seed: int = 0) -> int:
    """Recompute the input crc of ``count`` random rows; refuse on any difference. Returns rows checked."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(cache), size=min(count, len(cache)), replace=False))
    recipes = recipe_arrays(cache, corpus, rows)
    replay = ReplayDataset(corpus, recipes, cache.attributes.features, augmenter)
    for k, row in enumerate(rows):
        if waveform_crc(replay.waveform(k)) != int(recipes["input_crc"][k]):
            utt = corpus.utterances[int(recipes["utterance"][k])]
            raise KdcacheError(
                f"row {int(row)}: the replayed input differs from the teacher's (audio {utt.path} changed since "
                "the cache was built, or the augmentation sets differ)"
            )
    return len(rows)


# The cached teacher outputs (batch keys) each loss uses: CacheBatches reads and sends only these, so
# `--loss ce` costs what training without a teacher costs, and no loss pays for arrays it never reads.
TEACHER_INPUTS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "embedding": ("teacher_embedding",),
    "kd": ("teacher_logits",),
    "dkd": ("teacher_logits",),
    "mlkd": ("teacher_logits",),
    "imlkd": ("saliency", "integrated_logits", "integrated_embedding"),
}
_TEACHER_KEYS = ("teacher_logits", "teacher_embedding", "saliency", "integrated_logits", "integrated_embedding")


class CacheBatches(Dataset):
    """Item = a batch of cache rows: replayed fbank crops plus the teacher's cached outputs.

    ``teacher`` names the outputs to read (keys of the batch; ``TEACHER_INPUTS[loss]``); by default the
    logits and embeddings, plus the saliency maps and integrated outputs when ``with_saliency``.
    The cache is opened lazily in each DataLoader worker (TeacherCache pickles as its URL).
    """

    def __init__(self, cache: TeacherCache, corpus: Corpus, features: FeatureConfig, augmenter: Augmenter | None,
                 with_saliency: bool, teacher: tuple[str, ...] | None = None) -> None:
        self.cache = cache
        self.corpus = corpus
        self.features = features
        self.augmenter = augmenter
        self.with_saliency = with_saliency
        self.logits_mode = cache.layout.logits_mode
        if teacher is None:
            teacher = _TEACHER_KEYS if with_saliency else _TEACHER_KEYS[:2]
        unknown = set(teacher) - set(_TEACHER_KEYS)
        if unknown:
            raise ValueError(f"unknown teacher outputs {sorted(unknown)}; choose from {_TEACHER_KEYS}")
        self.teacher = tuple(teacher)

    def __len__(self) -> int:  # items are addressed by row arrays from the sampler
        return len(self.cache)

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        names = [sc.ROW_UTTERANCE, sc.ROW_START, sc.ROW_NUM_SAMPLES, sc.ROW_AUG_SEED, sc.ROW_LABEL, sc.ROW_BAD]
        recipe = self.cache.read(names, rows)
        good = recipe[sc.ROW_BAD] == 0
        if not good.all():  # rows whose audio was unreadable at build time (--skip-bad-audio)
            rows = rows[good]
            recipe = {name: value[good] for name, value in recipe.items()}
        feats = torch.stack([
            compute_fbank(
                replay_waveform(self.corpus, int(recipe[sc.ROW_UTTERANCE][k]), int(recipe[sc.ROW_START][k]),
                                int(recipe[sc.ROW_NUM_SAMPLES][k]), int(recipe[sc.ROW_AUG_SEED][k]), self.augmenter),
                self.features,
            )
            for k in range(len(rows))
        ])
        batch = {"feats": feats, "label": torch.from_numpy(recipe[sc.ROW_LABEL].astype(np.int64))}
        read = {
            "teacher_logits": self.cache.logits,
            "teacher_embedding": self.cache.embeddings,
            "saliency": self.cache.saliency,
            "integrated_logits": self.cache.integrated_logits,
            "integrated_embedding": self.cache.integrated_embeddings,
        }
        for key in self.teacher:
            batch[key] = torch.from_numpy(read[key](rows))  # float32
        return batch


# ----------------------------------------------------------------------------- model and losses


class StudentNet(nn.Module):
    """The student (with its AAM head as ``projection``) plus an optional embedding adapter P.

    One forward computes everything a step needs, so DDP sees each parameter used once per step.
    """

    def __init__(self, model: nn.Module, teacher_dim: int | None) -> None:
        super().__init__()
        self.model = model
        dim = int(model.embed_dim)
        self.adapter = nn.Linear(dim, teacher_dim, bias=False) if teacher_dim and teacher_dim != dim else nn.Identity()

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, integrated: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        emb = self.model(feats)
        out = {"embedding": emb, "logits": self.model.projection(emb, labels.clamp_min(0)), "projected": self.adapter(emb)}
        if integrated is not None:
            i_emb = self.model(integrated)
            out["integrated_logits"] = self.model.projection.cosine_logits(i_emb)
            out["integrated_projected"] = self.adapter(i_emb)
        return out


def student_loss(cfg: StudentTrainConfig, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 progress: float, teacher_scale: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of ``cfg.loss`` for one batch at ``progress`` epochs done, and each term for the log."""
    labels = batch["label"]
    logits = out["logits"].float()
    known = labels >= 0
    ce = F.cross_entropy(logits, labels, ignore_index=-1) if known.any() else logits.sum() * 0.0
    terms: dict[str, torch.Tensor] = {"ce": ce}
    t_logits = batch.get("teacher_logits")  # absent for losses that do not use it (TEACHER_INPUTS)
    if cfg.loss == "embedding":
        terms["emb"] = cfg.kd_weight * L.embedding_loss(out["projected"], batch["teacher_embedding"])
    elif cfg.loss == "kd":
        terms["kd"] = cfg.kd_weight * L.kd_loss(logits, t_logits, cfg.temperature)
    elif cfg.loss == "dkd":
        # the teacher's top class stands in for unknown speakers (label -1); skip the [B, S] argmax if none
        target = labels if bool(known.all()) else torch.where(known, labels, t_logits.argmax(dim=1))
        t_margin = L.apply_teacher_margin(t_logits, target, cfg.teacher_margin, teacher_scale)
        tckd, nckd = L.dkd_terms(logits, t_margin, target, cfg.temperature)
        ramp = cfg.kd_ramp(progress)
        terms["tckd"] = ramp * cfg.alpha * tckd
        terms["nckd"] = ramp * cfg.beta * nckd
    elif cfg.loss == "mlkd":
        levels = L.multi_level_loss(logits, t_logits, cfg.temperatures)
        terms |= {"instance": levels["instance"], "class": levels["class_"], "batch": levels["batch"]}
    elif cfg.loss == "imlkd":
        i_logits = out["integrated_logits"].float()
        levels = L.multi_level_loss(i_logits, batch["integrated_logits"], cfg.temperatures)
        # Distance between unit-length embeddings: speaker embeddings are compared by cosine, and raw
        # norms (teacher and student differ by orders of magnitude) made the squared distance explode.
        dist = L.embedding_distance(
            F.normalize(out["integrated_projected"].float(), dim=1), F.normalize(batch["integrated_embedding"], dim=1)
        )
        terms["instance"] = cfg.eta * (levels["instance"] + cfg.embedding_weight * dist)
        terms["class"] = cfg.eta * levels["class_"]
        terms["batch"] = cfg.eta * levels["batch"]
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}


# ----------------------------------------------------------------------------- training


def train_student(cfg: StudentTrainConfig) -> dict[str, Any]:
    """Train ``cfg.student`` from ``cfg.cache`` with ``cfg.loss``; write a model directory to ``cfg.out``."""
    cfg.check()
    check_output_folder(cfg.out)
    ctx = init_distributed(cfg.device)
    cache = TeacherCache.open(cfg.cache)
    settings = cache.settings
    if not cache.is_complete and not cfg.allow_incomplete:
        missing = cache.missing_shards()
        raise KdcacheError(
            f"{cfg.cache}: cache is incomplete ({len(missing)} shard(s) not written, e.g. {missing[:3]}); "
            "finish the build (rerun build-teacher-cache) or pass --allow-incomplete"
        )
    if cfg.loss == "imlkd" and not settings.get("saliency"):
        raise KdcacheError(f"{cfg.cache}: --loss imlkd needs saliency maps; rebuild the cache with --saliency")
    corpus = load_corpus(cfg.data)
    check_corpus_matches(cache, corpus)
    features = cache.attributes.features
    augmenter = _augmenter_for(cfg.augment, settings.get("augment"))
    if cfg.verify_inputs:
        verify_replayed_inputs(cache, corpus, augmenter, cfg.verify_inputs, seed=cfg.seed)
    speakers = cache.speakers
    teacher = settings.get("teacher") or {}
    fingerprint = cache_fingerprint(settings)

    usable = None if cache.is_complete else _done_rows(cache)
    cfg.batch_size = student_batch_size(cfg.batch_size, cache, len(cache) if usable is None else len(usable), ctx.world_size)
    sampler = BlockSampler(
        len(cache) if usable is None else len(usable), cfg.batch_size, block_rows=cache.layout.chunk_rows,
        seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, drop_last=True, shuffle=True,
    )
    if usable is not None:
        sampler = _RestrictedSampler(sampler, usable)
    if len(sampler) < 1:
        raise KdcacheError(f"--batch-size {cfg.batch_size} is larger than the cache's rows per process; lower it")
    dataset = CacheBatches(cache, corpus, features, augmenter, with_saliency=cfg.loss == "imlkd",
                           teacher=TEACHER_INPUTS[cfg.loss])

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.student, **cfg.model_args)
    head = attach_head(model, len(speakers), scale=float(teacher.get("scale", 32.0)))
    net = StudentNet(model, int(teacher.get("embed_dim") or cache.layout.embed_dim)).to(ctx.device)
    runner: nn.Module = net
    if ctx.distributed:
        runner = nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device] if ctx.device.type == "cuda" else None, find_unused_parameters=cfg.loss != "embedding" and cfg.loss != "imlkd"
        )
    integrated_mode = (settings.get("saliency") or {}).get("integrated_input", "attribution")
    if cfg.teacher_margin is None:
        # ENSKD puts the teacher's own training margin back on its target logit.
        cfg.teacher_margin = float(teacher.get("margin", 0.2))

    def make_batches(epoch: int):
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
            worker_init_fn=worker_init if cfg.num_workers > 0 else None,
            pin_memory=ctx.device.type == "cuda", prefetch_factor=4 if cfg.num_workers > 0 else None,
            persistent_workers=False,
        )

    def step(batch: dict[str, torch.Tensor], progress: float):
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
        integrated = None
        if cfg.loss == "imlkd":
            integrated = integrated_inputs(batch["feats"], batch["saliency"], integrated_mode)
        with autocast_for(ctx.device):
            out = runner(batch["feats"], batch["label"], integrated)
        return student_loss(cfg, out, batch, progress, float(teacher.get("scale", 32.0)))

    optim = cfg.optim()
    fit(
        out_dir=Path(cfg.out), modules={"student": net}, head=head, make_batches=make_batches,
        batches_per_epoch=len(sampler), rows_per_batch=cfg.batch_size, step=step, cfg=optim, ctx=ctx,
        resume=cfg.resume, desc=f"train-student {cfg.student}/{cfg.loss}", show_progress=cfg.show_progress,
    )
    result: dict[str, Any] = {"cache_fingerprint": fingerprint}
    if ctx.is_main:
        config = ModelConfig(
            arch=cfg.student,
            model_args=default_model_args(cfg.student) | dict(cfg.model_args),
            embed_dim=int(model.embed_dim),
            speakers=list(speakers),
            features=features.to_dict(),
            head_scale=float(head.scale),
            head_margin=cfg.margin,
            extra={
                "cache_fingerprint": fingerprint,
                "cache": str(cfg.cache),
                "training": {k: v for k, v in asdict(cfg).items() if k not in ("augment", "show_progress")},
            },
        )
        save_model_dir(Path(cfg.out), model, config)
        if isinstance(net.adapter, nn.Linear):
            torch.save({"weight": net.adapter.weight.detach().cpu()}, Path(cfg.out) / "adapter.pt")
        (Path(cfg.out) / "cache_fingerprint.txt").write_text(fingerprint + "\n")
    ctx.barrier()
    return result


def _augmenter_for(config: AugmentConfig | None, recorded: Any) -> Augmenter | None:
    """The augmenter of the build, checked against the sets recorded in the cache."""
    if not recorded:
        if config is not None:
            raise KdcacheError("the cache was built without augmentation; drop the --augment-* options")
        return None
    if config is None:
        raise KdcacheError(
            "the cache was built with augmentation: pass the same --augment-noise/--augment-reverb folders "
            "so the crops can be replayed"
        )
    augmenter = Augmenter(config)
    if json.dumps(augmenter.manifest(), sort_keys=True) != json.dumps(recorded, sort_keys=True):
        raise KdcacheError("the augmentation folders or probability differ from the ones the cache was built with")
    return augmenter


def _done_rows(cache: TeacherCache) -> np.ndarray:
    done = cache.done()
    slices = [cache.layout.shard_slice(int(s)) for s in np.flatnonzero(done)]
    parts = [np.arange(sl.start, sl.stop) for sl in slices]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class _RestrictedSampler:
    """Block batches over the rows of finished shards only (``--allow-incomplete``).

    Shards hold whole blocks, so blocks of the compacted row list map back to whole cache blocks."""

    def __init__(self, sampler: BlockSampler, rows: np.ndarray) -> None:
        self.sampler = sampler
        self.rows = rows

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return (self.rows[batch] for batch in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
