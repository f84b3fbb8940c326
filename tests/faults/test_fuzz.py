"""Hypothesis fuzz of every command's options and of the JSON documents kdcache reads (issue 15).

For every generated case: the exit status is 0, 1 or 2; stderr holds no traceback and at most one line
starting ``kdcache: error:``; and a failed run leaves no output that a rerun would take for complete
(a complete cache, a model directory). An exception that escapes the CLI is re-raised by ``run_cli``,
so a bug hidden behind a broad ``except`` would have to print a traceback-free line *and* pass these
checks. Examples are bounded and derandomized (the same cases on every run); the training and caching
loops are cut to their first batch (``one_batch_*`` below) so that a large but valid value costs a
second, not hours: everything up to the first batch (all checks, model, cache creation) runs for real.

``KDCACHE_FUZZ_EXAMPLES`` scales every budget (e.g. 10 for a long local run); ``KDCACHE_FUZZ_RANDOM=1``
draws new cases on every run instead of the fixed ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main
from cli.options import Count, Real
from tests.faults.conftest import BUILD_ARGS, STUDENT_ARGS, Result, run_cli

SCALE = float(os.environ.get("KDCACHE_FUZZ_EXAMPLES", "1"))
RANDOM = bool(os.environ.get("KDCACHE_FUZZ_RANDOM"))  # new cases on every run (exploring, not CI)
EXAMPLES: Counter = Counter()  # generated cases per test, reported at the end of the session


def budget(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=not RANDOM, database=None,
                    suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------- values

HOSTILE_TEXT = ["inf", "-inf", "nan", "NaN", "+inf", "1e400", "-1e400", "1e-400", "-0", "0", "-1", "1e308",
                "18446744073709551617", "-9223372036854775809", "0x10", "1_000", " 7 ", "", "一", "1e3", "3.5"]


def number_text() -> st.SearchStrategy[str]:
    """What a hostile user types for a number: non-finite, negative, zero, huge, tiny, not a number."""
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(2**70), 2**70).map(str),
        st.integers(-3, 300).map(str),
        st.text(alphabet="0123456789.e-+naifx", max_size=6),
    )


def _numeric_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and isinstance(p.type, (Real, Count))]


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
        else:
            out.append(((*prefix, name), command))
    return out


def check_result(result: Result, label: str) -> None:
    """The properties every generated case must have (and a tally of its exit status under ``label``)."""
    EXAMPLES[f"{label}: exit {result.code}"] += 1
    assert result.code in (0, 1, 2), (result.code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("kdcache: error:")]
    assert len(errors) <= 1, result.stderr
    if result.code != 0:
        assert errors or "Error:" in result.stderr, result.stderr


# ----------------------------------------------------------------------------- parsing, every option

OPTIONS = [(path, command, option) for path, command in [(("kdcache",), main), *_commands()]
           for option in _numeric_options(command)]


@budget(400)
@given(case=st.sampled_from(OPTIONS), text=number_text())
def test_every_numeric_option_is_finite_and_in_range_or_refused(case, text):
    """Parse only (no command runs), so every option of every command, --threads and --num-workers
    included, is tried with hundreds of values in a second."""
    path, command, option = case
    EXAMPLES["option parsing"] += 1
    try:
        ctx = command.make_context(path[-1], [option.opts[0], text], resilient_parsing=False)
    except click.exceptions.MissingParameter:
        ctx = None  # the value passed; a required option of the command is what is missing
    except (click.BadParameter, click.UsageError):
        return
    if ctx is None:
        value = option.type.convert(text, option, None)
    else:
        value = ctx.params[option.name]
    kind = option.type
    assert not isinstance(value, bool)
    assert math.isfinite(value), (option.opts[0], text, value)
    if kind.min is not None:
        assert value > kind.min if kind.min_open else value >= kind.min
    if kind.max is not None:
        assert value < kind.max if kind.max_open else value <= kind.max


# ----------------------------------------------------------------------------- running, every command


def one_batch_fit(*, make_batches, step, **_):
    """Stands in for train.loop.fit: the first batch, forward and loss, then stop."""
    for batch in make_batches(0):
        step(batch, 0.0)
        break


def one_batch_shards(cfg, ctx, model, writer, layout, corpus, recipe_arrays, features, augmenter, duration_frames,
                     pending, summary):
    """Stands in for teacher.build._run_shards: the teacher (and IG, at most 8 steps) on the first two crops,
    nothing written."""
    import dataclasses

    import torch

    from kdcache.data.datasets import ReplayDataset
    from kdcache.teacher.build import TeacherRunner

    replay = ReplayDataset(corpus, recipe_arrays, features, augmenter)
    items = [replay[i] for i in range(min(2, len(replay)))]
    feats = torch.stack([item[1] for item in items])
    labels = torch.from_numpy(recipe_arrays["label"][: len(items)])
    cfg = dataclasses.replace(cfg, ig_steps=min(cfg.ig_steps, 8))
    TeacherRunner(model, ctx.device, cfg, duration_frames)(feats, labels)


@pytest.fixture
def cut_loops(monkeypatch):
    import kdcache.teacher.build
    import kdcache.train.student
    import kdcache.train.teacher

    monkeypatch.setattr(kdcache.train.student, "fit", one_batch_fit)
    monkeypatch.setattr(kdcache.train.teacher, "fit", one_batch_fit)
    monkeypatch.setattr(kdcache.teacher.build, "_run_shards", one_batch_shards)


def _complete_cache(path: Path) -> bool:
    from kdcache.cache.reader import TeacherCache
    from kdcache.errors import KdcacheError

    try:
        return TeacherCache.open(path).is_complete
    except KdcacheError:
        return False


def check_no_false_output(result: Result, out: Path) -> None:
    """A failed run must not leave what a rerun (or a user) would take for a finished product."""
    if result.code == 0 or not out.exists():
        return
    assert not (out / "config.json").exists() or not (out / "model.pt").exists(), result.stderr
    assert not _complete_cache(out), result.stderr


class Commands:
    """The command lines the run fuzz starts from: each valid, with tiny settings."""

    def __init__(self, corpus: Path, teacher: Path, cache: Path, out: Path) -> None:
        self.corpus, self.teacher, self.cache, self.out = corpus, teacher, cache, out
        self.scores = out.parent / "scores.txt"  # a WeSpeaker score file of 3 speakers (compare)
        trials = [(f"{a}/v/1.wav", f"{b}/v/{2 if a == b else 1}.wav", a == b) for a in "abc" for b in "abc"]
        self.scores.write_text("".join(f"{e} {t} {0.9 if y else 0.1 * k} {'target' if y else 'nontarget'}\n"
                                       for k, (e, t, y) in enumerate(trials)))

    def base(self, name: str) -> list:
        c = self
        return {
            "build-teacher-cache": ["build-teacher-cache", "--data", c.corpus / "train", "--teacher", c.teacher,
                                    "--out", c.out, *BUILD_ARGS],
            "train-student": ["train-student", "--cache", c.cache, "--data", c.corpus / "train", "--out", c.out,
                              "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--epochs", "1",
                              "--batch-size", "16", "--num-workers", "0", "--device", "cpu"],
            "train-teacher": ["train-teacher", "--data", c.corpus / "train", "--arch", "xvector", "--model-args",
                              json.dumps(STUDENT_ARGS), "--out", c.out, "--epochs", "1", "--batch-size", "8",
                              "--crop-seconds", "0.5", "--num-workers", "0", "--device", "cpu"],
            "evaluate": ["evaluate", "--model", c.teacher, "--data", c.corpus / "test", "--trials",
                         c.corpus / "test" / "trials.txt"],
            "cache verify": ["cache", "verify", c.cache, "--teacher", c.teacher, "--data", c.corpus / "train"],
            # the teacher's own checkpoints averaged into a new folder (never over the shared fixture)
            "average": ["average", c.teacher, "--num", "1", "--out", c.out],
            "compare": ["compare", "--a", c.scores, "--b", c.scores, "--replicates", "20", "--out", c.out / "c.json"],
        }[name]


# Options left out of the run fuzz (the parse fuzz above covers them): they start processes or threads
# (--num-workers, --workers) or set the process-wide torch thread count (--threads).
SKIP_RUN = {"--num-workers", "--workers", "--threads"}
# saliency-eval and make-synthetic-* are left to the parse fuzz too: a valid but large --points, --ig-steps
# or --speakers costs minutes per case.
RUN_CASES = [(name, option.opts[0]) for name in ("build-teacher-cache", "train-student", "train-teacher",
                                                 "evaluate", "cache verify", "average", "compare")
             for option in _numeric_options(dict((" ".join(p), c) for p, c in _commands())[name])
             if option.opts[0] not in SKIP_RUN]


@pytest.fixture(scope="module")
def commands(tiny_corpus, tiny_teacher, fault_cache, tmp_path_factory) -> Commands:
    return Commands(tiny_corpus, tiny_teacher, fault_cache, tmp_path_factory.mktemp("fuzz") / "out")


def _with_option(args: list, option: str, text: str) -> list:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = text
    else:
        args += [option, text]
    if option.startswith("--ig-"):
        args.append("--saliency")
    return args


@pytest.mark.parametrize("name", ["average", "compare"])
def test_the_cheap_base_command_lines_run(name, commands):
    """The fuzz starts from valid command lines: these succeed as they are."""
    shutil.rmtree(commands.out, ignore_errors=True)
    result = run_cli(*commands.base(name))
    assert result.code == 0, result.stderr


@budget(50)
@given(case=st.sampled_from(RUN_CASES), text=number_text())
def test_every_command_survives_hostile_option_values(case, text, commands, cut_loops):
    name, option = case
    EXAMPLES["command runs"] += 1
    shutil.rmtree(commands.out, ignore_errors=True)
    result = run_cli(*_with_option(commands.base(name), option, text))
    check_result(result, "command runs")
    check_no_false_output(result, commands.out)


# ----------------------------------------------------------------------------- documents


def json_values() -> st.SearchStrategy:
    """Values that parse as JSON (NaN and Infinity included: Python's json reads them) but may break a schema."""
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.sampled_from([0, -1, 1, 2**31]),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                        max_leaves=6)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every key path in a JSON document (objects only), parents first."""
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw, doc: dict, skip: tuple = ()):
    """``doc`` with one field replaced by a hostile value, deleted, or an extra field added."""
    doc = json.loads(json.dumps(doc))
    paths = [p for p in _paths(doc) if not (len(p) > 1 and p[0] in skip)]  # free-form parts: the key itself only
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
    if action == "replace":
        parent[path[-1]] = draw(json_values())
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent[draw(st.text(min_size=1, max_size=6))] = draw(json_values())
    return doc, (action, ".".join(map(str, path)))


@pytest.fixture(scope="module")
def attribute_cache(fault_cache, tmp_path_factory):
    """A copy of the fault cache whose root zarr.json the fuzz rewrites; its original attributes."""
    path = tmp_path_factory.mktemp("attrs") / "cache.zarr"
    shutil.copytree(fault_cache, path)
    root = json.loads((path / "zarr.json").read_text())
    return path, root


@budget(40)
@given(data=st.data())
def test_cache_attributes_that_parse_but_break_the_schema(data, attribute_cache, commands, cut_loops):
    path, root = attribute_cache
    attrs = root["attributes"]["kdcache"]
    new, what = data.draw(mutated(attrs), label="mutation")
    doc = json.loads(json.dumps(root))
    doc["attributes"]["kdcache"] = new
    (path / "zarr.json").write_text(json.dumps(doc))
    try:
        for args in (["cache", "info", path], ["cache", "verify", path],
                     _with_option(commands.base("train-student"), "--cache", str(path))):
            EXAMPLES["cache attributes"] += 1
            shutil.rmtree(commands.out, ignore_errors=True)
            result = run_cli(*args)
            check_result(result, "cache attributes")
            check_no_false_output(result, commands.out)
    finally:
        (path / "zarr.json").write_text(json.dumps(root))


@pytest.fixture(scope="module")
def config_teacher(tiny_teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "teacher"
    shutil.copytree(tiny_teacher, path)
    return path, json.loads((path / "config.json").read_text())


@budget(25)
@given(data=st.data())
def test_teacher_configs_that_parse_but_break_the_schema(data, config_teacher, commands, cut_loops):
    path, config = config_teacher
    new, what = data.draw(mutated(config, skip=("extra",)), label="mutation")
    (path / "config.json").write_text(json.dumps(new))
    try:
        for args in (_with_option(commands.base("evaluate"), "--model", str(path)),
                     _with_option(commands.base("build-teacher-cache"), "--teacher", str(path))):
            EXAMPLES["teacher config"] += 1
            shutil.rmtree(commands.out, ignore_errors=True)
            result = run_cli(*args)
            check_result(result, "teacher config")
            check_no_false_output(result, commands.out)
    finally:
        (path / "config.json").write_text(json.dumps(config))


def test_report_the_generated_cases(capsys):
    """Runs last in this module: the number of generated cases each fuzz test ran (docs/robustness.md)."""
    with capsys.disabled():
        print("\nfuzz cases: " + ", ".join(f"{k} {v}" for k, v in EXAMPLES.items()))
