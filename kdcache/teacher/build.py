"""Phase 1: run the teacher once over the crop plan and write the cache, shard by shard.

Per shard: replayed crops (DataLoader workers read audio and compute fbank), the teacher forward
(inference mode; bf16 autocast on GPU) for margin-free logits and embeddings, optional Captum IG maps
and the teacher's outputs on the integrated inputs, then one write per array in a background thread
(so writing overlaps the next shard's compute) and ``progress/done[s]`` last. Finished shards are
skipped on a rerun; under ``torchrun`` the shards not yet done are dealt out to the ranks in turn.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import kdcache
from kdcache.cache.objectstore import CacheLocation, describe_store_error, store_error_types
from kdcache.cache.schema import LOGITS_MODES, CacheLayout
from kdcache.cache.writer import CacheWriter, build_lock, rank_share
from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import Corpus, load_corpus
from kdcache.data.crops import CropPlan, plan_rows
from kdcache.data.datasets import ReplayDataset, loader_settings
from kdcache.data.features import FeatureConfig
from kdcache.distill.integrated import INTEGRATED_INPUT_MODES, integrated_inputs
from kdcache.distributed import DistContext, autocast_for, init_distributed
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import ModelConfig, load_model_dir
from kdcache.progress import progress_bar
from kdcache.teacher.saliency import duration_frames, multi_duration_saliency
from kdcache.teacher.shards import SafeReplay, ShardBatches, ShardLoop, collate, stop_workers

# How long a rank may wait at the last barrier for the others' last shard. torch's default (30 min) is
# shorter than one shard with IG on a CPU (4096 rows at 5 steps took 26 min here; 50 steps take hours):
# the ranks that finished first would fail, after all their work, before rank 0 finalizes the cache.
RANKS_WAIT = timedelta(hours=24)


@dataclass
class BuildConfig:
    data: str
    teacher: str
    out: str
    crops_per_utt: int = 4
    crop_seconds: float = 2.0
    seed: int = 0
    logits: str = "dense"
    saliency: bool = False
    ig_steps: int = 50
    ig_durations: tuple[float, ...] = (2.0, 1.0)
    ig_internal_batch_size: int | None = None
    integrated_input: str = "weighted"
    shard_rows: int = 4096
    chunk_rows: int = 64
    batch_size: int = 64
    num_workers: int = 1
    device: str = "auto"
    overwrite: bool = False
    allow_unknown_speakers: bool = False
    skip_bad_audio: bool = False
    augment: AugmentConfig | None = None
    show_progress: bool = True


@dataclass
class BuildSummary:
    rows: int
    shards_written: int
    shards_skipped: int
    bad_rows: int
    seconds: float
    rows_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def teacher_labels(corpus: Corpus, teacher_speakers: list[str], allow_unknown: bool) -> np.ndarray:
    """[U] label of each utterance in the teacher's label space; -1 for unknown speakers if allowed."""
    index = {s: i for i, s in enumerate(teacher_speakers)}
    unknown = sorted(set(corpus.speakers) - set(index))
    if unknown and not allow_unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise KdcacheError(
            f"{len(unknown)} corpus speaker(s) are not in the teacher's speaker list ({shown}); "
            "pass --allow-unknown-speakers to cache them with label -1"
        )
    label_of = np.array([index.get(s, -1) for s in corpus.speakers], dtype=np.int64)
    return label_of[corpus.labels]


def teacher_features(tconf: ModelConfig) -> FeatureConfig:
    """The teacher's FeatureConfig without dither: the features both teacher and student see."""
    features = FeatureConfig.from_dict(tconf.features)
    if features.dither != 0.0:
        # Dither is random noise a student could not replay: the cache path always uses none.
        features = FeatureConfig.from_dict(features.to_dict() | {"dither": 0.0})
    return features


def build_attrs(cfg: BuildConfig, tconf: ModelConfig, features: FeatureConfig, plan: CropPlan,
                corpus: Corpus, augmenter: Augmenter | None, duration_frames: list[int]) -> dict[str, Any]:
    """The provenance recorded in ``attrs["kdcache"]`` (everything that determines the arrays)."""
    return {
        "tool_version": kdcache.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "teacher": {
            "arch": tconf.arch,
            "model_args": tconf.model_args,
            "weights_sha256": tconf.extra.get("weights_sha256"),
            "classes": tconf.num_classes,
            "embed_dim": tconf.embed_dim,
            "scale": tconf.head_scale,
            "margin": tconf.head_margin,
        },
        "features": features.to_dict(),
        "crop_plan": plan.to_dict(),
        "corpus": {"sha256": corpus.manifest_sha256(), "utterances": len(corpus)},
        "logits": cfg.logits,
        "saliency": (
            {
                "method": "integrated_gradients",
                "attributed_output": "margin-free target-speaker logit s*cos",
                "baseline": "zeros",
                "riemann": "right",
                "steps": cfg.ig_steps,
                "durations_seconds": list(cfg.ig_durations),
                "duration_frames": duration_frames,
                "integrated_input": cfg.integrated_input,
            }
            if cfg.saliency
            else None
        ),
        "augment": augmenter.manifest() if augmenter is not None else None,
    }


class TeacherRunner:
    """The teacher's outputs for a batch of fbank crops: logits, embeddings, IG maps, integrated outputs."""

    def __init__(self, model: torch.nn.Module, device: torch.device, cfg: BuildConfig, duration_frames: list[int]):
        self.model = model
        self.device = device
        self.cfg = cfg
        self.duration_frames = duration_frames

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, F] -> (margin-free logits [B, S], embeddings [B, D]) float32."""
        with torch.inference_mode(), autocast_for(self.device):
            emb = self.model(feats)
            logits = self.model.projection.cosine_logits(emb)
        return logits.float(), emb.float()

    def __call__(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = feats.to(self.device, non_blocking=True)
        logits, emb = self.forward(feats)
        out = {"logits": logits, "embedding": emb}  # keyed by output name (schema.OUTPUTS)
        if self.cfg.saliency:
            labels = labels.to(self.device)
            targets = torch.where(labels >= 0, labels, logits.argmax(dim=1))
            maps = multi_duration_saliency(
                self.model, feats, targets, self.duration_frames, self.cfg.ig_steps, self.cfg.ig_internal_batch_size
            )
            maps16 = maps.half()
            # The integrated input is built from the float16 maps the student will read back.
            inputs = integrated_inputs(feats, maps16.float(), self.cfg.integrated_input)
            i_logits, i_emb = self.forward(inputs)
            out |= {"saliency": maps16, "integrated_logits": i_logits, "integrated_embedding": i_emb}
        return out


def build_teacher_cache(cfg: BuildConfig) -> BuildSummary:
    """Build (or resume) the cache described by ``cfg``; returns what was done."""
    if cfg.logits not in LOGITS_MODES:
        raise KdcacheError(f"--logits {cfg.logits}: choose {', '.join(LOGITS_MODES)}")
    if cfg.integrated_input not in INTEGRATED_INPUT_MODES:
        raise KdcacheError(f"--integrated-input {cfg.integrated_input}: choose {', '.join(INTEGRATED_INPUT_MODES)}")
    ctx = init_distributed(cfg.device, timeout=RANKS_WAIT)
    location = CacheLocation(cfg.out)
    if ctx.is_main:
        location.check_writable()  # an object store that refuses writes is named before any teacher work
    # One build per cache at a time: rank 0 holds the lock for its ranks (they write disjoint shards).
    with build_lock(cfg.out) if ctx.is_main else nullcontext():
        if not location.remote:
            return _build(cfg, ctx)
        try:
            return _build(cfg, ctx)
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(cfg.out, err, "writing the cache")) from None


def _build(cfg: BuildConfig, ctx: DistContext) -> BuildSummary:
    model, tconf = load_model_dir(cfg.teacher, map_location=ctx.device)
    features = teacher_features(tconf)
    corpus = load_corpus(cfg.data)
    labels = teacher_labels(corpus, tconf.speakers, cfg.allow_unknown_speakers)
    plan = CropPlan(cfg.crop_seconds, cfg.crops_per_utt, cfg.seed)
    crop_samples = features.crop_num_samples(cfg.crop_seconds)
    frames = features.frames_for_seconds(cfg.crop_seconds)
    rows = plan_rows(corpus.num_samples, plan, crop_samples)
    segment_frames = duration_frames(features, cfg.crop_seconds, cfg.ig_durations)
    augmenter = Augmenter(cfg.augment) if cfg.augment is not None else None

    layout = CacheLayout(
        num_rows=len(rows),
        num_classes=tconf.num_classes,
        embed_dim=tconf.embed_dim,
        logits_mode=cfg.logits,
        saliency_shape=(len(segment_frames), frames, features.num_mel_bins) if cfg.saliency else None,
        integrated=cfg.saliency,
        shard_rows=cfg.shard_rows,
        chunk_rows=cfg.chunk_rows,
    )
    attrs = build_attrs(cfg, tconf, features, plan, corpus, augmenter, segment_frames)
    head = model.projection.normalized_weight().detach().cpu().numpy()
    recipe_arrays = {
        "utterance": rows.utterance,
        "start": rows.start,
        "num_samples": rows.num_samples,
        "label": labels[rows.utterance],
        "aug_seed": rows.aug_seed,
    }
    writer = _open_writer(cfg, ctx, layout, tconf.speakers, corpus, recipe_arrays, head, attrs)
    todo = writer.pending_shards()  # one read of the done flags (one object per shard on a store)
    pending = rank_share(todo, ctx.rank, ctx.world_size)
    ctx.barrier()  # every rank has read the done flags before any rank writes: the shares stay disjoint
    summary = BuildSummary(rows=len(rows), shards_written=0, shards_skipped=layout.num_shards - len(todo), bad_rows=0,
                           seconds=0.0, rows_per_second=0.0)
    started = time.perf_counter()
    if pending:
        _run_shards(cfg, ctx, model, writer, layout, corpus, recipe_arrays, features, augmenter, segment_frames,
                    pending, summary)
    ctx.barrier()
    if ctx.is_main:
        writer.finalize()
    ctx.barrier()  # no rank returns (and reads the cache) while rank 0 rewrites its metadata
    summary.seconds = time.perf_counter() - started
    written_rows = sum(layout.shard_slice(s).stop - layout.shard_slice(s).start for s in pending)
    summary.rows_per_second = written_rows / max(summary.seconds, 1e-9)
    return summary


def _open_writer(cfg, ctx: DistContext, layout, speakers: list[str], corpus: Corpus, recipe_arrays, head,
                 attrs) -> CacheWriter:
    """Rank 0 creates (or checks and reopens) the cache; the other ranks open it after a barrier."""
    def create() -> CacheWriter:
        return CacheWriter.create(
            cfg.out, layout,
            speakers=list(speakers),
            utterance_ids=corpus.ids,
            utterance_speakers=corpus.utterance_speakers,
            utterance_num_samples=corpus.num_samples,
            rows=recipe_arrays, head=head, attrs=attrs, overwrite=cfg.overwrite,
        )

    if ctx.is_main:
        writer = create()
    ctx.barrier()
    if not ctx.is_main:
        writer = CacheWriter.open_for_resume(cfg.out)
    return writer


def _run_shards(cfg: BuildConfig, ctx: DistContext, model: torch.nn.Module, writer: CacheWriter, layout: CacheLayout,
                corpus: Corpus, recipe_arrays: dict[str, np.ndarray], features: FeatureConfig,
                augmenter: Augmenter | None, duration_frames: list[int], pending: list[int],
                summary: BuildSummary) -> None:
    replay = ReplayDataset(corpus, recipe_arrays, features, augmenter)
    frames = layout.saliency_shape[1] if layout.saliency_shape else features.frames_for_seconds(cfg.crop_seconds)
    dataset = SafeReplay(replay, frames, features.num_mel_bins)
    shard_slices = [layout.shard_slice(s) for s in pending]
    loader = DataLoader(
        dataset,
        batch_sampler=ShardBatches(shard_slices, cfg.batch_size),
        collate_fn=collate,
        **loader_settings(cfg.num_workers, ctx.device),
    )
    loop = ShardLoop(writer, TeacherRunner(model, ctx.device, cfg, duration_frames),
                     torch.from_numpy(recipe_arrays["label"]), cfg.skip_bad_audio)
    total_rows = sum(sl.stop - sl.start for sl in shard_slices)
    bar = progress_bar(total=total_rows, desc=f"teacher cache (rank {ctx.rank})" if ctx.distributed else "teacher cache",
               unit="row", disable=not cfg.show_progress, mininterval=1.0, dynamic_ncols=True)
    batches = iter(loader)
    try:
        loop.run(batches, pending, bar.update)
    finally:
        bar.close()
        stop_workers(batches)
    summary.shards_written += loop.shards_written
    summary.bad_rows = len(loop.bad_rows)
    if loop.bad_rows:
        summary.extra["bad_rows"] = loop.bad_rows
