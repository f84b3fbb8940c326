"""Every input a user can get wrong, in every command: one line naming the problem, the documented exit
status, no traceback (without --debug).

The case table below is also the table of docs/robustness.md: ``python -m tests.faults.test_bad_input``
prints it in Markdown with the messages the commands give now.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import zarr

from tests.cache.helpers import set_done
from tests.faults.conftest import STUDENT_ARGS, Result, build_cache, one_line_error, run_cli


@dataclass(frozen=True)
class Case:
    command: str  # the command as the table shows it
    what: str  # the input that is wrong
    args: Callable[["Inputs"], list]  # the command line, from the prepared inputs
    code: int  # expected exit status
    fragment: str  # a piece of the expected one-line message


class Inputs:
    """Good and bad inputs, made once: a corpus, a teacher, a cache and broken variants of each."""

    def __init__(self, root: Path, corpus: Path, teacher: Path, cache: Path) -> None:
        self.root, self.corpus, self.teacher, self.cache = root, corpus, teacher, cache
        root.mkdir(parents=True, exist_ok=True)
        self.train = corpus / "train"
        self.test = corpus / "test"
        self.trials = corpus / "test" / "trials.txt"
        self.out = root / "out"  # a fresh output folder per case (cleared by the test)
        r = root

        def folder(name: str) -> Path:
            path = r / name
            path.mkdir(parents=True, exist_ok=True)
            return path

        # corpora
        self.empty_dir = folder("empty")
        self.a_file = r / "a_file.txt"
        self.a_file.write_text("not a folder\n")
        kaldi = folder("bad_scp")
        (kaldi / "wav.scp").write_text("u1 ../nowhere/u1.wav\n")
        (kaldi / "utt2spk").write_text("u1 s1\n")
        self.scp_missing_audio = kaldi
        rate = folder("rate8k")
        import numpy as np
        import soundfile as sf

        sf.write(rate / "a.wav", np.zeros(8000, dtype=np.int16), 8000, subtype="PCM_16")
        (rate / "wav.scp").write_text("u1 a.wav\n")
        (rate / "utt2spk").write_text("u1 s1\n")
        self.corpus_8k = rate
        # trial lists
        self.trials_bad = r / "trials_bad.txt"
        self.trials_bad.write_text("1 a\n")
        self.trials_empty = r / "trials_empty.txt"
        self.trials_empty.write_text("\n")
        self.trials_unknown = r / "trials_unknown.txt"
        self.trials_unknown.write_text("1 nosuch/utt.wav id10008/x/00001.wav\n")
        # models
        self.model_no_config = folder("model_no_config")
        shutil.copy(teacher / "model.pt", self.model_no_config / "model.pt")
        self.model_bad_json = folder("model_bad_json")
        shutil.copy(teacher / "model.pt", self.model_bad_json / "model.pt")
        (self.model_bad_json / "config.json").write_text("{not json")
        self.model_version = self._model_copy("model_version", lambda c: c.update(kdcache_model_format=7))
        self.model_no_weights = self._model_copy("model_no_weights")
        (self.model_no_weights / "model.pt").unlink()
        self.model_pickle = self._model_copy("model_pickle", lambda c: c["extra"].pop("weights_sha256"))
        (self.model_pickle / "model.pt").write_bytes(_malicious_pickle(r / "executed"))
        self.model_swapped = self._model_copy("model_swapped")
        state = torch.load(teacher / "model.pt", weights_only=True)
        state["projection.weight"] = state["projection.weight"] * 2
        torch.save(state, self.model_swapped / "model.pt")
        self.model_shapes = self._model_copy("model_shapes", lambda c: (c["model_args"].update(embed_dim=16),
                                                                        c.update(embed_dim=16),
                                                                        c["extra"].pop("weights_sha256")))
        self.model_arch = self._model_copy("model_arch", lambda c: c.update(arch="transformer"))
        # WeSpeaker imports
        self.ckpt = r / "avg_model.pt"
        torch.save({k: v for k, v in state.items()}, self.ckpt)
        self.ckpt_not_torch = r / "not_torch.pt"
        self.ckpt_not_torch.write_text("hello")
        self.ckpt_pickle = r / "evil.pt"
        self.ckpt_pickle.write_bytes(_malicious_pickle(r / "executed"))
        self.ckpt_headless = r / "headless.pt"
        torch.save({k: v for k, v in state.items() if k != "projection.weight"}, self.ckpt_headless)
        self.speakers = r / "spk2id"
        self.speakers.write_text("".join(f"s{i} {i}\n" for i in range(8)))
        self.speakers_wrong = r / "spk2id_wrong"
        self.speakers_wrong.write_text("".join(f"s{i} {i}\n" for i in range(5)))
        # caches
        self.not_a_cache = folder("not_a_cache.zarr")
        (self.not_a_cache / "notes.txt").write_text("keep")
        self.plain_zarr = r / "plain.zarr"
        zarr.open_group(str(self.plain_zarr), mode="w")
        self.cache_v99 = self._cache_copy("v99.zarr", lambda a: a.update(format_version=99))
        self.cache_bad_json = r / "bad_json.zarr"
        shutil.copytree(cache, self.cache_bad_json)
        (self.cache_bad_json / "zarr.json").write_text("{garbage")
        self.cache_incomplete = r / "incomplete.zarr"
        shutil.copytree(cache, self.cache_incomplete)
        set_done(self.cache_incomplete, 2, False)
        self.cache_other = r / "other.zarr"  # an existing cache with other settings, for --out
        shutil.copytree(cache, self.cache_other)
        # round two (issue 15): documents that parse but break the schema, BOMs, settings that clash
        self.cache_chunk0 = self._cache_copy("chunk0.zarr", lambda a: a["layout"].update(chunk_rows=0))
        self.cache_no_features = self._cache_copy("no_features.zarr", lambda a: a.pop("features"))
        self.cache_scale_str = self._cache_copy("scale_str.zarr", lambda a: a["teacher"].update(scale="32"))
        self.cache_bad_dtype = r / "bad_dtype.zarr"  # an array's metadata edited to another dtype
        shutil.copytree(cache, self.cache_bad_dtype)
        for meta_path in (self.cache_bad_dtype / "zarr.json", self.cache_bad_dtype / "teacher" / "embedding" / "zarr.json"):
            meta = json.loads(meta_path.read_text())
            node = meta.get("consolidated_metadata", {}).get("metadata", {}).get("teacher/embedding", meta)
            node["data_type"] = "float32"
            meta_path.write_text(json.dumps(meta))
        self.cache_bad_meta = r / "bad_meta.zarr"  # consolidated array metadata that zarr cannot parse
        shutil.copytree(cache, self.cache_bad_meta)
        meta = json.loads((self.cache_bad_meta / "zarr.json").read_text())
        meta["consolidated_metadata"]["metadata"]["rows/label"]["shape"] = "x"
        (self.cache_bad_meta / "zarr.json").write_text(json.dumps(meta))
        self.cache_none_done = r / "none_done.zarr"
        shutil.copytree(cache, self.cache_none_done)
        set_done(self.cache_none_done, slice(None), False)
        self.model_embed_dim = self._model_copy("model_embed_dim", lambda c: c.update(embed_dim=16))
        self.model_bins = self._model_copy("model_bins", lambda c: c["features"].update(num_mel_bins=64))
        self.model_nan_scale = self.root / "model_nan_scale"
        shutil.copytree(teacher, self.model_nan_scale)
        text = (self.model_nan_scale / "config.json").read_text()
        config = json.loads(text)
        config["head"]["scale"] = float("nan")
        (self.model_nan_scale / "config.json").write_text(json.dumps(config))  # NaN: Python's JSON extension
        self.model_bad_weights = self._model_copy("model_bad_weights", lambda c: c["extra"].pop("weights_sha256"))
        (self.model_bad_weights / "model.pt").write_text("hello")
        self.model_dup_speakers = self._model_copy("model_dup", lambda c: c.update(speakers=[c["speakers"][0]] * len(c["speakers"])))
        self.trials_targets_only = r / "trials_targets.txt"
        self.trials_targets_only.write_text("".join(line + "\n" for line in self.trials.read_text().splitlines()
                                                    if line.startswith("1 ")))
        self.speakers_bom = r / "spk2id_bom"
        self.speakers_bom.write_text("\ufeff" + "".join(f"s{i} {i}\r\n" for i in range(8)), encoding="utf-8")
        self.speakers_bad_index = r / "spk2id_bad_index"
        self.speakers_bad_index.write_text("".join(f"s{i} {i + 1}\n" for i in range(8)))
        self.existing_model = r / "existing_model"
        shutil.copytree(teacher, self.existing_model)
        self.noise_empty = folder("noise_empty")
        self.noise = corpus / "noise"
        self.out_file_parent = self.a_file / "cache.zarr"

    def _model_copy(self, name: str, edit: Callable[[dict], object] | None = None) -> Path:
        path = self.root / name
        shutil.copytree(self.teacher, path)
        if edit is not None:
            config = json.loads((path / "config.json").read_text())
            edit(config)
            (path / "config.json").write_text(json.dumps(config))
        return path

    def _cache_copy(self, name: str, edit: Callable[[dict], object]) -> Path:
        path = self.root / name
        shutil.copytree(self.cache, path)
        meta = json.loads((path / "zarr.json").read_text())
        edit(meta["attributes"]["kdcache"])
        (path / "zarr.json").write_text(json.dumps(meta))
        return path


def _malicious_pickle(marker: Path) -> bytes:
    import builtins
    import pickle

    class Payload:
        def __reduce__(self):
            return (builtins.open, (str(marker), "w"))

    return pickle.dumps(Payload())


def student(i: Inputs, *extra) -> list:
    return ["train-student", "--cache", i.cache, "--data", i.train, "--out", i.out, "--student", "xvector",
            "--model-args", json.dumps(STUDENT_ARGS), "--epochs", "1", "--batch-size", "16", "--num-workers", "0",
            "--device", "cpu", *extra]


def teacher_run(i: Inputs, *extra) -> list:
    return ["train-teacher", "--data", i.train, "--arch", "xvector", "--model-args", json.dumps(STUDENT_ARGS),
            "--out", i.out, "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--device", "cpu", *extra]


def build(i: Inputs, *extra, data=None, teacher=None, out=None) -> list:
    return ["build-teacher-cache", "--data", data or i.train, "--teacher", teacher or i.teacher, "--out", out or i.out,
            "--crops-per-utt", "2", "--crop-seconds", "1.0", "--shard-rows", "16", "--chunk-rows", "8",
            "--batch-size", "16", "--num-workers", "0", "--device", "cpu", *extra]


def evaluate(i: Inputs, *extra, model=None, data=None, trials=None) -> list:
    return ["evaluate", "--model", model or i.teacher, "--data", data or i.test, "--trials", trials or i.trials, *extra]


def wespeaker(i: Inputs, ckpt=None, speakers=None, *extra) -> list:
    return ["import-wespeaker", ckpt or i.ckpt, "--arch", "resnet34", "--speakers", speakers or i.speakers,
            "--model-args", json.dumps({"m_channels": 4, "embed_dim": 32}), "--out", i.out, *extra]


CASES = [
    # global
    Case("kdcache", "unknown command", lambda i: ["train-stduent"], 2, "No such command 'train-stduent'"),
    Case("kdcache", "--threads 0", lambda i: ["--threads", "0", "cache", "info", i.cache], 2, "--threads"),
    # make-synthetic-corpus
    Case("make-synthetic-corpus", "OUT not empty", lambda i: ["make-synthetic-corpus", i.not_a_cache], 2,
         "exists and is not an empty folder"),
    Case("make-synthetic-corpus", "--utterances-per-speaker 1",
         lambda i: ["make-synthetic-corpus", i.out, "--utterances-per-speaker", "1"], 2, "2<=x<=1000"),
    Case("make-synthetic-corpus", "--seconds inf", lambda i: ["make-synthetic-corpus", i.out, "--seconds", "inf"], 2,
         "--seconds"),
    Case("make-synthetic-corpus", "--speakers 1", lambda i: ["make-synthetic-corpus", i.out, "--speakers", "1"], 2,
         "--speakers"),
    # train-teacher
    Case("train-teacher", "--data missing", lambda i: teacher_run(i)[:2] + [i.root / "nope"] + teacher_run(i)[3:], 2,
         "corpus not found"),
    Case("train-teacher", "--data is a file", lambda i: teacher_run(i)[:2] + [i.a_file] + teacher_run(i)[3:], 2,
         "not a folder"),
    Case("train-teacher", "--data empty folder", lambda i: teacher_run(i)[:2] + [i.empty_dir] + teacher_run(i)[3:],
         2, "no wav.scp and no .wav files"),
    Case("train-teacher", "wav.scp names a missing file",
         lambda i: teacher_run(i)[:2] + [i.scp_missing_audio] + teacher_run(i)[3:], 2, "audio file not found"),
    Case("train-teacher", "audio not 16 kHz", lambda i: teacher_run(i)[:2] + [i.corpus_8k] + teacher_run(i)[3:], 2,
         "sample rate 8000 Hz"),
    Case("train-teacher", "--arch unknown", lambda i: teacher_run(i)[:4] + ["transformer"] + teacher_run(i)[5:], 2,
         "unknown model 'transformer'"),
    Case("train-teacher", "--model-args not JSON", lambda i: teacher_run(i)[:6] + ["{m_channels: 4}"] + teacher_run(i)[7:],
         2, "--model-args: not JSON"),
    Case("train-teacher", "--model-args not an object", lambda i: teacher_run(i)[:6] + ["[4]"] + teacher_run(i)[7:], 2,
         "expected a JSON object"),
    Case("train-teacher", "--model-args unknown key", lambda i: teacher_run(i)[:6] + ['{"width": 4}'] + teacher_run(i)[7:],
         2, "unknown argument(s) width"),
    Case("train-teacher", "--model-args bad value", lambda i: teacher_run(i)[:6] + ['{"hid_dim": -4}'] + teacher_run(i)[7:],
         2, "must be an integer in [1, 65536]"),
    Case("train-teacher", "--crop-seconds inf", lambda i: teacher_run(i, "--crop-seconds", "inf"), 2, "finite"),
    Case("train-teacher", "--grad-clip nan", lambda i: teacher_run(i, "--grad-clip", "nan"), 2, "finite"),
    Case("train-teacher", "--out inside a file", lambda i: teacher_run(i)[:8] + [i.a_file / "run"] + teacher_run(i)[9:],
         2, "is a file, not a folder"),
    Case("train-teacher", "--epochs 0", lambda i: teacher_run(i, "--epochs", "0"), 2, "--epochs"),
    Case("train-teacher", "--augment-noise missing", lambda i: teacher_run(i, "--augment-noise", i.root / "nope"), 2,
         "--augment-noise"),
    Case("train-teacher", "--augment-noise without audio", lambda i: teacher_run(i, "--augment-noise", i.noise_empty), 2,
         "noise_empty"),
    Case("train-teacher", "--device unknown", lambda i: teacher_run(i)[:-2] + ["--device", "tpu"], 2, "--device"),
    Case("train-teacher", "--device cuda:7 (absent)", lambda i: teacher_run(i)[:-2] + ["--device", "cuda:7"], 2, "cuda"),
    # evaluate
    Case("evaluate", "--model missing", lambda i: evaluate(i, model=i.root / "nope"), 2, "model directory not found"),
    Case("evaluate", "model without config.json", lambda i: evaluate(i, model=i.model_no_config), 2,
         "missing model config"),
    Case("evaluate", "config.json not JSON", lambda i: evaluate(i, model=i.model_bad_json), 2, "invalid JSON"),
    Case("evaluate", "model format version", lambda i: evaluate(i, model=i.model_version), 2,
         "model format version 7 is not supported"),
    Case("evaluate", "model.pt missing", lambda i: evaluate(i, model=i.model_no_weights), 2, "checkpoint file not found"),
    Case("evaluate", "model.pt is a malicious pickle", lambda i: evaluate(i, model=i.model_pickle), 2,
         "refused to load"),
    Case("evaluate", "model.pt swapped (sha256)", lambda i: evaluate(i, model=i.model_swapped), 2,
         "sha256 differs"),
    Case("evaluate", "weights of another shape", lambda i: evaluate(i, model=i.model_shapes), 2,
         "weights do not fit the configured model"),
    Case("evaluate", "unknown arch in config", lambda i: evaluate(i, model=i.model_arch), 2, "unknown model"),
    Case("evaluate", "--trials missing", lambda i: evaluate(i, trials=i.root / "nope.txt"), 2, "trial list not found"),
    Case("evaluate", "--trials malformed line", lambda i: evaluate(i, trials=i.trials_bad), 2, "trials_bad.txt:1"),
    Case("evaluate", "--trials empty", lambda i: evaluate(i, trials=i.trials_empty), 2, "trial list is empty"),
    Case("evaluate", "trial utterance not in --data", lambda i: evaluate(i, trials=i.trials_unknown), 2,
         "utterance 'nosuch/utt.wav' is not in the corpus"),
    Case("evaluate", "--data missing", lambda i: evaluate(i, data=i.root / "nope"), 2, "corpus not found"),
    Case("evaluate", "--score-norm asnorm without --cohort", lambda i: evaluate(i, "--score-norm", "asnorm"), 2,
         "needs --cohort"),
    Case("evaluate", "--cohort missing", lambda i: evaluate(i, "--cohort", i.root / "nope"), 2, "corpus not found"),
    Case("evaluate", "config.json embed_dim disagrees with the weights", lambda i: evaluate(i, model=i.model_embed_dim), 2,
         "config.embed_dim is 16 but the model's embeddings have 32"),
    Case("evaluate", "config.json num_mel_bins disagrees with the model", lambda i: evaluate(i, model=i.model_bins), 2,
         "num_mel_bins is 64 but the model takes 80"),
    Case("evaluate", "config.json head scale NaN", lambda i: evaluate(i, model=i.model_nan_scale), 2,
         "config.head.scale must be a finite number"),
    Case("evaluate", "config.json speakers repeated", lambda i: evaluate(i, model=i.model_dup_speakers), 2,
         "config.speakers lists"),
    Case("evaluate", "--trials with only target trials", lambda i: evaluate(i, trials=i.trials_targets_only), 2,
         "no non-target trials"),
    Case("evaluate", "--top-n huge", lambda i: evaluate(i, "--top-n", "100000000000"), 2, "--top-n"),
    # import-wespeaker
    Case("import-wespeaker", "checkpoint missing", lambda i: wespeaker(i, ckpt=i.root / "nope.pt"), 2,
         "checkpoint file not found"),
    Case("import-wespeaker", "checkpoint not a torch file", lambda i: wespeaker(i, ckpt=i.ckpt_not_torch), 2,
         "not a readable torch checkpoint"),
    Case("import-wespeaker", "checkpoint is a malicious pickle", lambda i: wespeaker(i, ckpt=i.ckpt_pickle), 2,
         "refused to load"),
    Case("import-wespeaker", "no projection.weight", lambda i: wespeaker(i, ckpt=i.ckpt_headless), 2,
         "no 'projection.weight'"),
    Case("import-wespeaker", "--speakers missing", lambda i: wespeaker(i, speakers=i.root / "nope"), 2,
         "speaker list not found"),
    Case("import-wespeaker", "--speakers count differs", lambda i: wespeaker(i, speakers=i.speakers_wrong), 2,
         "head has 8 classes but"),
    Case("import-wespeaker", "--arch of other weights",
         lambda i: ["import-wespeaker", i.ckpt, "--arch", "xvector", "--speakers", i.speakers, "--out", i.out], 2,
         "weights do not fit the configured model"),
    Case("import-wespeaker", "--out holds a model", lambda i: wespeaker(i)[:-1] + [i.existing_model], 2,
         "exists and is not an empty folder"),
    Case("import-wespeaker", "--speakers indices not 0..n-1", lambda i: wespeaker(i, speakers=i.speakers_bad_index), 2,
         "the indices must number the 8 speakers"),
    Case("import-wespeaker", "--model-args of another size", lambda i: wespeaker(i)[:7] + ['{"m_channels": 8}'] + wespeaker(i)[8:],
         2, "wrong shape"),
    # build-teacher-cache
    Case("build-teacher-cache", "--data missing", lambda i: build(i, data=i.root / "nope"), 2, "corpus not found"),
    Case("build-teacher-cache", "--teacher missing", lambda i: build(i, teacher=i.root / "nope"), 2,
         "model directory not found"),
    Case("build-teacher-cache", "--teacher is a malicious pickle", lambda i: build(i, teacher=i.model_pickle), 2,
         "refused to load"),
    Case("build-teacher-cache", "speakers unknown to the teacher", lambda i: build(i, data=i.test), 2,
         "--allow-unknown-speakers"),
    Case("build-teacher-cache", "--out holds other files", lambda i: build(i, out=i.not_a_cache), 2,
         "exists and is not a kdcache cache"),
    Case("build-teacher-cache", "--out holds a cache of other settings",
         lambda i: build(i, "--crops-per-utt", "3", out=i.cache_other), 2, "--overwrite"),
    Case("build-teacher-cache", "--out inside a file", lambda i: build(i, out=i.out_file_parent), 2, "a_file.txt"),
    Case("build-teacher-cache", "--shard-rows not a multiple of --chunk-rows",
         lambda i: build(i, "--shard-rows", "20"), 2, "must be a multiple of --chunk-rows"),
    Case("build-teacher-cache", "--ig-durations bad", lambda i: build(i, "--saliency", "--ig-durations", "2,x"), 2,
         "--ig-durations"),
    Case("build-teacher-cache", "--crop-seconds inf", lambda i: build(i, "--crop-seconds", "inf"), 2,
         "'inf' is not a finite number"),
    Case("build-teacher-cache", "--crop-seconds nan", lambda i: build(i, "--crop-seconds", "nan"), 2,
         "'nan' is not a finite number"),
    Case("build-teacher-cache", "--crops-per-utt huge", lambda i: build(i, "--crops-per-utt", "1000000000"), 2, "--crops-per-utt"),
    Case("build-teacher-cache", "--ig-durations inf", lambda i: build(i, "--saliency", "--ig-durations", "2,inf"), 2,
         "every value must be a finite number"),
    Case("build-teacher-cache", "--teacher config.json embed_dim disagrees",
         lambda i: build(i, teacher=i.model_embed_dim), 2, "config.embed_dim is 16"),
    Case("build-teacher-cache", "--logits unknown", lambda i: build(i, "--logits", "int4"), 2, "--logits"),
    # train-student
    Case("train-student", "--cache missing", lambda i: student(i)[:2] + [i.root / "nope.zarr"] + student(i)[3:], 2,
         "nope.zarr: cache not found"),
    Case("train-student", "--cache not a cache", lambda i: student(i)[:2] + [i.not_a_cache] + student(i)[3:], 2,
         "not a kdcache cache"),
    Case("train-student", "--cache plain zarr group", lambda i: student(i)[:2] + [i.plain_zarr] + student(i)[3:], 2,
         "not a kdcache cache"),
    Case("train-student", "--cache format version 99", lambda i: student(i)[:2] + [i.cache_v99] + student(i)[3:], 2,
         "format version 99 is not supported"),
    Case("train-student", "--cache incomplete", lambda i: student(i)[:2] + [i.cache_incomplete] + student(i)[3:], 2,
         "--allow-incomplete"),
    Case("train-student", "--cache unreachable URL",
         lambda i: student(i)[:2] + ["http://127.0.0.1:9/c.zarr"] + student(i)[3:], 2, "cannot reach the cache"),
    Case("train-student", "--data another corpus", lambda i: student(i)[:4] + [i.test] + student(i)[5:], 2,
         "does not match the cache"),
    Case("train-student", "--loss imlkd on a cache without saliency", lambda i: student(i, "--loss", "imlkd"), 2,
         "rebuild the cache with --saliency"),
    Case("train-student", "--loss unknown", lambda i: student(i, "--loss", "crd"), 2, "--loss"),
    Case("train-student", "--student unknown", lambda i: student(i)[:8] + ["lstm"] + student(i)[9:], 2,
         "unknown model 'lstm'"),
    Case("train-student", "--batch-size above the rows", lambda i: student(i, "--batch-size", "4096"), 2,
         "--batch-size 4096 is larger"),
    Case("train-student", "--device cuda:7", lambda i: student(i)[:-2] + ["--device", "cuda:7"], 2, "--device cuda"),
    Case("train-student", "--lr 0", lambda i: student(i, "--lr", "0"), 2, "--lr"),
    Case("train-student", "--lr nan", lambda i: student(i, "--lr", "nan"), 2, "'nan' is not a finite number"),
    Case("train-student", "--temperature inf", lambda i: student(i, "--temperature", "inf"), 2, "--temperature"),
    Case("train-student", "--beta -1", lambda i: student(i, "--beta", "-1"), 2, "--beta"),
    Case("train-student", "--seed -1", lambda i: student(i, "--seed", "-1"), 2, "--seed"),
    Case("train-student", "--temperatures nan", lambda i: student(i, "--temperatures", "1,nan"), 2,
         "every value must be a finite number"),
    Case("train-student", "--cache layout.chunk_rows 0", lambda i: student(i)[:2] + [i.cache_chunk0] + student(i)[3:], 2,
         "layout.chunk_rows must be an integer in [1,"),
    Case("train-student", "--cache without features", lambda i: student(i)[:2] + [i.cache_no_features] + student(i)[3:],
         2, "attributes.kdcache.features is missing"),
    Case("train-student", "--cache teacher.scale a string", lambda i: student(i)[:2] + [i.cache_scale_str] + student(i)[3:],
         2, "teacher.scale must be a finite number"),
    Case("train-student", "--cache array dtype edited", lambda i: student(i, "--loss", "embedding")[:2] + [i.cache_bad_dtype]
         + student(i, "--loss", "embedding")[3:], 1, "teacher/embedding has dtype float32, expected float16"),
    Case("train-student", "--allow-incomplete, no shard done",
         lambda i: student(i, "--allow-incomplete")[:2] + [i.cache_none_done] + student(i, "--allow-incomplete")[3:], 2,
         "no shard of the cache is finished"),
    Case("train-student", "--out inside a file", lambda i: student(i)[:6] + [i.a_file / "run"] + student(i)[7:], 2,
         "a_file.txt is a file, not a folder; choose another --out"),
    Case("train-student", "--trials utterance not in --eval-data",
         lambda i: student(i, "--trials", i.trials_unknown, "--eval-data", i.test), 2, "is not in the corpus"),
    Case("train-student", "--temperatures bad", lambda i: student(i, "--temperatures", "1,two"), 2, "--temperatures"),
    Case("train-student", "--trials without --eval-data", lambda i: student(i, "--trials", i.trials), 2,
         "--trials and --eval-data go together"),
    Case("train-student", "--trials missing", lambda i: student(i, "--trials", i.root / "nope", "--eval-data", i.test), 2,
         "trial list not found"),
    Case("train-student", "--augment-noise for a cache built without",
         lambda i: student(i, "--augment-noise", i.noise), 2, "built without augmentation"),
    Case("train-student", "--out holds a run, no --resume", lambda i: student(i)[:6] + [i.root / "run"] + student(i)[7:],
         2, "use --resume"),
    # cache info / verify / pull
    Case("cache info", "CACHE missing", lambda i: ["cache", "info", i.root / "nope.zarr"], 2, "cache not found"),
    Case("cache info", "CACHE zarr.json not JSON", lambda i: ["cache", "info", i.cache_bad_json], 2,
         "cannot open the cache: Expecting"),
    Case("cache info", "CACHE a plain zarr group", lambda i: ["cache", "info", i.plain_zarr], 2,
         "not a kdcache cache"),
    Case("cache info", "CACHE format version 99", lambda i: ["cache", "info", i.cache_v99], 2, "version 99"),
    Case("cache info", "CACHE layout.chunk_rows 0", lambda i: ["cache", "info", i.cache_chunk0], 2, "layout.chunk_rows"),
    Case("cache info", "CACHE array metadata malformed", lambda i: ["cache", "info", i.cache_bad_meta], 2,
         "malformed metadata in zarr.json"),
    Case("cache info", "CACHE unreachable URL", lambda i: ["cache", "info", "http://127.0.0.1:9/c.zarr"], 2,
         "cannot reach the cache"),
    Case("cache info", "CACHE unknown protocol", lambda i: ["cache", "info", "ftp2://host/c.zarr"], 2,
         "Protocol not known"),
    Case("cache verify", "--teacher without --data", lambda i: ["cache", "verify", i.cache, "--teacher", i.teacher], 2,
         "--teacher needs --data"),
    Case("cache verify", "CACHE layout.chunk_rows 0", lambda i: ["cache", "verify", i.cache_chunk0], 2, "layout.chunk_rows"),
    Case("cache verify", "CACHE array dtype edited", lambda i: ["cache", "verify", i.cache_bad_dtype], 1,
         "verification failed"),
    Case("cache verify", "--sample 0", lambda i: ["cache", "verify", i.cache, "--sample", "0"], 2, "--sample"),
    Case("cache verify", "incomplete cache", lambda i: ["cache", "verify", i.cache_incomplete], 1,
         "verification failed"),
    Case("cache pull", "DEST holds other files", lambda i: ["cache", "pull", i.cache, i.not_a_cache, "--no-progress"], 2,
         "not empty and is not a kdcache cache"),
    Case("cache pull", "DEST holds another cache", lambda i: ["cache", "pull", i.cache, i.cache_v99, "--no-progress"], 2,
         "holds another cache"),
    Case("cache pull", "DEST is the source", lambda i: ["cache", "pull", i.cache, i.cache, "--no-progress"], 2,
         "is the source itself"),
    Case("cache pull", "URL unreachable", lambda i: ["cache", "pull", "http://127.0.0.1:9/c.zarr", i.out], 2,
         "cannot reach the cache"),
    Case("cache pull", "--workers 0", lambda i: ["cache", "pull", i.cache, i.out, "--workers", "0"], 2, "--workers"),
]


@pytest.fixture(scope="module")
def inputs(tiny_corpus, tiny_teacher, fault_cache, tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad_inputs")
    made = Inputs(root, tiny_corpus, tiny_teacher, fault_cache)
    run = root / "run"  # a finished student run, for "--out holds a run"
    result = run_cli(*student(made)[:6], run, *student(made)[7:])
    assert result.code == 0, result.stderr
    return made


def run_case(case: Case, inputs: Inputs) -> Result:
    shutil.rmtree(inputs.out, ignore_errors=True)
    return run_cli(*case.args(inputs))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}: {c.what}" for c in CASES])
def test_bad_input_gives_one_line_and_the_documented_status(case, inputs):
    result = run_case(case, inputs)
    line = one_line_error(result)
    assert result.code == case.code, (result.code, result.stderr)
    assert case.fragment in line, line
    assert not (inputs.root / "executed").exists()  # no planted pickle ran


def test_s3_without_s3fs_names_the_extra(inputs, monkeypatch):
    # s3fs is a dev dependency; hide it as an install without the [s3] extra would lack it. Once an
    # earlier test imported it, fsspec's registry holds its class: drop that too (order-independent).
    registry = importlib.import_module("fsspec.registry")._registry  # the package attribute is a read-only view
    monkeypatch.setitem(sys.modules, "s3fs", None)
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(registry, protocol, raising=False)
    args = student(inputs)
    result = run_cli(*args[:2], "s3://bucket/c.zarr", *args[3:])
    assert result.code == 2 and "kdcache[s3]" in one_line_error(result)


def test_debug_shows_the_traceback(inputs):
    from click.testing import CliRunner

    from cli.main import main

    result = CliRunner().invoke(main, ["--debug", "cache", "info", str(inputs.root / "nope.zarr")])
    assert result.exit_code != 0 and type(result.exception).__name__ == "KdcacheError"


def test_a_real_process_prints_no_traceback(inputs):
    from tests.faults.conftest import run_cli_process

    result = run_cli_process("train-student", "--cache", inputs.cache_v99, "--data", inputs.train, "--out", inputs.out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("kdcache: error:")]


def markdown_table(inputs: Inputs) -> str:
    """The table of docs/robustness.md: each case with the message the command gives now."""
    rows = ["| command | wrong input | exit | message (one line on stderr) |", "|---|---|---|---|"]
    for case in CASES:
        result = run_case(case, inputs)
        line = next(iter([x for x in result.stderr.splitlines() if x.startswith(("kdcache: error:", "Error:"))]), "")
        for path, name in ((inputs.root, "TMP"), (inputs.corpus, "CORPUS"), (inputs.cache.parent, "CACHEDIR"),
                           (inputs.teacher, "TEACHER")):
            line = line.replace(str(path), name)
        line = line.replace("|", "\\|")
        rows.append(f"| `{case.command}` | {case.what} | {result.code} | `{line}` |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m tests.faults.test_bad_input: print the Markdown table
    import tempfile

    from kdcache.data.synthetic import make_synthetic_corpus
    from kdcache.train.teacher import TeacherTrainConfig, train_teacher
    from tests.conftest import TINY_TEACHER_ARGS

    base = Path(tempfile.mkdtemp(prefix="kdcache-bad-input-"))
    corpus = make_synthetic_corpus(base / "corpus", speakers=8, utterances_per_speaker=4, seconds=1.5,
                                   test_speakers=4, seed=3)
    teacher = base / "teacher"
    train_teacher(TeacherTrainConfig(data=str(corpus / "train"), arch="resnet34", out=str(teacher), epochs=2,
                                     batch_size=8, crop_seconds=1.0, num_workers=0, device="cpu",
                                     model_args=dict(TINY_TEACHER_ARGS), show_progress=False))
    cache = build_cache(Path(corpus), teacher, base / "cache" / "cache.zarr")
    made = Inputs(base / "inputs", Path(corpus), teacher, cache)
    run_cli(*student(made)[:6], made.root / "run", *student(made)[7:])
    print(markdown_table(made))
    shutil.rmtree(base)
