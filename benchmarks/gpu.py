"""GPU measurements (bf16 autocast, DataLoader workers, pinned memory); every part is skipped without CUDA.

- step ratio: ``train_student`` on the GPU from one cache with ``--loss dkd`` and ``--loss ce``; the ratio
  of their epoch times (train_log.jsonl ``seconds``: the epoch loop only, start-up excluded), runs interleaved;
- build: rows/s of ``build_teacher_cache`` (``--num-workers`` DataLoader workers, pinned memory, the write
  in a background thread) against the teacher forward alone on the same fbank batches already on the GPU;
- ResNet293: rows/s of WeSpeaker's ResNet293 (m_channels 32, 5994 speakers) forward at batch 256 of 2 s
  crops (200 x 80 fbank) under bf16 autocast, inference mode.

    python benchmarks/gpu.py [--quick]       # on CPU: prints that the GPU parts are skipped, writes the JSON
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)

import torch  # noqa: E402


def resnet293_rows_per_s(batch: int, iters: int) -> dict:
    from kdcache.distributed import autocast_for
    from kdcache.models import build_model
    from kdcache.models.projection import attach_head

    dev = torch.device("cuda")
    model = build_model("resnet293")
    attach_head(model, 5994)
    model = model.to(dev).eval()
    feats = torch.randn(batch, 200, 80, device=dev)
    with torch.inference_mode(), autocast_for(dev):
        for _ in range(3):
            model.projection.cosine_logits(model(feats))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model.projection.cosine_logits(model(feats))
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    return {"rows_per_s": batch * iters / secs, "batch": batch, "iters": iters, "seconds": secs,
            "parameters": sum(p.numel() for p in model.parameters())}


def build_vs_forward(wd: Path, data: Path, speakers: list[str], workers: int, repeats: int) -> dict:
    import build as B

    from kdcache.models.checkpoint import load_model_dir
    from kdcache.teacher.build import BuildConfig, TeacherRunner, build_teacher_cache

    teacher = B.save_teacher(wd / "teacher", "resnet34", {}, speakers)
    dev = torch.device("cuda")
    model, _ = load_model_dir(teacher, map_location=dev)
    runner = TeacherRunner(model, dev, BuildConfig(data="", teacher="", out=""), [200, 100])
    batches = [b.to(dev) for b in B.batches_of(data, 4, 128)]
    rows = sum(len(b) for b in batches)
    n = [0]

    def forward_only() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for feats in batches:
            runner.forward(feats)
        torch.cuda.synchronize()
        return rows / (time.perf_counter() - t0)

    def build() -> float:
        n[0] += 1
        out = wd / f"cache{n[0]}.zarr"
        summary = build_teacher_cache(BuildConfig(data=str(data), teacher=str(teacher), out=str(out), crops_per_utt=4,
                                                  batch_size=128, num_workers=workers, device="cuda",
                                                  show_progress=False))
        shutil.rmtree(out)
        return summary.rows_per_second

    runs = C.interleaved({"build": build, "teacher forward only": forward_only}, repeats=repeats, warmup=1)
    return {"rows": rows, "num_workers": workers, "rows_per_s": {k: C.summary(v) for k, v in runs.items()},
            "ratio": C.median(runs["build"]) / C.median(runs["teacher forward only"])}


def step_ratio(wd: Path, data: Path, cache: Path, repeats: int, epochs: int) -> dict:
    from kdcache.train.student import StudentTrainConfig, train_student

    n = [0]

    def run(loss: str) -> float:
        n[0] += 1
        out = wd / f"student-{loss}-{n[0]}"
        train_student(StudentTrainConfig(
            cache=str(cache), data=str(data), student="resnet34", loss=loss, out=str(out), epochs=epochs,
            batch_size=128, num_workers=4, device="cuda", show_progress=False, seed=0,
            **({"beta": 8.0, "temperature": 2.0} if loss == "dkd" else {})))
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        shutil.rmtree(out)
        return sum(r["seconds"] for r in log) / sum(1 for _ in log)

    runs = C.interleaved({"ce": lambda: run("ce"), "dkd": lambda: run("dkd")}, repeats=repeats, warmup=0)
    return {"epoch_seconds": {k: C.summary(v) for k, v in runs.items()},
            "dkd_over_ce": C.median(runs["dkd"]) / C.median(runs["ce"])}


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the build and of training")
    args = p.parse_args()
    settings = C.set_threads(args.threads) | {"device": "cuda", "autocast": "bf16"}
    payload: dict = {}
    if not torch.cuda.is_available():
        print("CUDA is not available: the GPU measurements are skipped (run this on a machine with a GPU)", flush=True)
        C.print_table("GPU check", ["measure", "value"], [["cuda", "not available: skipped"]])
        C.write_json("gpu", {"skipped": "CUDA not available"}, args.out, args, settings)
        return
    import fixtures as F

    quick = args.quick
    repeats = args.repeats or (1 if quick else 2)
    started = time.perf_counter()
    payload["device_name"] = torch.cuda.get_device_name(0)
    payload["resnet293"] = resnet293_rows_per_s(256, 5 if quick else 20)
    print(f"ResNet293 batch 256: {payload['resnet293']['rows_per_s']:,.0f} rows/s", flush=True)
    with C.Workdir(args.workdir, "gpu") as wd:
        data = F.make_corpus(wd / "corpus", speakers=32 if quick else 64, utterances_per_speaker=8)
        from kdcache.data.corpus import load_corpus

        speakers = F.label_space(load_corpus(data))
        payload["build"] = build_vs_forward(wd, data, speakers, args.workers, repeats)
        print(f"build / forward: {payload['build']['ratio']:.3f}", flush=True)
        cache = F.write_cache(wd / "cache.zarr", data, F.CacheSpec(embed_dim=256, crops_per_utt=8))
        payload["train_step"] = step_ratio(wd, data, cache, repeats, epochs=1 if quick else 2)
        print(f"cached dkd / ce epoch time: {payload['train_step']['dkd_over_ce']:.3f}", flush=True)
    payload["seconds"] = time.perf_counter() - started
    C.print_table(f"GPU ({payload['device_name']}, bf16 autocast)", ["measure", "value", "goal", "verdict"], [
        ["cached dkd / ce epoch time", payload["train_step"]["dkd_over_ce"], "<= 1.05",
         C.verdict(payload["train_step"]["dkd_over_ce"], "<= 1.05")],
        ["build rows/s / teacher-forward rows/s", payload["build"]["ratio"], ">= 0.90",
         C.verdict(payload["build"]["ratio"], ">= 0.90")],
        ["ResNet293 rows/s at batch 256", payload["resnet293"]["rows_per_s"], "reported", ""],
    ])
    C.write_json("gpu", payload, args.out, args, settings)


if __name__ == "__main__":
    main()
