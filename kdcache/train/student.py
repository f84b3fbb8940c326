"""Phase 2: train a student from the cache alone (the teacher is never loaded).

The trainer knows nothing about particular losses: the method (``kdcache.distill.methods``, chosen by
``--loss``) says which teacher fields it reads, holds its learnable parts and returns named loss terms;
the batch source (``kdcache.train.sources.CacheSource``) fills ``feats``, ``label`` and those fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache.cache.batches import CacheBatches  # noqa: F401 - its home before the split
from kdcache.data.augment import AugmentConfig
from kdcache.distill import methods
from kdcache.distill.methods import Method, RunInfo
from kdcache.distributed import autocast_for, init_distributed
from kdcache.errors import KdcacheError
from kdcache.models import attach_head, build_model
from kdcache.models.average import average_into
from kdcache.models.checkpoint import save_trained_model
from kdcache.train.loop import RunConfig, fit
from kdcache.train.online import OnlineTeacherSource
from kdcache.train.preflight import check_output_folder
from kdcache.train.replay_checks import check_corpus_matches, verify_replayed_inputs  # noqa: F401 - as before
from kdcache.train.sources import CacheSource

LOSSES = tuple(methods.names())  # the methods found at import; methods.names() finds later ones too

# The flags of the built-in methods' options before --loss-args (``--beta 8`` = ``--loss-args '{"beta": 8}'``).
OPTION_ALIASES = ("kd_weight", "temperature", "alpha", "beta", "kd_warmup_epochs", "teacher_margin", "temperatures",
                  "eta", "embedding_weight")


@dataclass(kw_only=True)
class StudentTrainConfig(RunConfig):
    """``loss_args``: the method's options; the alias fields (None: not given) are the same options under
    their own flags, kept so that configs and command lines written before ``--loss-args`` still work."""

    cache: str | None = None  # exactly one of cache and online_teacher
    data: str
    student: str
    loss: str
    out: str
    batch_size: int = 128
    loss_args: dict[str, Any] = field(default_factory=dict)
    kd_weight: float | None = None
    temperature: float | None = None
    alpha: float | None = None
    beta: float | None = None
    kd_warmup_epochs: float | None = None
    teacher_margin: float | None = None  # None: the margin the teacher was trained with (cache provenance)
    temperatures: tuple[float, ...] | None = None
    eta: float | None = None
    embedding_weight: float | None = None
    verify_inputs: int = 0
    allow_incomplete: bool = False
    augment: AugmentConfig | None = None
    online_teacher: str | None = None  # a teacher model directory, run on each batch (kdcache.train.online)
    crop_seconds: float = 2.0  # online only: the random crop length
    crops_per_utt: int = 1  # online only: random crops of each utterance per epoch
    allow_unknown_speakers: bool = False  # online only: speakers unknown to the teacher get label -1

    def method_options(self) -> dict[str, Any]:
        """The checked options of ``loss`` (KdcacheError naming the flag or --loss-args key)."""
        return methods.resolve_options(self.loss, self.loss_args, {k: getattr(self, k) for k in OPTION_ALIASES})

    def check(self) -> None:
        if (self.cache is None) == (self.online_teacher is None):
            raise KdcacheError("give exactly one of --cache CACHE and --online-teacher DIR")
        if not self.lr > 0:
            raise KdcacheError(f"--lr must be positive, got {self.lr}")
        self.method_options()


class StudentNet(nn.Module):
    """The student (with its AAM head as ``model.projection``) and the method (with its learnable parts).

    One forward computes a step's loss terms, so DDP sees each parameter used once per step. The
    student runs under the device's autocast; the terms are computed outside it (in float32).
    """

    def __init__(self, model: nn.Module, method: Method) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        with autocast_for(batch["feats"].device):
            out = self.method.outputs(self.model, batch)
        return self.method.terms(out, batch, progress)


def total_loss(terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (the sum of the terms, in their order) and each term as a float for the log."""
    return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}


def student_loss(cfg: StudentTrainConfig, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 progress: float, teacher_scale: float, teacher_margin: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of ``cfg.loss`` for one batch from the student's outputs ``out`` (``logits``, and what
    the method adds, e.g. ``projected``) at ``progress`` epochs done, and each term for the log. A method
    with learnable parts gets fresh ones: pass their outputs in ``out``."""
    run = RunInfo(epochs=cfg.epochs, teacher_scale=teacher_scale, teacher_margin=teacher_margin)
    return total_loss(methods.build(cfg.loss, cfg.method_options(), run).terms(out, batch, progress))


def train_student(cfg: StudentTrainConfig) -> dict[str, Any]:
    """Train ``cfg.student`` from ``cfg.cache`` with ``cfg.loss``; write a model directory to ``cfg.out``."""
    cfg.check()
    num_avg = cfg.resolved_num_avg()  # checked before anything is written
    check_output_folder(cfg.out)
    method_cls = methods.get(cfg.loss)
    options = cfg.method_options()
    ctx = init_distributed(cfg.device)
    if cfg.online_teacher is not None:
        source: Any = OnlineTeacherSource(
            cfg.online_teacher, cfg.data, batch_size=cfg.batch_size, ctx=ctx, crop_seconds=cfg.crop_seconds,
            crops_per_utt=cfg.crops_per_utt, seed=cfg.seed, augment=cfg.augment,
            allow_unknown_speakers=cfg.allow_unknown_speakers)
    else:
        source = CacheSource(cfg.cache, cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, rank=ctx.rank,
                             world_size=ctx.world_size, augment=cfg.augment, allow_incomplete=cfg.allow_incomplete,
                             verify_inputs=cfg.verify_inputs)
    source.prepare(method_cls)
    cfg.batch_size = source.batch_size  # rounded to the cache's chunks (with a note), recorded as trained
    teacher = source.teacher

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.student, **cfg.model_args)
    head = attach_head(model, len(source.speakers), scale=float(teacher.get("scale", 32.0)))
    run = RunInfo(
        epochs=cfg.epochs, student_dim=int(model.embed_dim), teacher_dim=int(teacher["embed_dim"]),
        teacher_scale=float(teacher.get("scale", 32.0)),
        # ENSKD puts the teacher's own training margin back on its target logit.
        teacher_margin=float(teacher.get("margin", 0.2)),
        teacher=source.settings, fields=source.fields,
    )
    method = method_cls(options, run)
    net = StudentNet(model, method).to(ctx.device)
    runner: nn.Module = net
    if ctx.distributed:
        runner = nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
            find_unused_parameters=method.unused_parameters,
        )

    def make_batches(epoch: int):
        return source.batches(epoch, cfg.num_workers, ctx.device)

    def step(batch: dict[str, torch.Tensor], progress: float):
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
        return total_loss(runner(batch, progress))

    fit(
        out_dir=Path(cfg.out), modules={"student": net}, head=head, make_batches=make_batches,
        batches_per_epoch=len(source), rows_per_batch=cfg.batch_size, step=step, cfg=cfg.optim(), ctx=ctx,
        resume=cfg.resume, desc=f"train-student {cfg.student}/{cfg.loss}", show_progress=cfg.show_progress,
        snapshot=model, keep_snapshots=num_avg,
    )
    fingerprint = source.fingerprint
    if ctx.is_main:
        training = {k: v for k, v in asdict(cfg).items() if k not in ("augment", "show_progress")}
        extra = {"cache_fingerprint": fingerprint, **source.provenance,
                 "training": training | {"loss_options": options}}
        if num_avg > 1:  # the student and its head; the method's own modules stay the last epoch's
            averaged = average_into(model, Path(cfg.out) / "checkpoints", num_avg)
            extra["averaged"] = {"epochs": averaged, "num": len(averaged)}
        save_trained_model(Path(cfg.out), model, speakers=list(source.speakers), features=source.features.to_dict(),
                           margin=cfg.margin, extra=extra)
        if any(True for _ in method.parameters()):
            state = {k: v.detach().cpu() for k, v in method.state_dict().items()}
            torch.save(state, Path(cfg.out) / "method.pt")
        (Path(cfg.out) / "cache_fingerprint.txt").write_text(fingerprint + "\n")
    ctx.barrier()
    return {"cache_fingerprint": fingerprint}
