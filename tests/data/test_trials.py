from pathlib import Path

import pytest

from kdcache.data.trials import Trial, read_trials, write_trials
from kdcache.errors import KdcacheError


def test_both_formats(tmp_path: Path) -> None:
    path = tmp_path / "trials.txt"
    path.write_text("1 id1/a/1.wav id1/b/2.wav\n"
                    "0 id1/a/1.wav id2/c/1.wav\n"
                    "\n"
                    "enrA testB target\n"
                    "enrA testC nontarget\n")
    assert read_trials(path) == [
        Trial("id1/a/1.wav", "id1/b/2.wav", True), Trial("id1/a/1.wav", "id2/c/1.wav", False),
        Trial("enrA", "testB", True), Trial("enrA", "testC", False)]


def test_round_trip(tmp_path: Path) -> None:
    trials = [Trial("a", "b", True), Trial("a", "c", False)]
    write_trials(tmp_path / "t.txt", trials)
    assert (tmp_path / "t.txt").read_text() == "1 a b\n0 a c\n"
    assert read_trials(tmp_path / "t.txt") == trials


@pytest.mark.parametrize("bad", ["2 a b", "a b maybe", "1 a", "1 a b c", "target a b"])
def test_errors_name_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "trials.txt"
    path.write_text(f"1 a b\n{bad}\n")
    with pytest.raises(KdcacheError, match=f"{path}:2"):
        read_trials(path)


def test_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(KdcacheError, match="empty"):
        read_trials(tmp_path / "empty.txt")
    with pytest.raises(KdcacheError, match="not found"):
        read_trials(tmp_path / "missing.txt")
    with pytest.raises(KdcacheError):
        write_trials(tmp_path / "w.txt", [Trial("a b", "c", True)])
