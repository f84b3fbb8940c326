"""Finished runs as report records: what was trained, how, on what, and how well.

A run folder is a model directory (``config.json``, as ``train-teacher``/``train-student`` write it) with
a ``metrics.json`` beside it (``train-student --trials`` writes one; for a teacher, ``evaluate --out
RUN/metrics.json``), and usually ``train_log.jsonl`` and the per-trial ``scores.txt``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdcache.errors import KdcacheError
from kdcache.models import default_model_args
from kdcache.models.checkpoint import CONFIG_FILE, ModelConfig, read_config

METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"

# The options of each loss that set it apart in runs recorded before the methods registry (newer runs
# record their method's options as ``loss_options``).
LOSS_SETTINGS = {
    "ce": (),
    "embedding": ("kd_weight",),
    "kd": ("kd_weight", "temperature"),
    "dkd": ("alpha", "beta", "temperature"),
    "mlkd": ("temperatures",),
    "imlkd": ("temperatures", "eta", "embedding_weight"),
}
# The recipe shared by all losses: part of a row's identity, shown only where rows of a table differ.
RECIPE_KEYS = ("epochs", "batch_size", "lr", "final_lr", "margin", "grad_clip", "crop_seconds", "crops_per_utt")
SHORT_NAMES = {"temperature": "T", "kd_weight": "w", "temperatures": "Ts", "embedding_weight": "w_emb",
               "batch_size": "batch", "final_lr": "final lr", "grad_clip": "grad clip", "cache": "cache",
               "crop_seconds": "crop s", "crops_per_utt": "crops/utt"}


@dataclass
class RunRecord:
    """One finished run. ``eer`` is a fraction; ``settings`` are the loss options that matter,
    ``recipe`` the rest of the training options (and the cache a student learnt from)."""

    path: Path
    kind: str  # teacher | student
    arch: str
    model_args: dict[str, Any]
    loss: str  # the student's --loss; "teacher" for a teacher
    settings: dict[str, Any]
    recipe: dict[str, Any]
    seed: int
    eer: float
    min_dcf: float
    trials: str
    trials_id: str
    corpus_id: str
    config: ModelConfig
    scores: Path | None = None
    train_log: list[dict[str, Any]] = field(default_factory=list)
    cache: str | None = None

    @property
    def model_label(self) -> str:
        """The architecture and the arguments that differ from WeSpeaker's defaults, e.g.
        ``xvector (embed_dim 128, hid_dim 128, stats_dim 256)``."""
        try:
            defaults = default_model_args(self.arch)
        except KdcacheError:
            defaults = {}
        changed = {k: v for k, v in self.model_args.items() if defaults.get(k, object()) != v}
        args = ", ".join(f"{k} {v}" for k, v in sorted(changed.items()))
        return f"{self.arch} ({args})" if args else self.arch

    def row_key(self) -> str:
        """Runs with equal keys are seeds of one table row."""
        return json.dumps([self.kind, self.arch, self.model_args, self.loss, self.settings, self.recipe],
                          sort_keys=True, default=str)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as bad:
        raise KdcacheError(f"{path}: unreadable JSON ({bad})") from None


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``train_log.jsonl`` (empty when the file is absent)."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise KdcacheError(f"{path}:{number}: not a JSON line") from None
    return records


def file_identity(path: str) -> str:
    """sha256 of a file's bytes (two copies of a trial list are the same list), or the path if unreadable."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return f"path:{path}"


def _student_corpus_id(cache_url: str | None, data: str | None) -> str:
    """The training corpus of a student: the corpus hash its cache recorded, else its --data path."""
    if cache_url:
        try:
            from kdcache.cache.reader import TeacherCache

            sha = (TeacherCache.open(cache_url).settings.get("corpus") or {}).get("sha256")
            if sha:
                return str(sha)
        except (KdcacheError, OSError, KeyError, ValueError):
            pass
    return f"path:{data}"


def load_run(path: str | Path) -> RunRecord:
    """Read one run folder; a :class:`KdcacheError` names what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise KdcacheError(f"{path}: not a folder")
    if not (path / METRICS_FILE).is_file():
        raise KdcacheError(f"{path}: no {METRICS_FILE} (not evaluated: train-student --trials, or evaluate --out)")
    if not (path / CONFIG_FILE).is_file():
        raise KdcacheError(f"{path}: no {CONFIG_FILE} (not a model directory)")
    metrics = _read_json(path / METRICS_FILE)
    config = read_config(path)
    if not isinstance(metrics, dict) or "eer" not in metrics or "min_dcf" not in metrics:
        raise KdcacheError(f"{path / METRICS_FILE}: no eer/min_dcf")
    training = dict(config.extra.get("training") or {})
    is_student = "cache_fingerprint" in config.extra
    if is_student:
        loss = str(training.get("loss", metrics.get("loss", "?")))
        settings = _loss_settings(loss, training)
        recipe = {k: training[k] for k in RECIPE_KEYS if k in training}
        recipe["cache"] = str(config.extra.get("cache_fingerprint", ""))[:12]
        corpus_id = _student_corpus_id(config.extra.get("cache"), training.get("data"))
    else:
        loss, settings = "teacher", {}
        recipe = {k: training[k] for k in RECIPE_KEYS if k in training}
        corpus_id = str((config.extra.get("trained_on") or {}).get("corpus_sha256") or f"path:{training.get('data')}")
    trials = str(metrics.get("trials", ""))
    scores = path / str(metrics["scores"]) if metrics.get("scores") else None
    return RunRecord(
        path=path, kind="student" if is_student else "teacher", arch=config.arch, model_args=dict(config.model_args),
        loss=loss, settings=settings, recipe=recipe, seed=int(training.get("seed", 0)),
        eer=float(metrics["eer"]), min_dcf=float(metrics["min_dcf"]), trials=trials, trials_id=file_identity(trials),
        corpus_id=corpus_id, config=config, scores=scores if scores and scores.is_file() else None,
        train_log=read_train_log(path / TRAIN_LOG), cache=config.extra.get("cache") if is_student else None,
    )


def _loss_settings(loss: str, training: dict[str, Any]) -> dict[str, Any]:
    """The options that set a student's loss apart: the method's options as the trainer recorded them
    (``loss_options``), less those left unset (None: resolved during the run) and switched-off flags.
    Runs from before the methods registry recorded the options as flat fields of ``training``."""
    recorded = training.get("loss_options")
    if isinstance(recorded, dict):
        return {k: v for k, v in recorded.items() if v is not None and v is not False}
    return {k: training[k] for k in LOSS_SETTINGS.get(loss, ()) if k in training}


def load_runs(paths: list[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """``(runs, skipped)``: the readable runs, and one line per folder skipped, naming it and why."""
    runs, skipped = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except KdcacheError as why:
            skipped.append(str(why))
    return runs, skipped


def format_setting(name: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"{SHORT_NAMES.get(name, name)} {value}"
