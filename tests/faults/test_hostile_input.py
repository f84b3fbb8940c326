"""Hostile input, round two (issue 15): the cases that are not one row of the bad-input table -- inputs
that must now work (a BOM, a batch size the cache cannot take), checks that must come before the work,
and Ctrl-C at the last moment of a build."""

from __future__ import annotations

import json

import click
import pytest

from cli.main import main
from cli.options import Count, Real, check_option_values
from kdcache.errors import KdcacheError
from tests.faults.conftest import BUILD_ARGS, one_line_error, run_cli


def _all_commands(group: click.Group = main, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, f"{prefix}{name} "))
        else:
            found.append((f"{prefix}{name}", command))
    return found


def test_every_numeric_option_is_finite_bounded_and_shows_its_range():
    numeric = 0
    for name, command in [("kdcache", main), *_all_commands()]:
        ctx = click.Context(command, info_name=name)
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag:
                continue
            kind = param.type
            if isinstance(kind, (click.types.FloatParamType, click.types.IntParamType)) and not isinstance(
                    kind, click.types._NumberRangeBase):
                pytest.fail(f"{name} {param.opts[0]}: an unbounded number type ({kind.name})")
            if isinstance(kind, click.types._NumberRangeBase):
                numeric += 1
                assert isinstance(kind, (Real, Count)) or (kind.min is not None and kind.max is not None), \
                    f"{name} {param.opts[0]}"
                if isinstance(kind, click.IntRange):
                    assert kind.max is not None, f"{name} {param.opts[0]}: no upper bound"
                record = param.get_help_record(ctx)
                assert record and kind._describe_range() in " ".join(record[1].split()), (name, param.opts[0], record)
    assert numeric >= 40


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "NaN"])
def test_real_refuses_non_finite_values(value):
    with pytest.raises(click.BadParameter):
        Real(0.1, 600).convert(value, None, None)
    with pytest.raises(click.BadParameter):
        Real().convert(value, None, None)


def test_option_values_from_a_config_file_pass_the_same_checks():
    from cli.commands_train import train_student_cmd

    ok = check_option_values(train_student_cmd, {"batch-size": 64, "lr": "1e-3", "seed": 3}, "run.yaml")
    assert ok == {"batch_size": 64, "lr": 0.001, "seed": 3}
    with pytest.raises(KdcacheError, match=r"run.yaml: lr: .*'nan' is not a finite number"):
        check_option_values(train_student_cmd, {"lr": "nan"}, "run.yaml")
    with pytest.raises(KdcacheError, match=r"run.yaml: batch_size: .*not in the range 1<=x<=65536"):
        check_option_values(train_student_cmd, {"batch_size": 0}, "run.yaml")
    with pytest.raises(KdcacheError, match="run.yaml: unknown option 'epoch' for train-student"):
        check_option_values(train_student_cmd, {"epoch": 3}, "run.yaml")


def test_make_synthetic_corpus_help_states_the_range_it_accepts():
    result = run_cli("make-synthetic-corpus", "--help")
    assert "2<=x<=1000" in " ".join(result.stdout.split())


def test_import_wespeaker_reads_a_speaker_list_with_a_bom_and_crlf(tmp_path, inputs):
    from tests.faults.test_bad_input import wespeaker

    out = tmp_path / "imported"
    args = wespeaker(inputs, speakers=inputs.speakers_bom)
    result = run_cli(*args[:-1], out)
    assert result.code == 0, result.stderr
    speakers = json.loads((out / "config.json").read_text())["speakers"]
    assert speakers == [f"s{i}" for i in range(8)]


def test_a_batch_size_the_chunks_cannot_take_is_rounded_down_with_a_note(tmp_path, inputs):
    from tests.faults.test_bad_input import student

    out = tmp_path / "student12"
    args = student(inputs, "--batch-size", "12")
    result = run_cli(*args[:6], out, *args[7:])
    assert result.code == 0, result.stderr
    assert "kdcache: note: --batch-size 12: batches of this cache must be a multiple of its 8-row chunks; " \
           "training with --batch-size 8" in result.stderr
    recorded = json.loads((out / "config.json").read_text())["extra"]["training"]["batch_size"]
    assert recorded == 8


def test_trials_not_in_eval_data_are_refused_before_any_training(tmp_path, inputs):
    from tests.faults.test_bad_input import student

    out = tmp_path / "never"
    args = student(inputs, "--trials", inputs.trials_unknown, "--eval-data", inputs.test)
    result = run_cli(*args[:6], out, *args[7:])
    assert result.code == 2 and "nosuch/utt.wav" in one_line_error(result)
    assert not out.exists()  # nothing trained, so the rerun needs no --resume


def test_ctrl_c_while_the_last_workers_stop_says_interrupted_without_a_traceback(tmp_path, inputs, monkeypatch):
    """A Ctrl-C that lands while the DataLoader's workers are being stopped after the last shard used to
    print 'Exception ignored ... KeyboardInterrupt' with a traceback and exit 0."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    real = _MultiProcessingDataLoaderIter._shutdown_workers
    calls = []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 1:
            real(self)
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(_MultiProcessingDataLoaderIter, "_shutdown_workers", interrupted)
    out = tmp_path / "cache.zarr"
    args = ["build-teacher-cache", "--data", inputs.train, "--teacher", inputs.teacher, "--out", out, *BUILD_ARGS]
    args[args.index("--num-workers") + 1] = "1"
    result = run_cli(*args)
    assert calls, "the build never stopped its workers itself"
    assert result.code == 130, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert "kdcache: interrupted" in result.stderr
    monkeypatch.undo()
    again = run_cli(*args)  # the rerun finishes (finalizes) the cache
    assert again.code == 0, again.stderr
    assert run_cli("cache", "verify", out).code == 0


@pytest.fixture(scope="module")
def inputs(tiny_corpus, tiny_teacher, fault_cache, tmp_path_factory):
    from tests.faults.test_bad_input import Inputs

    return Inputs(tmp_path_factory.mktemp("hostile"), tiny_corpus, tiny_teacher, fault_cache)



def test_a_bug_inside_verify_is_not_reported_as_damage(inputs, monkeypatch):
    """verify turns decode and file-system errors into 'damaged' lines; anything else is a bug and keeps
    its traceback (an ``except Exception`` there used to report it as damage)."""
    import zarr

    real = zarr.Array.__getitem__

    def buggy(self, selection):
        if self.path == "teacher/embedding":
            raise AttributeError("a bug")
        return real(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", buggy)
    with pytest.raises(AttributeError, match="a bug"):
        run_cli("cache", "verify", inputs.cache)


def test_debug_shows_the_original_error_behind_a_one_line_message(inputs):
    """A broad handler's one line keeps the original exception as its cause: --debug shows both."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--debug", "evaluate", "--model", inputs.model_bad_weights, "--data",
                                       inputs.test, "--trials", inputs.trials])
    assert type(result.exception).__name__ == "KdcacheError"
    assert result.exception.__cause__ is not None  # the torch.load failure, with its traceback
    plain = run_cli("evaluate", "--model", inputs.model_bad_weights, "--data", inputs.test, "--trials", inputs.trials)
    assert plain.code == 2 and "not a readable torch checkpoint" in one_line_error(plain)
