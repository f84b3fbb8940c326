"""``kdcache demo OUT``: the whole chain on the synthetic corpus, staged and resumable.

Stages (each skipped when its output is complete, so a killed run resumes where it stopped):

1. corpus    ``OUT/corpus``            synthetic speakers, trial list
2. teacher   ``OUT/teacher``           narrow ResNet34 (README quick start), checkpoint per epoch
3. evaluate  ``OUT/teacher/metrics.json`` (+ scores.txt)
4. cache     ``OUT/cache.zarr``        the teacher run once over replayable crops
5. students  ``OUT/students/{ce,kd,dkd}``  x-vector students trained from the cache, each evaluated
6. report    ``OUT/report``            report.md/json, DET and training-curve pictures

``OUT/demo.json`` records the settings; a folder holding anything else is refused, and a folder made
with other settings (``--fast`` against the full demo) too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdcache.errors import KdcacheError

STAGES = ("corpus", "teacher", "evaluate", "cache", "students", "report")
MARKER = "demo.json"


@dataclass(frozen=True)
class StudentSpec:
    name: str  # folder under OUT/students
    loss: str
    options: dict[str, Any] = field(default_factory=dict)  # StudentTrainConfig fields (beta, temperature, ...)


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo trains with. ``full()`` fits 15 minutes on 2 idle cores; ``fast()`` 2-3."""

    speakers: int
    utterances_per_speaker: int
    seconds: float
    test_speakers: int
    teacher_args: dict[str, Any]
    teacher_epochs: int
    teacher_batch: int
    crops_per_utt: int
    student_args: dict[str, Any]
    student_epochs: int
    student_batch: int
    crop_seconds: float = 1.0
    students: tuple[StudentSpec, ...] = ()
    seed: int = 0

    @classmethod
    def full(cls) -> DemoSettings:
        return cls(
            speakers=200, utterances_per_speaker=20, seconds=3.0, test_speakers=40,
            teacher_args={"m_channels": 4, "embed_dim": 128}, teacher_epochs=6, teacher_batch=16,
            crops_per_utt=2, student_args={"hid_dim": 128, "stats_dim": 256, "embed_dim": 128},
            student_epochs=3, student_batch=64, students=DEMO_STUDENTS,
        )

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(
            speakers=40, utterances_per_speaker=12, seconds=2.0, test_speakers=12,
            teacher_args={"m_channels": 4, "embed_dim": 64}, teacher_epochs=6, teacher_batch=16,
            crops_per_utt=2, student_args={"hid_dim": 64, "stats_dim": 128, "embed_dim": 64},
            student_epochs=6, student_batch=64, students=DEMO_STUDENTS,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["students"] = [asdict(s) for s in self.students]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoSettings:
        data = dict(data)
        data["students"] = tuple(StudentSpec(**s) for s in data.get("students", ()))
        return cls(**data)


# The README's comparison: CE alone, Hinton KD and decoupled KD with beta 8 at T 2 (its best setting).
DEMO_STUDENTS = (
    StudentSpec("ce", "ce"),
    StudentSpec("kd", "kd", {"temperature": 2.0}),
    StudentSpec("dkd", "dkd", {"beta": 8.0, "temperature": 2.0}),
)


def check_out_dir(out: Path, settings: DemoSettings, preset: str) -> None:
    """Refuse an OUT that holds something other than a demo of these settings, naming what is there."""
    if not out.exists():
        return
    if not out.is_dir():
        raise KdcacheError(f"{out}: exists and is not a folder")
    marker = out / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise KdcacheError(f"{marker}: unreadable; remove the folder or choose another OUT") from None
        if recorded.get("settings") != settings.to_json():
            raise KdcacheError(
                f"{out}: holds a demo made with other settings ({recorded.get('preset', '?')}, this run: {preset}); "
                "choose another OUT"
            )
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise KdcacheError(f"{out}: holds something other than a kdcache demo ({shown}); choose an empty or new folder")


@dataclass
class DemoPaths:
    out: Path

    @property
    def corpus(self) -> Path:
        return self.out / "corpus"

    @property
    def corpus_done(self) -> Path:
        return self.out / "corpus" / ".complete"

    @property
    def teacher(self) -> Path:
        return self.out / "teacher"

    @property
    def cache(self) -> Path:
        return self.out / "cache.zarr"

    def student(self, name: str) -> Path:
        return self.out / "students" / name

    @property
    def report(self) -> Path:
        return self.out / "report"

    @property
    def trials(self) -> Path:
        return self.corpus / "test" / "trials.txt"


def stage_complete(stage: str, paths: DemoPaths, settings: DemoSettings) -> bool:
    """Whether ``stage`` has all its output (then it is skipped)."""
    if stage == "corpus":
        return paths.corpus_done.is_file()
    if stage == "teacher":
        return (paths.teacher / "model.pt").is_file() and (paths.teacher / "config.json").is_file()
    if stage == "evaluate":
        return (paths.teacher / "metrics.json").is_file()
    if stage == "cache":
        if not paths.cache.exists():
            return False
        from kdcache.cache.reader import TeacherCache

        try:
            return TeacherCache.open(paths.cache).is_complete
        except KdcacheError:
            return False
    if stage == "students":
        return all((paths.student(s.name) / "metrics.json").is_file() for s in settings.students)
    if stage == "report":
        return (paths.report / "report.json").is_file()
    raise ValueError(stage)


def _needs(stage: str, paths: DemoPaths, settings: DemoSettings) -> None:
    """Refuse to start ``stage`` without the output of the stages it reads."""
    needs = {"teacher": ["corpus"], "evaluate": ["corpus", "teacher"], "cache": ["corpus", "teacher"],
             "students": ["corpus", "cache"], "report": ["evaluate", "students"]}.get(stage, [])
    for earlier in needs:
        if not stage_complete(earlier, paths, settings):
            number = STAGES.index(earlier) + 1
            raise KdcacheError(f"stage {STAGES.index(stage) + 1} ({stage}) needs stage {number} ({earlier}), "
                               f"which is not complete in {paths.out}: run with --stage {number}")


def _run_corpus(paths: DemoPaths, settings: DemoSettings) -> None:
    from kdcache.data.synthetic import make_synthetic_corpus
    from kdcache.progress import progress_bar

    if paths.corpus.exists():  # a run killed while synthesising: start the corpus again (same seed, same bytes)
        shutil.rmtree(paths.corpus)
    total = (settings.speakers + settings.test_speakers) * settings.utterances_per_speaker
    with progress_bar(total=total, desc="synthesising", unit="utt", mininterval=1.0) as bar:
        make_synthetic_corpus(
            paths.corpus, speakers=settings.speakers, utterances_per_speaker=settings.utterances_per_speaker,
            seconds=settings.seconds, test_speakers=settings.test_speakers, seed=settings.seed, progress=bar.update,
        )
    paths.corpus_done.write_text("complete\n", encoding="utf-8")


def _run_teacher(paths: DemoPaths, settings: DemoSettings) -> None:
    from kdcache.train.teacher import TeacherTrainConfig, train_teacher

    # The README's quick-start recipe: --final-lr 1e-2, --batch-size 16, --margin 0 (why: README).
    train_teacher(TeacherTrainConfig(
        data=str(paths.corpus / "train"), arch="resnet34", out=str(paths.teacher), epochs=settings.teacher_epochs,
        batch_size=settings.teacher_batch, crop_seconds=settings.crop_seconds, final_lr=1e-2, margin=0.0,
        model_args=dict(settings.teacher_args), device="cpu", seed=settings.seed,
        resume=(paths.teacher / "checkpoints" / "last.pt").is_file(),
    ))


def _evaluate(model: Path, paths: DemoPaths, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from kdcache.evaluate.verification import EvalConfig, evaluate_model, write_metrics

    metrics = evaluate_model(EvalConfig(model=str(model), data=str(paths.corpus / "test"), trials=str(paths.trials)))
    metrics.update(extra or {})
    write_metrics(metrics, model / "metrics.json")
    return metrics


def _run_cache(paths: DemoPaths, settings: DemoSettings) -> None:
    from kdcache.teacher.build import BuildConfig, build_teacher_cache

    build_teacher_cache(BuildConfig(
        data=str(paths.corpus / "train"), teacher=str(paths.teacher), out=str(paths.cache),
        crops_per_utt=settings.crops_per_utt, crop_seconds=settings.crop_seconds, seed=settings.seed, device="cpu",
    ))


def _run_student(spec: StudentSpec, paths: DemoPaths, settings: DemoSettings, say: Callable[[str], None]) -> None:
    from kdcache.train.student import StudentTrainConfig, train_student

    out = paths.student(spec.name)
    if (out / "metrics.json").is_file():
        say(f"  student {spec.name}: done, skipped")
        return
    say(f"  student {spec.name}: --loss {spec.loss} " + " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in spec.options.items()))
    result = train_student(StudentTrainConfig(
        cache=str(paths.cache), data=str(paths.corpus / "train"), student="xvector", loss=spec.loss, out=str(out),
        model_args=dict(settings.student_args), epochs=settings.student_epochs, batch_size=settings.student_batch,
        final_lr=1e-3, margin=0.0, device="cpu", seed=settings.seed,
        resume=(out / "checkpoints" / "last.pt").is_file(), **spec.options,
    ))
    metrics = _evaluate(out, paths, {"loss": spec.loss, "cache_fingerprint": result["cache_fingerprint"]})
    say(f"  student {spec.name}: EER {100 * metrics['eer']:.2f}%  minDCF(0.01) {metrics['min_dcf']:.4f}")


def run_demo(out: str | Path, *, fast: bool = False, stage: int = 1, stop_stage: int = len(STAGES),
             say: Callable[[str], None] = print, settings: DemoSettings | None = None) -> Path:
    """Run stages ``stage``..``stop_stage`` (1-based) of the demo into ``out``; returns the report folder.
    ``say`` receives the stage lines (the stages' own progress bars go to stderr). ``settings`` replaces
    the presets (tests use a smaller one)."""
    if not 1 <= stage <= stop_stage <= len(STAGES):
        raise KdcacheError(f"--stage {stage} --stop-stage {stop_stage}: need 1 <= stage <= stop-stage <= {len(STAGES)}")
    out = Path(out)
    preset = "custom" if settings is not None else "--fast" if fast else "full"
    settings = settings or (DemoSettings.fast() if fast else DemoSettings.full())
    check_out_dir(out, settings, preset)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"preset": preset, "settings": settings.to_json()}, indent=1) + "\n",
                              encoding="utf-8")
    paths = DemoPaths(out)
    for number in range(stage, stop_stage + 1):
        name = STAGES[number - 1]
        if stage_complete(name, paths, settings):
            say(f"[stage {number}/{len(STAGES)}] {name}: complete, skipped")
            continue
        _needs(name, paths, settings)
        say(f"[stage {number}/{len(STAGES)}] {name}")
        if name == "corpus":
            _run_corpus(paths, settings)
        elif name == "teacher":
            _run_teacher(paths, settings)
        elif name == "evaluate":
            metrics = _evaluate(paths.teacher, paths)
            say(f"  teacher: EER {100 * metrics['eer']:.2f}%  minDCF(0.01) {metrics['min_dcf']:.4f}")
        elif name == "cache":
            _run_cache(paths, settings)
        elif name == "students":
            for spec in settings.students:
                _run_student(spec, paths, settings, say)
        elif name == "report":
            from kdcache.report.build import build_report

            build_report([paths.teacher] + [paths.student(s.name) for s in settings.students], paths.report)
    return paths.report
