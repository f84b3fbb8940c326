"""import-wespeaker MODEL_DIR: a folder in WeSpeaker's exact layout (avg_model.pt + config.yaml)."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import main
from kdcache.models import attach_head, build_model
from kdcache.models.checkpoint import load_model_dir

SPEAKERS = ["id10003", "id10001", "id10002", "id10000"]  # utt2spk order; WeSpeaker's classes are sorted
HID = {"hid_dim": 24, "stats_dim": 48}


def wespeaker_config(model="XVEC", num_class=12, speed_perturb=True, embed_dim=16):
    """What wespeaker/bin/train.py writes to exp_dir/config.yaml (yaml.dump of the resolved configs) for
    examples/voxceleb/v2/conf/xvec.yaml, narrowed through XVEC's own hid_dim/stats_dim arguments."""
    return {
        "exp_dir": "exp/XVEC-TSTP-emb16", "gpus": "[0,1]", "num_avg": 10, "enable_amp": False, "seed": 42,
        "num_epochs": 150, "save_epoch_interval": 5, "log_batch_interval": 100,
        "dataloader_args": {"batch_size": 128, "num_workers": 16, "pin_memory": False, "prefetch_factor": 8,
                            "drop_last": True},
        "dataset_args": {
            "sample_num_per_epoch": 0, "shuffle": True, "shuffle_args": {"shuffle_size": 2500}, "filter": True,
            "filter_args": {"min_num_frames": 100, "max_num_frames": 800}, "resample_rate": 16000,
            "speed_perturb": speed_perturb, "num_frms": 200, "aug_prob": 0.6,
            "fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0},
            "spec_aug": False,
            "spec_aug_args": {"num_t_mask": 1, "num_f_mask": 1, "max_t": 10, "max_f": 8, "prob": 0.6},
        },
        "model": model, "model_init": None,
        "model_args": {"feat_dim": 80, "embed_dim": embed_dim, "pooling_func": "TSTP", **HID},
        "projection_args": {"project_type": "arc_margin", "scale": 32.0, "easy_margin": False,
                            "embed_dim": embed_dim, "num_class": num_class, "do_lm": False},
        "margin_scheduler": "MarginScheduler",
        "margin_update": {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 20,
                          "fix_start_epoch": 40, "update_margin": True, "increase_type": "exp"},
        "loss": "CrossEntropyLoss", "loss_args": {}, "optimizer": "SGD",
        "optimizer_args": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.0001, "lr": 0.1},
        "scheduler": "ExponentialDecrease",
        "scheduler_args": {"initial_lr": 0.1, "final_lr": 5e-05, "warm_up_epoch": 6, "warm_from_zero": True,
                           "num_epochs": 150, "epoch_iter": 100, "scale_ratio": 4.0},
        "data_type": "shard", "train_data": "data/vox2_dev/shard.list", "train_label": "data/vox2_dev/utt2spk",
        "reverb_data": "data/rirs/lmdb", "noise_data": "data/musan/lmdb",
    }


def make_folder(root, rows=12, model="XVEC", **config_kw):
    torch.manual_seed(5)
    model_net = build_model("xvector", embed_dim=16, **HID)
    attach_head(model_net, rows)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(model_net.state_dict(), root / "avg_model.pt")
    (root / "config.yaml").write_text(yaml.dump(wespeaker_config(model=model, num_class=rows, **config_kw)))
    (root.parent / "utt2spk").write_text("".join(f"{s}/vid/{u:05d}.wav {s}\n" for s in SPEAKERS for u in range(2)))
    return root, model_net.eval()


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_folder_imports_with_sorted_speakers_and_the_first_rows_of_a_speed_perturbed_head(tmp_path):
    folder, original = make_folder(tmp_path / "voxceleb_xvec", rows=12)
    result = run("import-wespeaker", folder, "--utt2spk", tmp_path / "utt2spk", "--out", tmp_path / "teacher")
    assert result.exit_code == 0, result.output
    assert "head has 12 rows = 3 x 4 speakers (speed-perturbed training): kept the first 4" in result.stderr
    model, config = load_model_dir(tmp_path / "teacher")
    assert config.arch == "xvector" and config.speakers == sorted(SPEAKERS)
    assert config.model_args["hid_dim"] == 24 and config.head_scale == 32.0 and config.head_margin == 0.2
    assert config.features["num_mel_bins"] == 80 and config.features["dither"] == 0.0
    torch.testing.assert_close(model.projection.weight, original.projection.weight[:4], rtol=0, atol=0)
    x = torch.randn(2, 120, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)


def test_speakers_from_a_data_folder_or_a_list(tmp_path, tiny_corpus):
    train = tiny_corpus / "train"
    speakers = sorted({line.split()[1] for line in (train / "utt2spk").read_text().splitlines()})
    folder, _ = make_folder(tmp_path / "ws", rows=len(speakers), speed_perturb=False)
    assert run("import-wespeaker", folder, "--data", train, "--out", tmp_path / "a").exit_code == 0
    assert load_model_dir(tmp_path / "a")[1].speakers == speakers
    (tmp_path / "list").write_text("\n".join(reversed(speakers)) + "\n")  # --speakers: used as given
    assert run("import-wespeaker", folder, "--speakers", tmp_path / "list", "--out", tmp_path / "b").exit_code == 0
    assert load_model_dir(tmp_path / "b")[1].speakers == list(reversed(speakers))


def test_arch_overrides_the_config(tmp_path):
    folder, _ = make_folder(tmp_path / "ws", rows=4, model="ResNet34")  # the config names the wrong model
    result = run("import-wespeaker", folder, "--utt2spk", tmp_path / "utt2spk", "--arch", "xvector",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("model", ["ECAPA_TDNN_c512", "ERes2Net34"])
def test_an_architecture_kdcache_lacks_lists_the_ones_it_has(tmp_path, model):
    folder, _ = make_folder(tmp_path / "ws", rows=4, model=model)
    result = run("import-wespeaker", folder, "--utt2spk", tmp_path / "utt2spk", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"kdcache: error: {folder / 'config.yaml'}: model {model!r} is not an architecture kdcache has; it has "
        "XVEC (xvector), ResNet34 (resnet34), ResNet293 (resnet293), ECAPA_TDNN_GLOB_c512 (ecapa_c512), "
        "ECAPA_TDNN_GLOB_c1024 (ecapa_c1024), CAMPPlus (campplus)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows", [8, 5])
def test_a_head_matching_neither_s_nor_3s_is_one_line_and_writes_nothing(tmp_path, rows):
    folder, _ = make_folder(tmp_path / "ws", rows=rows)
    result = run("import-wespeaker", folder, "--utt2spk", tmp_path / "utt2spk", "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"head has {rows} classes but" in lines[0] and "lists 4 speakers" in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_speakers_or_files_are_one_line(tmp_path):
    folder, _ = make_folder(tmp_path / "ws", rows=4)
    result = run("import-wespeaker", folder, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--speakers, --utt2spk or --data" in result.stderr
    (folder / "avg_model.pt").unlink()
    result = run("import-wespeaker", folder, "--utt2spk", tmp_path / "utt2spk", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "avg_model.pt: checkpoint file not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bare_checkpoint_takes_speakers_from_utt2spk_too(tmp_path):
    folder, original = make_folder(tmp_path / "ws", rows=12)
    result = run("import-wespeaker", folder / "avg_model.pt", "--arch", "xvector", "--model-args",
                 '{"hid_dim": 24, "stats_dim": 48, "embed_dim": 16}', "--utt2spk", tmp_path / "utt2spk",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    model, config = load_model_dir(tmp_path / "out")
    assert config.speakers == sorted(SPEAKERS)
    torch.testing.assert_close(model.projection.weight, original.projection.weight[:4], rtol=0, atol=0)
    result = run("import-wespeaker", folder / "avg_model.pt", "--utt2spk", tmp_path / "utt2spk",
                 "--out", tmp_path / "out2")
    assert result.exit_code == 2 and "needs --arch" in result.stderr and not (tmp_path / "out2").exists()


def test_a_folder_import_never_overwrites_a_model_and_reads_utt2spk_with_a_bom(tmp_path):
    """The MODEL_DIR form refuses a non-empty --out as the bare-checkpoint form does (issue 15), and its
    --utt2spk goes through the one text reader (a BOM and CR LF line ends are removed)."""
    folder, _ = make_folder(tmp_path / "ws", rows=12)
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_bytes(b"\xef\xbb\xbf" + utt2spk.read_text().replace("\n", "\r\n").encode())
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier model")
    result = run("import-wespeaker", folder, "--utt2spk", utt2spk, "--out", out)
    assert result.exit_code == 2 and "exists and is not an empty folder" in result.stderr, result.output
    assert (out / "model.pt").read_bytes() == b"an earlier model"
    result = run("import-wespeaker", folder, "--utt2spk", utt2spk, "--out", tmp_path / "fresh")
    assert result.exit_code == 0, result.output
    assert load_model_dir(tmp_path / "fresh")[1].speakers == sorted(SPEAKERS)
