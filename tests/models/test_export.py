"""kdcache export: a WeSpeaker model folder that loads as WeSpeaker loads it, and ONNX equal to PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import main
from kdcache.data.features import FeatureConfig
from kdcache.models import MODEL_NAMES, ArcMarginProduct, build_model
from kdcache.models.checkpoint import ModelConfig, build_speaker_model, load_model_dir, save_model_dir
from kdcache.models.export import export_onnx, export_wespeaker

# Narrow variants so the test is fast; the widths WeSpeaker fixes by name (m_channels, channels) differ.
NARROW = {
    "xvector": {"hid_dim": 24, "stats_dim": 48, "embed_dim": 16},
    "resnet34": {"m_channels": 4, "embed_dim": 16},
    "resnet293": {"m_channels": 2, "embed_dim": 16},
    "ecapa_c512": {"channels": 16, "embed_dim": 16},
    "ecapa_c1024": {"channels": 16, "embed_dim": 16},
    "campplus": {"init_channels": 16, "growth_rate": 8, "embed_dim": 16},
}
# The arguments of WeSpeaker's named constructors (wespeaker/models/{tdnn,resnet,ecapa_tdnn,campplus}.py).
WESPEAKER_SIGNATURES = {
    "XVEC": {"feat_dim", "hid_dim", "stats_dim", "embed_dim", "pooling_func"},
    "ResNet34": {"feat_dim", "embed_dim", "pooling_func", "two_emb_layer"},
    "ResNet293": {"feat_dim", "embed_dim", "pooling_func", "two_emb_layer"},
    "ECAPA_TDNN_GLOB_c512": {"feat_dim", "embed_dim", "pooling_func", "emb_bn"},
    "ECAPA_TDNN_GLOB_c1024": {"feat_dim", "embed_dim", "pooling_func", "emb_bn"},
    "CAMPPlus": {"feat_dim", "embed_dim", "pooling_func", "growth_rate", "bn_size", "init_channels", "config_str"},
}
# WeSpeaker's get_speaker_model(name) mapped onto kdcache's builders (WeSpeaker is not a dependency).
WESPEAKER_BUILDERS = {
    "XVEC": lambda **kw: build_model("xvector", **kw),
    "ResNet34": lambda **kw: build_model("resnet34", **kw),
    "ResNet293": lambda **kw: build_model("resnet293", **kw),
    "ECAPA_TDNN_GLOB_c512": lambda **kw: build_model("ecapa_c512", **kw),
    "ECAPA_TDNN_GLOB_c1024": lambda **kw: build_model("ecapa_c1024", **kw),
    "CAMPPlus": lambda **kw: build_model("campplus", **kw),
}


def make_model_dir(path, arch, model_args, speakers=5):
    """A model directory with random weights and random batch-norm statistics (so eval mode matters)."""
    torch.manual_seed(7)
    full = build_model(arch, **model_args).model_args
    config = ModelConfig(arch=arch, model_args=full, embed_dim=full["embed_dim"],
                         speakers=[f"id{i:05d}" for i in range(speakers)], features=FeatureConfig().to_dict())
    model = build_speaker_model(config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    save_model_dir(path, model, config)
    return path


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model_dir(request, tmp_path_factory):
    arch = request.param
    return arch, make_model_dir(tmp_path_factory.mktemp(arch) / "model", arch, NARROW[arch])


def test_wespeaker_export_loads_as_wespeaker_loads_it(model_dir, tmp_path):
    arch, path = model_dir
    out, warnings = export_wespeaker(path, tmp_path / "ws")
    assert sorted(p.name for p in out.iterdir()) == ["avg_model.pt", "config.yaml", "speakers.txt"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["projection_args"]["project_type"] == "arc_margin"
    assert config["dataset_args"]["fbank_args"] == {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25,
                                                    "dither": 1.0}
    # wespeaker/cli/speaker.py load_model_pt and bin/export_onnx.py:
    #   model = get_speaker_model(config['model'])(**config['model_args']); projection from projection_args
    model = WESPEAKER_BUILDERS[config["model"]](**config["model_args"])
    proj = config["projection_args"]
    model.add_module("projection", ArcMarginProduct(proj["embed_dim"], proj["num_class"], scale=proj["scale"]))
    state = torch.load(out / "avg_model.pt", map_location="cpu", weights_only=True)
    assert "projection.weight" in state and state["projection.weight"].shape == (5, 16)
    model.load_state_dict(state, strict=True)
    model.eval()
    original, _ = load_model_dir(path)
    x = torch.randn(2, 150, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    extra = set(config["model_args"]) - WESPEAKER_SIGNATURES[config["model"]]
    narrowed = {"resnet34": {"m_channels"}, "resnet293": {"m_channels"}, "ecapa_c512": {"channels"},
                "ecapa_c1024": {"channels"}}.get(arch, set())
    assert extra == narrowed and bool(warnings) == bool(narrowed)


@pytest.mark.parametrize("arch", ["xvector", "resnet34", "ecapa_c1024"])
def test_full_width_export_uses_only_wespeakers_arguments(arch, tmp_path):
    path = make_model_dir(tmp_path / "model", arch, {}, speakers=3)
    out, warnings = export_wespeaker(path, tmp_path / "ws")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert not warnings
    assert set(config["model_args"]) <= WESPEAKER_SIGNATURES[config["model"]]


def test_export_then_import_is_the_same_model(model_dir, tmp_path):
    arch, path = model_dir
    export_wespeaker(path, tmp_path / "ws")
    result = CliRunner().invoke(main, ["import-wespeaker", str(tmp_path / "ws"), "--out", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    a = torch.load(path / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "back" / "model.pt", weights_only=True)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert load_model_dir(tmp_path / "back")[1].model_args == load_model_dir(path)[1].model_args


@pytest.fixture(scope="module")
def onnx_file(model_dir, tmp_path_factory):
    """Each architecture exported once (the export of CAM++ takes seconds)."""
    return export_onnx(model_dir[1], tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.mark.parametrize("seconds", [2, 7])
def test_onnx_gives_pytorchs_embeddings(model_dir, onnx_file, seconds):
    arch, path = model_dir
    onnx_path = onnx_file
    proto = onnx.load(str(onnx_path))
    assert proto.opset_import[0].version == 14
    assert [i.name for i in proto.graph.input] == ["feats"] and [o.name for o in proto.graph.output] == ["embs"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["B", "T"] and proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value == 80
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["kdcache.features"]) == FeatureConfig().to_dict() and meta["kdcache.arch"] == arch

    model, _ = load_model_dir(path)
    feats = torch.randn(3, 100 * seconds, 80)
    with torch.no_grad():
        expected = model(feats).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embs"], {"feats": feats.numpy()})
    relative = np.abs(got - expected).max() / np.abs(expected).max()
    assert relative <= 1e-4, f"{arch} {seconds} s: max relative difference {relative:.3g}"


def test_evaluate_scores_an_onnx_file_as_its_model_directory(tiny_corpus, tiny_teacher, tmp_path):
    from kdcache.evaluate.verification import EvalConfig, evaluate_model

    onnx_path = tmp_path / "teacher.onnx"
    result = CliRunner().invoke(main, ["export", str(tiny_teacher), "--format", "onnx", "--out", str(onnx_path)])
    assert result.exit_code == 0, result.output
    test = tiny_corpus / "test"
    kw = dict(data=str(test), trials=str(test / "trials.txt"), show_progress=False)
    from_dir = evaluate_model(EvalConfig(model=str(tiny_teacher), **kw))
    from_onnx = evaluate_model(EvalConfig(model=str(onnx_path), **kw))
    assert from_onnx["num_trials"] == from_dir["num_trials"] > 0
    assert from_onnx["eer"] == pytest.approx(from_dir["eer"], abs=1e-9)
    assert from_onnx["min_dcf"] == pytest.approx(from_dir["min_dcf"], abs=1e-6)
    result = CliRunner().invoke(main, ["evaluate", "--model", str(onnx_path), "--data", str(test),
                                       "--trials", str(test / "trials.txt")])
    assert result.exit_code == 0 and result.stdout.startswith("EER ")


@pytest.mark.parametrize("fmt, out_name", [("wespeaker", "ws"), ("onnx", "m.onnx")])
def test_export_of_a_folder_without_weights_is_one_line_and_writes_nothing(tmp_path, fmt, out_name):
    path = make_model_dir(tmp_path / "model", "xvector", NARROW["xvector"])
    (path / "model.pt").unlink()
    result = CliRunner().invoke(main, ["export", str(path), "--format", fmt, "--out", str(tmp_path / out_name)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"kdcache: error: {path / 'model.pt'}: checkpoint file not found"]
    assert not (tmp_path / out_name).exists()
