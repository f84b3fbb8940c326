"""Text files with a UTF-8 byte-order mark and CR LF line ends read as if they had neither."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdcache.data.corpus import load_corpus
from kdcache.data.text import read_text_lines
from kdcache.data.trials import read_trials
from kdcache.errors import KdcacheError
from kdcache.models.wespeaker_import import read_speaker_list
from tests.data.wavs import write_wav

BOM = "\ufeff"


def test_read_text_lines_strips_the_bom_and_every_line_end(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(BOM.encode() + b"a 1\r\nb 2\rc 3\n\nd 4\r\n")
    assert read_text_lines(path, "list") == ["a 1", "b 2", "c 3", "", "d 4", ""]
    with pytest.raises(KdcacheError, match="list not found"):
        read_text_lines(tmp_path / "nope", "list")
    with pytest.raises(KdcacheError, match="list is a folder"):
        read_text_lines(tmp_path, "list")


def test_a_wav_scp_and_utt2spk_with_a_bom_and_crlf(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 1600)
    write_wav(tmp_path / "b.wav", 1600)
    (tmp_path / "wav.scp").write_text(BOM + "id1/u1 a.wav\r\nid2/u1 b.wav\r\n", encoding="utf-8", newline="")
    (tmp_path / "utt2spk").write_text(BOM + "id1/u1 id1\r\nid2/u1 id2\r\n", encoding="utf-8", newline="")
    corpus = load_corpus(tmp_path)
    assert corpus.ids == ["id1/u1", "id2/u1"]
    assert corpus.speakers == ["id1", "id2"]


def test_a_trial_list_with_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "trials.txt"
    path.write_text(BOM + "1 a/1.wav b/2.wav\r\n0 a/1.wav c/3.wav\r\n", encoding="utf-8", newline="")
    trials = read_trials(path)
    assert [(t.enroll, t.test, t.target) for t in trials] == [("a/1.wav", "b/2.wav", True), ("a/1.wav", "c/3.wav", False)]


def test_a_speaker_list_with_a_bom_and_indices(tmp_path: Path) -> None:
    path = tmp_path / "spk2id"
    path.write_text(BOM + "id2 1\r\nid1 0\r\n", encoding="utf-8", newline="")
    assert read_speaker_list(path) == ["id1", "id2"]  # the indices give the class order
    path.write_text("id1\nid2 1\n")
    with pytest.raises(KdcacheError, match="indices must number the 2 speakers"):
        read_speaker_list(path)
    path.write_text("id1 0\nid2 x\n")
    with pytest.raises(KdcacheError, match=r"spk2id:2: expected 'speaker' or 'speaker index'"):
        read_speaker_list(path)


_LINE_TEXT = st.text(alphabet=st.sampled_from(list("ab1 0\t\r\n\ufeff/.-_") + ["\u00e9", "\u2028", "\x00"]), max_size=60)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(text=_LINE_TEXT, bom=st.booleans())
def test_any_text_reads_as_clean_lines_or_one_error_line(tmp_path_factory, text, bom):
    """Hypothesis: whatever a list file holds, the trial and speaker list readers return clean ids
    (no BOM, no CR) or raise KdcacheError; never another exception."""
    path = tmp_path_factory.mktemp("text") / "list.txt"
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    for read in (read_trials, read_speaker_list):
        try:
            result = read(path)
        except KdcacheError as err:
            assert "\n" not in str(err)  # one line
            continue
        ids = [x for t in result for x in (t.enroll, t.test)] if read is read_trials else result
        assert ids and all(i and "\ufeff" not in i[:1] and "\r" not in i for i in ids)
