"""Model directories: round trip, WeSpeaker import, and refusal of bad or unsafe files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from kdcache.data.features import FeatureConfig
from kdcache.errors import KdcacheError
from kdcache.models import attach_head, build_model, default_model_args
from kdcache.models.checkpoint import ModelConfig, load_model_dir, load_state_dict_file, save_model_dir
from kdcache.models.wespeaker_import import import_wespeaker

SMALL = {"hid_dim": 32, "stats_dim": 48, "embed_dim": 16}


def small_model(num_speakers: int = 5):
    torch.manual_seed(0)
    model = build_model("xvector", **SMALL)
    attach_head(model, num_speakers)
    return model


def small_config(model, speakers):
    return ModelConfig(
        arch="xvector", model_args=default_model_args("xvector") | SMALL, embed_dim=16,
        speakers=speakers, features=FeatureConfig().to_dict(),
    )


def test_round_trip_gives_identical_embeddings(tmp_path):
    speakers = [f"id{i}" for i in range(5)]
    model = small_model().eval()
    save_model_dir(tmp_path / "m", model, small_config(model, speakers))
    loaded, config = load_model_dir(tmp_path / "m")
    assert config.speakers == speakers and config.arch == "xvector"
    x = torch.randn(2, 60, 80)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert "projection.weight" in loaded.state_dict()


def test_wespeaker_checkpoint_imports_and_round_trips(tmp_path):
    """A WeSpeaker avg_model.pt is a plain state_dict with WeSpeaker's keys and projection.weight;
    speed perturbation triples the head's rows (3 x speakers) and only speed 1.0 is kept."""
    model = small_model(num_speakers=3 * 4).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = tmp_path / "avg_model.pt"
    torch.save(state, ckpt)
    spk = tmp_path / "spk2id"
    spk.write_text("".join(f"spk{i} {i}\n" for i in range(4)))
    config = import_wespeaker(ckpt, "xvector", spk, tmp_path / "imported", model_args=SMALL)
    assert config.num_classes == 4
    loaded, _ = load_model_dir(tmp_path / "imported")
    x = torch.randn(2, 50, 80)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.projection.weight, state["projection.weight"][:4])


def test_import_refuses_a_head_that_does_not_fit_the_speaker_list(tmp_path):
    model = small_model(num_speakers=5)
    torch.save(model.state_dict(), tmp_path / "avg_model.pt")
    (tmp_path / "spk").write_text("a\nb\n")
    with pytest.raises(KdcacheError, match="5 classes but .* 2 speakers"):
        import_wespeaker(tmp_path / "avg_model.pt", "xvector", tmp_path / "spk", tmp_path / "out", model_args=SMALL)


def test_import_refuses_weights_of_another_architecture(tmp_path):
    model = small_model(num_speakers=2)
    torch.save(model.state_dict(), tmp_path / "avg_model.pt")
    (tmp_path / "spk").write_text("a\nb\n")
    with pytest.raises(KdcacheError, match="do not fit"):
        import_wespeaker(tmp_path / "avg_model.pt", "resnet34", tmp_path / "spk", tmp_path / "out",
                         model_args={"m_channels": 4, "embed_dim": 16})


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_pickle_in_a_model_directory_is_refused(tmp_path, capsys):
    model = small_model()
    save_model_dir(tmp_path / "m", model, small_config(model, [f"id{i}" for i in range(5)]))
    with open(tmp_path / "m" / "model.pt", "wb") as handle:
        pickle.dump({"weights": Exploit()}, handle)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["extra"].pop("weights_sha256")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(KdcacheError, match="refused|not a readable"):
        load_model_dir(tmp_path / "m")
    assert "this must never run" not in capsys.readouterr().out


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(KdcacheError, match="not a plain state_dict"):
        load_state_dict_file(tmp_path / "list.pt")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("arch"), "config.arch is missing"),
        (lambda d: d.update(kdcache_model_format=99), "version"),
        (lambda d: d.update(arch="resnet9000"), "resnet9000"),
        (lambda d: d.update(speakers="abc"), "speakers"),
    ],
)
def test_bad_model_configs_name_the_file(tmp_path, mutate, message):
    model = small_model()
    save_model_dir(tmp_path / "m", model, small_config(model, [f"id{i}" for i in range(5)]))
    path = tmp_path / "m" / "config.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(KdcacheError, match=message):
        load_model_dir(tmp_path / "m")


def test_missing_config_and_invalid_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdcacheError, match="config.json"):
        load_model_dir(tmp_path / "empty")
    model = small_model()
    save_model_dir(tmp_path / "m", model, small_config(model, [f"id{i}" for i in range(5)]))
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(KdcacheError, match="invalid JSON"):
        load_model_dir(tmp_path / "m")


def test_swapped_weights_are_detected_by_their_hash(tmp_path):
    model = small_model()
    save_model_dir(tmp_path / "m", model, small_config(model, [f"id{i}" for i in range(5)]))
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    state["seg_2.bias"] += 1
    torch.save(state, tmp_path / "m" / "model.pt")
    with pytest.raises(KdcacheError, match="sha256"):
        load_model_dir(tmp_path / "m")
