"""--config FILE.yaml: option names as keys, flags override, unknown keys named, shipped configs resolve."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from cli.config_file import read_config_file, resolved_settings
from cli.main import main
from kdcache.errors import KdcacheError
from kdcache.models import MODEL_NAMES, build_model

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*/conf/*.yaml"))
COMMAND_OF_PREFIX = {"student": "train-student", "loss": "train-student", "teacher": "train-teacher",
                     "cache": "build-teacher-cache", "evaluate": "evaluate"}
REQUIRED = {"train-student": ["--cache", "c.zarr", "--data", "d", "--out", "o"],
            "train-teacher": ["--data", "d", "--out", "o"],
            "build-teacher-cache": ["--data", "d", "--teacher", "t", "--out", "o"],
            "evaluate": ["--model", "m", "--data", "d", "--trials", "t"]}


def command(name: str) -> click.Command:
    return main.commands[name]


def resolve(name: str, args: list[str]) -> click.Context:
    """Parse ``args`` for command ``name`` as the CLI does, without running it."""
    return command(name).make_context(name, list(args), parent=click.Context(main))


def test_keys_in_both_spellings_and_flags_override(tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text("batch-size: 32\nfinal_lr: 0.001\nmodel-args: {hid_dim: 16, embed_dim: 8}\n"
                    "temperatures: [1, 2]\nloss: kd\n")
    ctx = resolve("train-student", ["--config", str(conf), "--cache", "c", "--data", "d", "--out", "o",
                                    "--batch-size", "64"])
    assert ctx.params["batch_size"] == 64  # the command line wins
    assert ctx.params["final_lr"] == 0.001 and ctx.params["loss"] == "kd"
    assert json.loads(ctx.params["model_args"]) == {"hid_dim": 16, "embed_dim": 8}
    assert ctx.params["temperatures"] == "1,2"
    assert ctx.params["epochs"] == 10  # untouched options keep their defaults


def test_unknown_key_is_one_line_naming_the_closest_option(tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text("batchsize: 32\n")
    result = CliRunner().invoke(main, ["train-teacher", "--config", str(conf), "--data", "d", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"kdcache: error: {conf}: unknown key 'batchsize' for train-teacher (did you mean 'batch-size'?)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "expected a mapping"),
    ("epochs: [1\n", "not valid YAML at line"),
    ("batch-size: 1\nbatch_size: 2\n", "given twice"),
    ("config: other.yaml\n", "unknown key 'config'"),
])
def test_bad_files_are_one_line(tmp_path, text, message):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    with pytest.raises(KdcacheError, match=message):
        read_config_file(conf, command("train-teacher"))


def test_yaml_is_read_safely(tmp_path):
    conf = tmp_path / "evil.yaml"
    conf.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(KdcacheError, match="not valid YAML"):
        read_config_file(conf, command("train-teacher"))


def test_resolved_settings_reproduce_themselves(tmp_path):
    ctx = resolve("build-teacher-cache", ["--data", "d", "--teacher", "t", "--out", "o", "--saliency",
                                          "--ig-durations", "1.0,0.5", "--augment-prob", "0.3"])
    settings = resolved_settings(ctx)
    conf = tmp_path / "resolved.yaml"
    conf.write_text(yaml.safe_dump(settings))
    again = resolve("build-teacher-cache", ["--config", str(conf)])
    assert again.params == ctx.params


def test_every_command_with_outputs_takes_config():
    for name in ("train-teacher", "build-teacher-cache", "train-student", "evaluate"):
        assert any(p.name == "config" for p in command(name).params), name


def test_there_are_shipped_configs_for_every_architecture_and_loss():
    names = {p.parent.parent.name + "/" + p.stem for p in SHIPPED}
    losses = command("train-student").params
    loss_choices = next(p for p in losses if p.name == "loss").type.choices
    for recipe in ("voxceleb", "demo"):
        for arch in MODEL_NAMES:
            assert f"{recipe}/student_{arch}" in names
        for loss in loss_choices:
            assert f"{recipe}/loss_{loss}" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shipped_config_resolves(path):
    name = COMMAND_OF_PREFIX[path.stem.split("_")[0]]
    data = yaml.safe_load(path.read_text())
    pairs = list(zip(REQUIRED[name][::2], REQUIRED[name][1::2]))
    missing = [arg for flag, value in pairs if flag[2:] not in data for arg in (flag, value)]
    ctx = resolve(name, ["--config", str(path), *missing])
    settings = resolved_settings(ctx)
    for key, value in data.items():
        got = settings[key.replace("_", "-")]
        if isinstance(value, list):
            value = [float(v) for v in value]
            got = [float(v) for v in str(got).split(",")]
        assert got == value or str(got) == str(value), (key, got, value)
    arch = ctx.params.get("student") or ctx.params.get("arch")
    if arch:  # the architecture arguments build the model (WeSpeaker's names and values)
        build_model(arch, **json.loads(ctx.params["model_args"]))


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_cache_and_evaluate_write_their_resolved_settings(tiny_corpus, tiny_teacher, tmp_path):
    conf = tmp_path / "cache.yaml"
    conf.write_text(f"data: {tiny_corpus / 'train'}\nteacher: {tiny_teacher}\ncrops-per-utt: 1\ncrop-seconds: 1.0\n"
                    "shard-rows: 16\nchunk_rows: 8\nbatch-size: 16\nnum-workers: 0\ndevice: cpu\n")
    cache = tmp_path / "cache.zarr"
    result = run_cli("build-teacher-cache", "--config", conf, "--out", cache)
    assert result.exit_code == 0, result.output
    settings = yaml.safe_load((cache / "config.yaml").read_text())
    assert settings["out"] == str(cache) and settings["chunk-rows"] == 8 and settings["logits"] == "dense"
    assert run_cli("cache", "verify", cache).exit_code == 0  # the extra file does not disturb the cache
    again = tmp_path / "again.zarr"
    assert run_cli("build-teacher-cache", "--config", cache / "config.yaml", "--out", again).exit_code == 0
    assert yaml.safe_load((again / "config.yaml").read_text()) == settings | {"out": str(again)}

    test = tiny_corpus / "test"
    metrics = tmp_path / "eval" / "metrics.json"
    conf = tmp_path / "evaluate.yaml"
    conf.write_text(f"model: {tiny_teacher}\ndata: {test}\ntrials: {test / 'trials.txt'}\nout: {metrics}\n")
    result = run_cli("evaluate", "--config", conf)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "eval" / "metrics.config.yaml").read_text())["model"] == str(tiny_teacher)


@pytest.mark.parametrize("text, message", [
    ("lr: .nan\n", r"run.yaml: lr: .*is not a finite number"),
    ("batch-size: 0\n", r"run.yaml: batch-size: .*not in the range 1<=x<=65536"),
    ("crop_seconds: 1e9\n", r"run.yaml: crop_seconds: .*not in the range 0.1<=x<=60"),
    ("seed: -1\n", r"run.yaml: seed: "),
    ("epochs: [1, 2]\n", r"run.yaml: epochs: expected integer, got list"),
    ("margin: {a: 1}\n", r"run.yaml: margin: expected number, got dict"),
])
def test_config_values_pass_the_options_own_checks_naming_file_and_key(tmp_path, text, message):
    """Before, a YAML .nan or a list reached click's conversion (a list: a TypeError traceback) or the
    library; now each value is checked with the option's type when the file is read."""
    conf = tmp_path / "run.yaml"
    conf.write_text(text)
    with pytest.raises(KdcacheError, match=message):
        read_config_file(conf, command("train-teacher"))
    result = CliRunner().invoke(main, ["train-teacher", "--config", str(conf), "--data", "d", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith(f"kdcache: error: {conf}: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_config_choice_values_are_checked_too(tmp_path):
    conf = tmp_path / "cache.yaml"
    conf.write_text("logits: sparse\n")
    with pytest.raises(KdcacheError, match=r"cache.yaml: logits: .*'sparse' is not one of"):
        read_config_file(conf, command("build-teacher-cache"))
