"""The base of a training method: its options, the teacher fields it reads, its loss terms.

A method is an ``nn.Module`` (so its learnable parts, such as an embedding projection, train and
checkpoint with the student) made in two steps per batch:

- :meth:`Method.outputs` runs the student on the batch (under the trainer's autocast) and returns
  named tensors, by default ``embedding [B, D_s]`` and ``logits [B, S]`` (AAM logits, margin on the
  label; unknown speakers, label -1, get no margin);
- :meth:`Method.terms` turns those and the batch's teacher fields into named 0-d loss terms, whose sum
  is the loss (the trainer logs each term per epoch). The first term is always ``ce``.

A batch is a dict: ``feats [B, T, F]`` float32 fbank, ``label [B]`` int64 (-1: speaker unknown to the
teacher), and the teacher fields the method lists in ``reads`` (``teacher_logits [B, S]``,
``teacher_embedding [B, D_t]``, ``saliency [B, n_dur, T, F]``, ``integrated_logits [B, S]``,
``integrated_embedding [B, D_t]``; float32; names from ``kdcache.cache.schema.OUTPUTS``). Where they
come from (the cache, or a teacher run on the batch) is not the method's business.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from kdcache.errors import KdcacheError


@dataclass(frozen=True)
class Option:
    """One option of a method. ``kind``: ``number`` (a float, ``None`` allowed when the default is None),
    ``numbers`` (a non-empty tuple of floats, also given as "1,2,3"), ``flag`` (a boolean).

    Numbers must be ``>= minimum`` (``> minimum`` when ``strict``). The CLI flag ``--NAME`` (dashes for
    underscores) is an alias of ``--loss-args '{"NAME": ...}'``.
    """

    name: str
    default: Any
    help: str
    kind: str = "number"
    minimum: float | None = None
    strict: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def _bound(self) -> str:
        if self.minimum is None:
            return "a finite number"
        if self.minimum == 0:
            return "a positive number" if self.strict else "a non-negative number"
        return f"a number {'>' if self.strict else '>='} {self.minimum:g}"

    def _number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise KdcacheError(f"{where} must be {self._bound()}, got {value!r}")
        v = float(value)
        if self.minimum is not None and (v < self.minimum or (self.strict and v == self.minimum)):
            raise KdcacheError(f"{where} must be {self._bound()}, got {value!r}")
        return v

    def parse(self, value: Any, where: str) -> Any:
        """The checked value; ``where`` names it in the one-line error (e.g. ``--beta``)."""
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise KdcacheError(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind == "numbers":
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (int, float)) or not items:
                raise KdcacheError(f"{where} must be a non-empty list of numbers, got {value!r}")
            try:
                return tuple(self._number(float(v) if isinstance(v, str) else v, where) for v in items)
            except ValueError:
                raise KdcacheError(f"{where} must be a non-empty list of numbers, got {value!r}") from None
        if value is None and self.default is None:
            return None
        return self._number(value, where)

    def describe(self) -> str:
        default = ",".join(f"{v:g}" for v in self.default) if self.kind == "numbers" else self.default
        return f"{self.name} (default {default}): {self.help}"


@dataclass(frozen=True)
class RunInfo:
    """What a method may know about the run when it is built.

    epochs: length of the run; student_dim / teacher_dim: embedding sizes; teacher_scale: the AAM scale
    s of the teacher's (margin-free, ``s*cos``) logits; teacher_margin: the AAM margin the teacher was
    trained with; teacher: the teacher-side provenance (the cache's settings, e.g. ``saliency``);
    fields: the teacher fields the batch source can fill.
    """

    epochs: int = 1
    student_dim: int = 0
    teacher_dim: int = 0
    teacher_scale: float = 32.0
    teacher_margin: float = 0.2
    teacher: Mapping[str, Any] = field(default_factory=dict)
    fields: frozenset[str] = frozenset()


class Method(nn.Module):
    """Subclass, set the class attributes, override :meth:`terms` (and :meth:`outputs` when the
    student must compute more than its embedding and AAM logits). One subclass per file in
    ``kdcache/distill/methods/``; the registry finds it by its ``name``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line, shown by --help and cache info
    reads: ClassVar[tuple[str, ...]] = ()  # teacher fields of the batch
    options: ClassVar[tuple[Option, ...]] = ()
    # DDP: True when some parameter of the student or the method gets no gradient in a step.
    unused_parameters: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None, run: RunInfo | None = None) -> None:
        super().__init__()
        self.run = run or RunInfo()
        self.opt = SimpleNamespace(**self.resolve(options or {}))

    # ----------------------------------------------------------------- options
    @classmethod
    def option(cls, name: str) -> Option | None:
        return next((o for o in cls.options if o.name == name), None)

    @classmethod
    def resolve(cls, given: Mapping[str, Any], where: str = "--loss-args") -> dict[str, Any]:
        """Every option's checked value: ``given`` over the defaults; unknown names are refused."""
        unknown = sorted(set(given) - {o.name for o in cls.options})
        if unknown:
            names = ", ".join(o.name for o in cls.options) or "none"
            raise KdcacheError(f"{where}: --loss {cls.name} has no option {unknown[0]!r} (its options: {names})")
        return {o.name: o.parse(given[o.name], f"{where} {o.name}") if o.name in given else o.default
                for o in cls.options}

    @classmethod
    def check_fields(cls, fields: frozenset[str], source: str, hint: Mapping[str, str]) -> None:
        """Refuse a batch source (``source``: its name, e.g. the cache path) that lacks a field this method
        reads (``hint``: field -> the build option that adds it)."""
        for name in cls.reads:
            if name not in fields:
                how = hint.get(name)
                raise KdcacheError(f"{source}: --loss {cls.name} reads {name}, which the cache does not hold"
                                   + (f"; rebuild the cache with {how}" if how else ""))

    # ----------------------------------------------------------------- per batch
    def outputs(self, student: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The student's ``embedding [B, D_s]`` and AAM ``logits [B, S]`` (the student has its head as
        ``student.projection``)."""
        emb = student(batch["feats"])
        return {"embedding": emb, "logits": student.projection(emb, batch["label"].clamp_min(0))}

    def terms(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor], progress: float) -> dict[str, Tensor]:
        """Named 0-d loss terms at ``progress`` epochs done (fractional); their sum is the loss."""
        return {"ce": self.ce(out, batch)}

    def forward(self, student: nn.Module, batch: Mapping[str, Tensor], progress: float) -> dict[str, Tensor]:
        return self.terms(self.outputs(student, batch), batch, progress)

    @staticmethod
    def ce(out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """AAM-softmax CE over the rows of known speakers (0 when there are none)."""
        labels = batch["label"]
        logits = out["logits"].float()
        if bool((labels >= 0).any()):
            return F.cross_entropy(logits, labels, ignore_index=-1)
        return logits.sum() * 0.0


def projection(student_dim: int, teacher_dim: int) -> nn.Module:
    """P: a learned bias-free linear map from the student's embedding to the teacher's dimension, or the
    identity when they agree."""
    if teacher_dim and teacher_dim != student_dim:
        return nn.Linear(student_dim, teacher_dim, bias=False)
    return nn.Identity()


def numbers_option(name: str, default: tuple[float, ...], help: str) -> Option:
    return Option(name, tuple(default), help, kind="numbers", minimum=0.0, strict=True)


LOGIT_STAND = Option(
    "logit_stand", False, "z-score each row of student and teacher logits before the KD terms "
    "(Sun et al., CVPR 2024: (z - mean) / (1e-7 + std), std with C - 1 as the reference code)", kind="flag")
