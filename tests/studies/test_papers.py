"""studies/papers: run.sh --dry-run lists the whole study as well-formed commands; one stage really runs,
resumes and refuses changed settings; study.py's gate and collection give hand-computed numbers."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import click
import pytest

from cli.main import main as kdcache_main
from tests.cache.helpers import rigged_top1_cache

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "studies" / "papers" / "run.sh"
LAUNCHER = [sys.executable, "-m", "cli.main"]


def _load_study():
    spec = importlib.util.spec_from_file_location("papers_study", REPO / "studies" / "papers" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, tmp_path, extra_env=None, timeout=200):
    env = dict(os.environ, KDCACHE=shlex.join(LAUNCHER), PYTHON=sys.executable, PYTHONPATH=str(REPO))
    env.update(extra_env or {})
    return subprocess.run(["bash", str(RUN), "--root", str(tmp_path / "root"), "--results", str(tmp_path / "res"),
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def _blocks(text):
    """[(stage, name, status, [command words...])] from the dry-run listing."""
    blocks = []
    for line in text.splitlines():
        head = re.match(r"^# \[(?P<stage>[\w-]+)\] (?P<name>\S+?)(?P<rest>: .*| \(always run\))?$", line)
        if head:
            status = "pending" if (head["rest"] or "").startswith(": pending") else "run"
            blocks.append((head["stage"], head["name"], status, []))
        elif line.startswith("#pending "):
            blocks[-1][3].append(shlex.split(line[len("#pending "):]))
        elif line and not line.startswith("#"):
            blocks[-1][3].append(shlex.split(line))
    return blocks


def _parse_kdcache(words):
    """Parse a kdcache command line with its click command (types, choices, option names); runs nothing."""
    cmd = kdcache_main.get_command(None, words[0])
    rest = words[1:]
    if isinstance(cmd, click.Group):
        cmd, rest = cmd.get_command(None, rest[0]), rest[1:]
    if cmd is None:
        raise click.UsageError(f"no such command {words[0]}")
    cmd.make_context(words[0], list(rest))


def _has_report() -> bool:
    from cli.main import main

    return "report" in main.commands


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dry")
    result = _run(["--dry-run"], tmp)
    assert result.returncode == 0, result.stderr
    assert not (tmp / "root").exists(), "a dry run must not create the study folder"
    return _blocks(result.stdout)


def test_dry_run_lists_the_whole_study(dry_run):
    runs = Counter(stage for stage, _, _, _ in dry_run)
    assert runs == {
        "corpora": 4 + 1,            # default corpus, 3 speaker-count corpora, the test-set check
        "teacher": 1 + 1,            # the study's, and the ResNet34 half's own (RN_TEACHER_ARGS by default)
        "cache": 1 + 1,              # one per teacher
        "ce": 3 + 2 + 2,             # x-vector x 3 seeds, ResNet34 x 2 seeds, a gate per teacher
        "saliency-cache": 1 + 1,
        "grid": 3 * 9 + 2 * 6,       # every other x-vector loss x 3 seeds, ResNet34 x 2 seeds
        "speakers": 1 + 9 + 3 + 18,  # teacher, own-label-space ce, caches, ce and dkd from the caches
        "ksweep": 4 + 10 + 2,        # caches K 1, 2, 8, 16; 5 K x 2 seeds; online x 2 seeds
        "imlkd-checks": 2 + 3 + 1,   # caches: other input mode, IG steps 10; students: 3 seeds, 1
        "saliency-eval": 2 + 2,      # x-vector and ResNet34 curves; ig-steps of each teacher
        # comparisons (x-vector: 10 claims, 7 losses vs ce, 1 input mode; ResNet34: 7 claims, 6 losses vs ce),
        # kdcache report (3 tables, or one pending run while the command is missing), collect
        "report": 18 + 13 + 2 + 4 + 3 + 5 + 1 + (3 if _has_report() else 1) + 1,
    }
    names = [name for _, name, _, _ in dry_run]
    assert len(names) == len(set(names))
    students = {name for stage, name, _, _ in dry_run if stage in ("ce", "grid")}
    for loss in ("ce", "embedding", "kd-T2", "kd-T4", "dkd-T1-b2", "dkd-T2-b8", "mlkd", "imlkd", "kd-T2-ls",
                 "dkd-T2-b8-ls"):
        assert {f"xvector-{loss}-s{s}" for s in range(3)} <= students
    for loss in ("ce", "embedding", "kd-T2", "dkd-T2-b8", "mlkd", "imlkd"):
        assert {f"resnet34m2-{loss}-s{s}" for s in range(2)} <= students


def test_dry_run_commands_are_well_formed(dry_run):
    study_parser = _load_study().build_parser()
    pending_options = {"--loss-args", "--online-teacher"}
    checked = Counter()
    for stage, name, status, commands in dry_run:
        assert commands, f"{name}: no command"
        for words in commands:
            if words[:3] == LAUNCHER:
                words = words[3:]
                if status == "pending":
                    if words[0] == "report":
                        checked["report"] += 1
                        continue
                    with pytest.raises(click.UsageError, match="No such option"):
                        _parse_kdcache(words)
                    cut = [i for i, w in enumerate(words) if w in pending_options]
                    assert len(cut) == 1, words
                    if words[cut[0]] == "--online-teacher":  # online mode: no cache (this kdcache requires one)
                        words += ["--cache", "unused"]
                    words = words[:cut[0]] + words[cut[0] + 2:]
                    checked["pending"] += 1
                _parse_kdcache(words)
                checked[words[0]] += 1
            else:
                assert words[0] == sys.executable and words[1].endswith("studies/papers/study.py"), words
                study_parser.parse_args(words[2:])
                checked["study.py"] += 1
    from cli.main import main

    present = {opt for param in main.commands["train-student"].params for opt in param.opts}
    # logit-standardized kd and dkd x 3 seeds wait for --loss-args, online KD x 2 seeds for --online-teacher
    assert checked["pending"] == 3 * 2 * ("--loss-args" not in present) + 2 * ("--online-teacher" not in present)
    assert checked["train-student"] == 5 + 39 + 18 + 10 + 2 + 4  # ce, grid, speakers, ksweep, online, imlkd-checks
    assert checked["train-teacher"] == checked["evaluate"] == 2 + 1 + 9  # the two teachers, the 400-speaker one
    assert checked["build-teacher-cache"] == checked["cache"] == 2 + 2 + 3 + 4 + 2
    assert checked["make-synthetic-corpus"] == 4 and checked["saliency-eval"] == 2 and checked["compare"] == 46
    assert checked["ig-steps"] == 2
    assert checked["report"] == (3 if _has_report() else 1)
    assert checked["study.py"] == 4 + 1 + 2 + 1  # corpus-stats, same-test-set, a gate per teacher, collect


def test_student_runs_save_seed_out_and_eval(dry_run):
    for stage, name, status, commands in dry_run:
        words = commands[0]
        if "train-student" not in words:
            continue
        out = words[words.index("--out") + 1]
        assert out.endswith(f"/students/{name}")
        assert words[words.index("--seed") + 1] == name.rsplit("-s", 1)[1]
        assert "--trials" in words and "--eval-data" in words and "--resume" in words
        cache = words[words.index("--cache") + 1] if "--cache" in words else None
        assert ("--loss" in words and words[words.index("--loss") + 1] == "imlkd") == ("-ig" in (cache or ""))


def test_saliency_analysis_uses_fifty_step_maps_not_the_caches_five(dry_run):
    """saliency-eval ranks frames by 50-step IG maps, as the study README says; it once reused the caches'
    5 steps, whose maps miss most of f(x) - f(0) (ig-steps.md). ig-steps sweeps up to 50."""
    commands = {name: c[0] for _, name, _, c in dry_run}
    for family in ("xvector", "resnet34m2"):
        assert _option(commands[f"saliency-eval-{family}"], "--ig-steps") == "50"
    sweep = commands["ig-steps-xvector"]
    assert _option(sweep, "--steps") == "5,10,25,50" and _option(sweep, "--integrated-input") == "weighted"
    assert _option(sweep, "--ig-durations") == "1.0" and _option(sweep, "--crop-seconds") == "1.0"


def test_imlkd_reads_weighted_integrated_inputs_and_the_check_reads_attribution(dry_run):
    """The grid's imlkd reads a cache of `weighted` integrated inputs (the teacher is mostly wrong on
    `attribution` ones, README); the attribution runs are a check, each mode in its own cache."""
    modes = {}
    for _, name, _, commands in dry_run:
        words = commands[0]
        if "build-teacher-cache" in words and "--saliency" in words:
            mode = words[words.index("--integrated-input") + 1]
            assert words[words.index("--out") + 1].endswith(f"-{mode}.zarr"), words
        if "train-student" in words and words[words.index("--loss") + 1] == "imlkd":
            modes[name] = words[words.index("--cache") + 1].rsplit("-", 1)[1]
    assert modes["xvector-imlkd-s0"] == modes["resnet34m2-imlkd-s1"] == modes["xvector-imlkd-ig10-s0"] == "weighted.zarr"
    assert [modes[f"xvector-imlkd-attribution-s{s}"] for s in range(3)] == ["attribution.zarr"] * 3


def test_second_family_width_is_one_setting(tmp_path):
    """RN_M=1 names the family resnet34m1 everywhere (students, comparisons, saliency) with m_channels 1."""
    result = _run(["--dry-run", "--stage", "ce", "--stop-stage", "grid"], tmp_path, {"RN_M": "1"})
    assert result.returncode == 0, result.stderr
    blocks = _blocks(result.stdout)
    names = [name for _, name, _, _ in blocks]
    assert "resnet34m1-ce-s1" in names and "resnet34m1-imlkd-s0" in names and not any("m2" in n for n in names)
    words = next(c[0] for _, name, _, c in blocks if name == "resnet34m1-dkd-T2-b8-s0")
    assert words[words.index("--model-args") + 1] == '{"m_channels": 1, "embed_dim": 128}'
    gate = next(c[0] for _, name, _, c in blocks if name == "teacher-gate-rn")
    assert any(w.endswith("/students/resnet34m1-ce-s0") for w in gate)


def _option(words, option):
    return words[words.index(option) + 1]


def test_second_family_can_have_a_teacher_of_its_own(tmp_path):
    """RN_TEACHER_ARGS trains teacher-rn; the ResNet students read its caches (rn-*), face their own gate and
    their saliency is compared with it; the x-vector half is unchanged."""
    result = _run(["--dry-run", "--stop-stage", "saliency-eval"], tmp_path,
                  {"RN_TEACHER_ARGS": '{"m_channels": 16, "embed_dim": 128}', "RN_TEACHER_EPOCHS": "12"})
    assert result.returncode == 0, result.stderr
    commands = {name: c for _, name, _, c in _blocks(result.stdout)}
    root = str(tmp_path / "root")
    teacher = commands["teacher-rn"][0]
    assert _option(teacher, "--model-args") == '{"m_channels": 16, "embed_dim": 128}'
    assert _option(teacher, "--epochs") == "12" and _option(teacher, "--out") == f"{root}/models/teacher-rn"
    assert _option(commands["teacher"][0], "--out") == f"{root}/models/teacher"
    for cache, teacher_dir in (("cache-rn-k4", "teacher-rn"), ("cache-rn-k4-ig5-weighted", "teacher-rn"),
                               ("cache-k4", "teacher"), ("cache-k4-ig5-weighted", "teacher")):
        words = commands[cache][0]
        assert _option(words, "--teacher") == f"{root}/models/{teacher_dir}"
        assert _option(words, "--out") == f"{root}/caches/{cache[len('cache-'):]}.zarr"
    # ce ignores the teacher: its finished runs on the main cache stay valid (same crops)
    for name, cache in (("resnet34m2-ce-s0", "k4"), ("resnet34m2-dkd-T2-b8-s1", "rn-k4"),
                        ("resnet34m2-imlkd-s0", "rn-k4-ig5-weighted"), ("xvector-dkd-T2-b8-s0", "k4"),
                        ("xvector-imlkd-s0", "k4-ig5-weighted")):
        assert _option(commands[name][0], "--cache") == f"{root}/caches/{cache}.zarr", name
    gate, gate_rn = commands["teacher-gate"][0], commands["teacher-gate-rn"][0]
    assert _option(gate, "--teacher").endswith("/models/teacher") and not any("resnet34" in w for w in gate)
    assert _option(gate_rn, "--teacher").endswith("/models/teacher-rn")
    assert gate_rn[-2:] == [f"{root}/students/resnet34m2-ce-s0", f"{root}/students/resnet34m2-ce-s1"]
    assert _option(commands["saliency-eval-resnet34m2"][0], "--model") == f"{root}/models/teacher-rn"
    assert _option(commands["saliency-eval-xvector"][0], "--model") == f"{root}/models/teacher"
    assert _option(commands["ig-steps-resnet34m2"][0], "--model") == f"{root}/models/teacher-rn"
    assert _option(commands["ig-steps-xvector"][0], "--model") == f"{root}/models/teacher"


@pytest.mark.timeout(600)  # about 30 s of CPU (7 Python starts); minutes of wall on a loaded machine
def test_one_stage_runs_resumes_and_refuses_changed_settings(tmp_path):
    env = {"CORPUS_ARGS": "--speakers 2 --utterances-per-speaker 2 --seconds 0.6 --test-speakers 2",
           "SPK_CORPORA": "2x4 4x2", "SPK_TEST_OFFSET": "10", "SPK_TEST_SPEAKERS": "2", "SPK_TEST_UTTS": "2",
           "SPK_ARGS": "--seconds 0.6"}
    killed = tmp_path / "root" / "log" / "corpus-demo"
    killed.mkdir(parents=True)
    (killed / "log.txt").write_text("an attempt killed halfway\n")
    first = _run(["--stop-stage", "corpora", "--jobs", "3"], tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (killed / "log.attempt-1.txt").read_text() == "an attempt killed halfway\n"
    assert "synthesising" in (killed / "log.txt").read_text()
    assert "2 corpora share one test set" in first.stdout
    root = tmp_path / "root"
    settings = (root / "log" / "corpus-spk2x4" / "settings.txt").read_text()
    assert settings.startswith("kdcache make-synthetic-corpus ") and "--test-speaker-offset 10" in settings
    assert "study.py corpus-stats" in settings
    assert (root / "log" / "corpus-spk2x4" / "command.sh").read_text().count("cli.main make-synthetic-corpus") == 1
    stats = json.loads((root / "data" / "spk4x2" / "stats.json").read_text())
    assert (stats["train"]["speakers"], stats["train"]["utterances"], stats["test"]["speakers"]) == (4, 8, 2)
    tsv = [row.split("\t") for row in (root / "cpu_time.tsv").read_text().splitlines()]
    assert sorted(row[1] for row in tsv) == ["corpus-demo", "corpus-spk2x4", "corpus-spk4x2"]
    assert all(float(x) >= 0 for row in tsv for x in row[2:])
    again = _run(["--stop-stage", "corpora"], tmp_path, env)
    assert again.returncode == 0 and "start" not in again.stdout  # finished runs are skipped
    changed = _run(["--stop-stage", "corpora"], tmp_path, dict(env, SPK_TEST_OFFSET="12"))
    assert changed.returncode == 2 and "corpus-spk2x4: started before with other settings" in changed.stderr


def test_gate_and_collect_by_hand(tmp_path):
    study = _load_study()
    root, out = tmp_path / "root", tmp_path / "res"
    eers = {"xvector-ce-s0": 0.04, "xvector-ce-s1": 0.05, "xvector-ce-s2": 0.06,
            "xvector-dkd-T2-b8-s0": 0.03, "xvector-dkd-T2-b8-s1": 0.02,
            "xvector-dkd-T2-b8-K2-s0": 0.05, "xvector-dkd-T2-b8-K4-s0": 0.03, "xvector-dkd-T2-b8-K4-s1": 0.05,
            "xvector-dkd-T2-b8-online-s0": 0.04,
            "spk100x40-xvector-ce-own-s0": 0.10, "spk100x40-xvector-ce-own-s1": 0.12, "spk400x10-xvector-dkd-T2-b8-s0": 0.05}
    lines = []
    for name, eer in eers.items():
        (root / "log" / name).mkdir(parents=True)
        (root / "log" / name / "done").touch()
        (root / "log" / name / "settings.txt").write_text(f"kdcache train-student ... {name}\n")
        (root / "log" / name / "log.txt").write_text("epoch 1\rprogress\nEER line\n")
        (root / "students" / name).mkdir(parents=True)
        (root / "students" / name / "metrics.json").write_text(json.dumps(
            {"eer": eer, "min_dcf": 10 * eer, "trials": "demo/test/trials.txt"}))
        lines.append(f"grid\t{name}\t60\t100\t20")
    lines.append("ksweep\tcache-k2\t30\t50\t10")  # 60 CPU s; every student above takes 120
    (root / "cpu_time.tsv").write_text("\n".join(lines) + "\n")
    (root / "log" / "xvector-ce-s2" / "log.attempt-1.txt").write_text("killed\n")
    (root / "models" / "teacher").mkdir(parents=True)
    (root / "models" / "teacher" / "metrics.json").write_text(json.dumps({"eer": 0.045, "min_dcf": 0.3}))
    ce = [str(root / "students" / f"xvector-ce-s{s}") for s in range(3)]
    gate = study.main(["gate", "--teacher", str(root / "models" / "teacher"), "--out", str(out / "gate.md"), *ce])
    assert gate == 0  # 4.50% < 5.00% mean CE
    assert "| xvector-ce | 3 | 5.00 ± 2.48 | +0.50 |" in (out / "gate.md").read_text()  # t(2) 4.3027 * 0.01 / sqrt 3
    (root / "models" / "teacher" / "metrics.json").write_text(json.dumps({"eer": 0.05, "min_dcf": 0.3}))
    assert study.main(["gate", "--teacher", str(root / "models" / "teacher"), "--out", str(out / "g2.md"), *ce]) == 3
    (out / "compare").mkdir(parents=True)
    for name, (low, high), seeds in (("a-vs-b", (-0.02, -0.001), (-0.03, -0.002)), ("c-vs-d", (-0.02, 0.01), "skipped"),
                                     ("e-vs-f", (0.001, 0.02), (0.002, 0.01)), ("g-vs-h", (-0.02, -0.01), (-0.01, 0.01)),
                                     ("i-vs-j", (-0.02, -0.01), (-0.0015, -0.0015, "equal"))):
        a, b = name.split("-vs-")
        (out / "compare" / f"{name}.json").write_text(json.dumps({"a": a, "b": b, "over_speakers": {
            "eer_a": 0.02, "eer_b": 0.03, "difference": -0.01, "relative": -1 / 3, "low": low, "high": high,
            "num_speakers": 40, "replicates": 1000, "seeds_a": 3, "seeds_b": 2},
            "over_seeds": {"skipped": "needs at least 2 seeds of each system"} if seeds == "skipped" else
            {"method": "paired t", "low": seeds[0], "high": seeds[1], **({"note": "width 0"} if len(seeds) > 2 else {})}}))
    rigged_top1_cache(root / "caches" / "k1-ig5-attribution.zarr", [0, 1, 2])
    (root / "log" / "cache-k1-ig5-attribution").mkdir(parents=True)
    for f in ("done", "log.txt"):
        (root / "log" / "cache-k1-ig5-attribution" / f).touch()
    ig_rows = [{"steps": n, **{m: {"mean": v, "ci95": 0.01} for m, v in zip(
        ("completeness_error_relative", "map_correlation", "integrated_top1", "integrated_kl", "cpu_seconds_per_crop"),
        values)}} for n, values in ((5, (0.71, 0.8968, 1.0, 0.00789, 0.099)), (50, (0.028, 1.0, 0.995, 0.0, 0.997)))]
    (out / "ig_steps" / "xvector").mkdir(parents=True)
    (out / "ig_steps" / "xvector" / "ig_steps.json").write_text(json.dumps({
        "label": "teacher", "utterances": ["u"] * 64, "rows": ig_rows,
        "settings": {"crop_seconds": 1.0, "ig_durations": [1.0, 0.5], "integrated_input": "weighted"}}))
    assert study.main(["collect", "--root", str(root), "--out", str(out), "--k-passes", "8"]) == 0
    ig = (out / "ig_steps.md").read_text()
    assert "## teacher (64 crops of 1 s, durations 1, 0.5 s, weighted input)" in ig
    assert "| 5 | 0.710 ± 0.010 | 0.897 ± 0.010 | 100.0 ± 1.0% | 0.0079 ± 0.0100 | 0.099 ± 0.010 |" in ig
    assert "| 50 | 0.028 ± 0.010 | 1.000 ± 0.010 | 99.5 ± 1.0% |" in ig and (out / "ig_steps.png").is_file()
    # rows 10..299 labelled: right on the crops unless row % 4 == 0 (218 of 290), integrated where row % 10 == 0 (29)
    assert "| k1-ig5-attribution | 300 | - | - | 75.2% | 10.0% |" in (out / "caches.md").read_text()
    claims = (out / "comparisons.md").read_text()
    assert ("| a | b | 3 / 2 | 2.00 | 3.00 | -1.00 | [-2.00, -0.10] | [-3.00, -0.20] (paired t) | -33.3% | holds |"
            in claims)
    assert "| c | d |" in claims and "| - | -33.3% | cannot tell (speakers interval crosses 0) |" in claims
    assert "e-vs-f" not in claims and "| e | f |" in claims and claims.count("| reversed |") == 1
    assert "| g | h |" in claims and "cannot tell (seeds interval crosses 0) |" in claims
    # two seeds that differ by exactly the same amount: a zero-width interval below 0 is not evidence
    assert "| i | j |" in claims
    assert "| [-0.15, -0.15] (paired t) | -33.3% | cannot tell (the seeds interval has width 0) |" in claims
    table = (out / "results.md").read_text()
    # dkd: mean 2.5%, t(1) 12.7062 * sd 0.7071 / sqrt 2 = 6.35 points; change against ce 5.00%: -50%
    assert "| xvector-dkd-T2-b8 | 2 | 2.50 ± 6.35 | 0.250 ± 0.635 | -50.0% | 3.00 / 2.00 |" in table
    assert "| xvector-dkd-T2-b8-K2 | 1 | 5.00 | 0.500 |" in table
    cpu = (out / "cpu_time.md").read_text()
    assert "| grid | 12 | 0.20 | 0.40 |" in cpu  # 12 x 60 s wall, 12 x 120 s CPU
    assert "1 run(s) finished on a later attempt" in cpu and cpu.rstrip().endswith(": xvector-ce-s2")
    speakers = (out / "speakers.md").read_text()
    assert "| 100 x 40 | 11.00 ± 12.71 (2) |  |  |" in speakers  # t(1) 12.7062 x sd 0.0141 / sqrt 2
    assert "| 400 x 10 |  |  | 5.00 (1) |" in speakers and (out / "speakers.png").is_file()
    ksweep = (out / "ksweep.md").read_text()
    assert "| 4 | 2 | 2 | 4.00 ± 12.71 | 1.0 | 2.0 |  |  | 1.00 |" in ksweep and (out / "ksweep.png").is_file()
    assert "| 2 | 4 | 1 | 5.00 | 1.0 | 2.0 | 1.0 | 1.50 | 1.00 |" in ksweep  # (60 + 120) / 120
    assert "| online | 32 | 1 | 4.00 | 1.0 | 2.0 | | 1.00 | 1.00 |" in ksweep
    assert json.loads((out / "runs" / "xvector-ce-s1" / "metrics.json").read_text())["eer"] == 0.05
    assert (out / "runs" / "xvector-ce-s1" / "log_tail.txt").read_text() == "epoch 1\nprogress\nEER line\n"


def test_editing_run_sh_while_it_runs_changes_nothing_in_the_running_study(tmp_path):
    """bash reads a script as it executes it: a study running for hours would otherwise run whatever bytes
    sit at its old offset after an edit or a git pull (a real study died so)."""
    import shutil
    import time

    tree = tmp_path / "repo" / "studies" / "papers"
    shutil.copytree(RUN.parent, tree, ignore=shutil.ignore_patterns("work"))
    marker = tmp_path / "probing"
    fake = tmp_path / "kdcache"
    fake.write_text('#!/usr/bin/env bash\nif [[ "$1 $2" == "train-student --help" ]]; then\n'
                    f'  touch {shlex.quote(str(marker))}; sleep 3; echo "--loss-args --online-teacher"\nfi\nexit 0\n')
    fake.chmod(0o755)
    script = tree / "run.sh"
    env = dict(os.environ, KDCACHE=str(fake), PYTHON=sys.executable)
    proc = subprocess.Popen(["bash", str(script), "--dry-run", "--root", str(tmp_path / "root")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    script.write_text("#!/usr/bin/env bash\n" + "# an edit that moves every byte\n" * 40 + script.read_text())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "## stage 10 report" in out and "syntax error" not in err
