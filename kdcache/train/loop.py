"""The epoch loop shared by teacher and student training.

SGD (momentum 0.9, Nesterov, weight decay 1e-4), learning rate decaying exponentially from ``lr`` to
``final_lr`` with a linear warm-up, an AAM margin schedule, a checkpoint after every epoch (atomic),
resume from it, a progress bar with the loss terms and speed, and one JSON line per epoch.
WeSpeaker's 150-epoch recipe (warm-up 6 epochs, margin 0 -> 0.2 between epochs 20 and 40) is scaled
to the number of epochs of the run.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache.distributed import DistContext, all_reduce_mean
from kdcache.errors import KdcacheError
from kdcache.models.projection import ArcMarginProduct, MarginScheduler
from kdcache.progress import progress_bar

CHECKPOINT_NAME = "last.pt"
LOG_NAME = "train_log.jsonl"

# WeSpeaker's VoxCeleb recipe, in fractions of its 150 epochs.
_RECIPE_EPOCHS = 150.0
_RECIPE_WARMUP = 6.0
_RECIPE_MARGIN_START = 20.0
_RECIPE_MARGIN_FULL = 40.0


@dataclass
class OptimConfig:
    """Optimiser and schedules; ``None`` fields are scaled from WeSpeaker's recipe to ``epochs``."""

    epochs: int = 10
    lr: float = 0.1
    final_lr: float = 5e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float | None = None
    margin: float = 0.2
    margin_start_epoch: int | None = None  # 1-based, as WeSpeaker's increase_start_epoch
    margin_full_epoch: int | None = None  # 1-based, as WeSpeaker's fix_start_epoch
    grad_clip: float = 0.0  # max global L2 norm of the gradients before each step; 0: no clipping

    def resolved(self) -> "OptimConfig":
        scale = self.epochs / _RECIPE_EPOCHS
        out = OptimConfig(**asdict(self))
        if out.warmup_epochs is None:
            out.warmup_epochs = _RECIPE_WARMUP * scale
        if out.margin_start_epoch is None:
            out.margin_start_epoch = 1 + round(_RECIPE_MARGIN_START * scale)
        if out.margin_full_epoch is None:
            out.margin_full_epoch = max(out.margin_start_epoch, 1 + round(_RECIPE_MARGIN_FULL * scale))
        return out


def lr_at(progress: float, cfg: OptimConfig) -> float:
    """Learning rate at ``progress`` epochs (fractional): exponential decay times linear warm-up."""
    frac = min(max(progress / max(cfg.epochs, 1e-9), 0.0), 1.0)
    lr = cfg.lr * math.exp(frac * math.log(cfg.final_lr / cfg.lr))
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        lr *= max(progress / cfg.warmup_epochs, 1e-3)
    return lr


@dataclass(kw_only=True)
class RunConfig:
    """Settings every training run shares (teacher and student)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    final_lr: float = 5e-5
    margin: float = 0.2
    margin_start_epoch: int | None = None  # None: WeSpeaker's 20/150 of the run
    margin_full_epoch: int | None = None  # None: WeSpeaker's 40/150 of the run
    num_workers: int = 1
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True
    grad_clip: float = 0.0  # 0: no clipping
    num_avg: int | None = None  # epoch checkpoints averaged at the end; None: WeSpeaker's 10/150 of the run

    def resolved_num_avg(self) -> int:
        """``num_avg``, or WeSpeaker's 10 of 150 epochs scaled to ``epochs`` (at least 1); checked."""
        from kdcache.models.average import check_num_avg, default_num_avg

        num = default_num_avg(self.epochs) if self.num_avg is None else int(self.num_avg)
        check_num_avg(num, self.epochs)
        return num

    def optim(self) -> OptimConfig:
        return OptimConfig(epochs=self.epochs, lr=self.lr, final_lr=self.final_lr, margin=self.margin,
                           margin_start_epoch=self.margin_start_epoch, margin_full_epoch=self.margin_full_epoch,
                           grad_clip=self.grad_clip)


StepFn = Callable[[Any, float], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    iteration: int = 0


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _trim_log(path: Path, epochs: int) -> None:
    """Keep the log lines of the epochs the checkpoint holds (a killed run may have logged one more)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line).get("epoch", 0)) <= epochs:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a line cut short by the kill
    if kept != lines:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint written by :func:`fit` (no unpickling of objects)."""
    from kdcache.models.checkpoint import weights_only_reason

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as broken:  # noqa: BLE001 - any failure is a bad checkpoint file
        raise KdcacheError(
            f"{path}: unreadable training checkpoint ({type(broken).__name__}: {weights_only_reason(broken)})"
        ) from broken


def fit(
    *,
    out_dir: Path,
    modules: dict[str, nn.Module],
    head: ArcMarginProduct | None,
    make_batches: Callable[[int], Iterable[Any]],
    batches_per_epoch: int,
    rows_per_batch: int,
    step: StepFn,
    cfg: OptimConfig,
    ctx: DistContext,
    resume: bool = False,
    desc: str = "train",
    show_progress: bool = True,
    snapshot: nn.Module | None = None,
    keep_snapshots: int = 1,
) -> TrainState:
    """Run the epochs from the last checkpoint (or from scratch) to ``cfg.epochs``.

    ``modules`` are the trainable modules by name (their state is checkpointed; pass DDP-unwrapped
    modules here); ``step(batch, progress)`` returns the loss to minimise and a dict of floats to log.
    ``head`` (the AAM head) gets WeSpeaker's per-iteration margin schedule. ``snapshot`` (the speaker
    model) is saved after every epoch as ``checkpoints/model_<epoch>.pt``, a plain state_dict as
    WeSpeaker writes them, keeping the last ``keep_snapshots`` (for checkpoint averaging).
    """
    cfg = cfg.resolved()
    ckpt_dir = Path(out_dir) / "checkpoints"
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    state = TrainState()
    if ckpt_path.exists():
        if not resume:
            raise KdcacheError(
                f"{ckpt_path}: a training run already exists here (use --resume to continue it, "
                "or choose another --out)"
            )
        saved = load_checkpoint(ckpt_path)
        for name, module in modules.items():
            module.load_state_dict(saved["modules"][name])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(epoch=int(saved["epoch"]), iteration=int(saved["iteration"]))
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _trim_log(Path(out_dir) / LOG_NAME, state.epoch)
    margins = None
    if head is not None:
        margins = MarginScheduler(
            head, max(batches_per_epoch, 1), final_margin=cfg.margin,
            increase_start_epoch=cfg.margin_start_epoch, fix_start_epoch=cfg.margin_full_epoch,
        )

    for epoch in range(state.epoch, cfg.epochs):
        for module in modules.values():
            module.train()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        started = time.perf_counter()
        bar = progress_bar(
            total=batches_per_epoch,
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (show_progress and ctx.is_main),
            unit="batch",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:  # close the bar on errors too, so the error message starts on its own line
            for index, batch in enumerate(make_batches(epoch)):
                progress = epoch + index / max(batches_per_epoch, 1)
                lr = lr_at(progress, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if margins is not None:
                    margins.step(state.iteration)
                loss, logs = step(batch, progress)
                if not torch.isfinite(loss):
                    raise KdcacheError(
                        f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, batch {index + 1} "
                        "(lower --lr, or check the data)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    logs = {**logs, "grad_norm": float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))}
                optimizer.step()
                state.iteration += 1
                count += 1
                logs = {"loss": float(loss.detach()), **logs}
                for key, value in logs.items():
                    sums[key] += value
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    {k: f"{v / count:.3f}" for k, v in sums.items()}
                    | {"lr": f"{lr:.2g}", "rows/s": f"{count * rows_per_batch * ctx.world_size / max(elapsed, 1e-9):.0f}"},
                    refresh=False,
                )
                bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "iterations": state.iteration, "lr": lr_at(epoch + 1, cfg)}
        record["margin"] = head.margin if head is not None else None
        for key, value in sums.items():
            record[key] = all_reduce_mean(value / max(count, 1), ctx)
        record["seconds"] = round(seconds, 3)
        record["rows_per_s"] = round(count * rows_per_batch * ctx.world_size / max(seconds, 1e-9), 1)
        state.epoch = epoch + 1
        if ctx.is_main:
            # The log line first: a run killed between the two redoes the epoch, and the log is trimmed
            # back to the checkpoint on resume (so it lists every epoch exactly once).
            with open(Path(out_dir) / LOG_NAME, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            if snapshot is not None:
                from kdcache.models.average import save_epoch_weights

                save_epoch_weights(snapshot, ckpt_dir, state.epoch, keep_snapshots)
            _atomic_torch_save(
                {
                    "modules": {name: m.state_dict() for name, m in modules.items()},
                    "optimizer": optimizer.state_dict(),
                    "epoch": state.epoch,
                    "iteration": state.iteration,
                },
                ckpt_path,
            )
        ctx.barrier()
    if head is not None:
        head.update(cfg.margin)
    return state
