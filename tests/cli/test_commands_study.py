"""The study commands through the CLI: compare, saliency-eval and ig-steps."""

import json

from click.testing import CliRunner

from cli.main import main


def _scores(path, flip):
    lines = []
    for spk in "abc":
        lines.append(f"{spk}/s/1.wav {spk}/s/2.wav {-0.9 if flip else 0.9} target")
    for e, t in (("a", "b"), ("b", "c"), ("a", "c")):
        lines.append(f"{e}/s/1.wav {t}/s/1.wav {0.8 if flip else 0.1} nontarget")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_prints_and_writes(tmp_path):
    a, b = _scores(tmp_path / "a.txt", False), _scores(tmp_path / "b.txt", True)
    result = CliRunner().invoke(main, ["compare", "--a", str(a), "--b", str(b), "--name-a", "dkd", "--name-b", "ce",
                                       "--replicates", "20", "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "EER dkd 0.00% vs ce 100.00%" in result.output
    assert "95% CI over test speakers [-100.00, -100.00]" in result.output
    assert "over seeds: skipped" in result.output
    assert json.loads((tmp_path / "c.json").read_text())["over_speakers"]["difference"] == -1.0


def test_compare_bad_score_file_is_one_line(tmp_path):
    (tmp_path / "bad.txt").write_text("a b c\n")
    result = CliRunner().invoke(main, ["compare", "--a", str(tmp_path / "bad.txt"), "--b", str(tmp_path / "bad.txt")])
    assert result.exit_code == 2
    assert "bad.txt:1" in result.output and "Traceback" not in result.output


def test_saliency_eval_command(tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "sal"
    result = CliRunner().invoke(main, [
        "saliency-eval", "--model", str(tiny_teacher), "--label", "teacher", "--data", str(tiny_corpus / "train"),
        "--out", str(out), "--utterances", "2", "--crop-seconds", "0.5", "--ig-steps", "3", "--points", "5",
    ])
    assert result.exit_code == 0, result.output
    assert result.output.count("deletion AUC") == 1 and "teacher:" in result.output
    saved = json.loads((out / "saliency_eval.json").read_text())
    assert len(saved["fractions"]) == 5 and saved["settings"]["ig_steps"] == 3
    assert (out / "saliency_eval.png").is_file()


def test_ig_steps_command(tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "ig"
    result = CliRunner().invoke(main, [
        "ig-steps", "--model", str(tiny_teacher), "--data", str(tiny_corpus / "train"), "--out", str(out),
        "--steps", "4,2", "--utterances", "2", "--crop-seconds", "0.5", "--label", "teacher",
    ])
    assert result.exit_code == 0, result.output
    assert "teacher: 2 crops, reference 4 steps" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("steps "))
    assert [line.split()[0] for line in lines[header + 1:header + 3]] == ["2", "4"]
    assert json.loads((out / "ig_steps.json").read_text())["settings"]["steps"] == [2, 4]
    bad = CliRunner().invoke(main, ["ig-steps", "--model", "m", "--data", "d", "--out", str(out), "--steps", "2.5,4"])
    assert bad.exit_code == 2 and "whole numbers" in bad.output
