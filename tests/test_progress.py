"""kdcache.progress: plain lines in logs, redraws on terminals."""

from __future__ import annotations

import io
import time

from tqdm import tqdm

from kdcache.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_stream_gets_newline_terminated_lines_without_carriage_returns():
    log = io.StringIO()
    with progress_bar(total=6, desc="epoch 1/1", unit="batch", file=log, line_interval=0.05, dynamic_ncols=True) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(6):
            time.sleep(0.03)
            bar.set_postfix({"loss": "1.234"}, refresh=False)
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.endswith("\n")
    lines = text.splitlines()
    # a start line, some lines in between (0.18 s of work at one line per 0.05 s), a final line
    assert 3 <= len(lines) <= 8, lines
    assert all(line.startswith("epoch 1/1:") for line in lines)
    assert "0/6" in lines[0] and "6/6" in lines[-1] and "loss=1.234" in lines[-1]


def test_log_lines_are_throttled_to_the_interval():
    log = io.StringIO()
    bar = progress_bar(total=10_000, file=log, line_interval=3600)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    assert log.getvalue().count("\n") == 2  # the start and the end, nothing in between
    bar.close()  # closing twice prints nothing more
    assert log.getvalue().count("\n") == 2


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("KDCACHE_PROGRESS_INTERVAL", "7.5")
    bar = progress_bar(total=1, file=io.StringIO())
    assert bar.mininterval == 7.5
    bar.close()


def test_disabled_bar_writes_nothing():
    log = io.StringIO()
    with progress_bar(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_terminal_keeps_the_redrawn_tqdm_bar():
    screen = _Terminal()
    with progress_bar(total=3, file=screen, mininterval=0) as bar:
        assert type(bar) is tqdm
        bar.update(3)
    assert "\r" in screen.getvalue()


def test_a_command_writing_to_a_file_logs_plain_lines(tmp_path):
    import os
    import subprocess
    import sys

    log = tmp_path / "log"
    with open(log, "w") as stream:
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "make-synthetic-corpus", str(tmp_path / "corpus"), "--speakers", "2",
             "--utterances-per-speaker", "2", "--test-speakers", "2", "--seconds", "0.5"],
            stdout=stream, stderr=stream, env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text and "synthesising: 100%" in text and "8/8" in text
