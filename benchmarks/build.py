"""Cache-build throughput against the teacher alone, on the same crops and batches.

1. No saliency: ``build_teacher_cache`` (DataLoader worker for audio + fbank, teacher forward, float16
   conversion and zarr writes in a background thread, progress marks) vs ``TeacherRunner.forward`` alone
   on the same fbank batches already in memory. Goal: build / forward-only >= 0.90.
2. With saliency: the build with ``--saliency`` (forward, IG maps over the crop and its halves, teacher on
   the integrated inputs, writes) vs Captum IG alone (``multi_duration_saliency``) on the same batches.
   Reported (IG is ~100 teacher forward+backward passes a row, so everything else should vanish).

Teachers are random-weight models with an AAM head of S = 5994 speakers (the label space is the corpus's
speakers plus padding speakers), saved as model directories, as ``kdcache build-teacher-cache`` reads
them. 1 torch thread in this process, 1 DataLoader worker (the CLI defaults).

    python benchmarks/build.py --quick
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402

import torch  # noqa: E402

from kdcache.data.corpus import load_corpus  # noqa: E402
from kdcache.data.crops import CropPlan, plan_rows  # noqa: E402
from kdcache.data.datasets import ReplayDataset  # noqa: E402
from kdcache.data.features import FeatureConfig  # noqa: E402
from kdcache.models import attach_head, build_model  # noqa: E402
from kdcache.models.checkpoint import ModelConfig, load_model_dir, save_model_dir  # noqa: E402
from kdcache.teacher.build import BuildConfig, TeacherRunner, build_teacher_cache  # noqa: E402
from kdcache.teacher.saliency import multi_duration_saliency  # noqa: E402


def save_teacher(path: Path, arch: str, args: dict, speakers: list[str]) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, **args)
    attach_head(model, len(speakers), scale=F.SCALE)
    config = ModelConfig(arch=arch, model_args=dict(model.model_args), embed_dim=int(model.embed_dim),
                         speakers=speakers, features=FeatureConfig().to_dict(), head_scale=F.SCALE, head_margin=0.2)
    save_model_dir(path, model, config)
    return path


def _cpu() -> float:
    """User + system CPU seconds of this process and its reaped children (the DataLoader worker)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def batches_of(data: Path, crops: int, batch: int, limit: int | None = None):
    """The fbank batches and labels the build computes (same crop plan, same batching within shards)."""
    corpus = load_corpus(data)
    feats_cfg = FeatureConfig()
    rows = plan_rows(corpus.num_samples, CropPlan(2.0, crops, 0), feats_cfg.crop_num_samples(2.0))
    recipes = {"utterance": rows.utterance, "start": rows.start, "num_samples": rows.num_samples,
               "aug_seed": rows.aug_seed}
    ds = ReplayDataset(corpus, recipes, feats_cfg)
    n = len(ds) if limit is None else min(limit, len(ds))
    out = []
    for s in range(0, n, batch):
        out.append(torch.stack([ds[i][1] for i in range(s, min(s + batch, n))]))
    return out


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--teacher", default="xvector", help="teacher of the no-saliency build")
    p.add_argument("--teacher-args", default="{}")
    p.add_argument("--ig-teacher-args", default='{"hid_dim": 128, "stats_dim": 384, "embed_dim": 128}',
                   help="x-vector arguments of the (smaller) teacher of the saliency build")
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    settings = C.set_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    crops = 8 if quick else 32
    ig_rows = 8 if quick else 64
    ig_batch = 8 if quick else 16
    settings |= {"repeats": repeats, "batch_size": args.batch_size, "crops_per_utt": crops, "num_workers": 1,
                 "ig_steps": args.ig_steps, "ig_rows": ig_rows, "ig_batch_size": ig_batch,
                 "ig_durations_s": [2.0, 1.0], "device": "cpu"}
    started = time.perf_counter()
    with C.Workdir(args.workdir, "build") as wd:
        data = F.make_corpus(wd / "corpus", speakers=16, utterances_per_speaker=4)
        # the saliency build: one crop of each of ig_rows utterances
        ig_data = data if ig_rows == 64 else F.make_corpus(wd / "ig-corpus", speakers=ig_rows // 2,
                                                              utterances_per_speaker=2, seed=1)
        speakers = F.label_space([load_corpus(data), load_corpus(ig_data)])
        teacher_dir = save_teacher(wd / "teacher", args.teacher, json.loads(args.teacher_args), speakers)
        ig_teacher_dir = save_teacher(wd / "ig-teacher", "xvector", json.loads(args.ig_teacher_args), speakers)
        n_build = [0]
        cpu: dict[str, list[float]] = {k: [] for k in ("build (no saliency)", "teacher forward only",
                                                         "build (saliency)", "Captum IG alone")}

        def build(saliency: bool) -> float:
            n_build[0] += 1
            out = wd / f"cache{n_build[0]}.zarr"
            cfg = BuildConfig(data=str(ig_data if saliency else data),
                              teacher=str(ig_teacher_dir if saliency else teacher_dir), out=str(out),
                              crops_per_utt=1 if saliency else crops, saliency=saliency, ig_steps=args.ig_steps,
                              batch_size=ig_batch if saliency else args.batch_size,
                              shard_rows=ig_rows if saliency else 4096, chunk_rows=min(16, ig_rows) if saliency else 64,
                              num_workers=1, device="cpu", show_progress=False)
            c0 = _cpu()
            summary = build_teacher_cache(cfg)
            cpu[("build (saliency)" if saliency else "build (no saliency)")].append((_cpu() - c0) / summary.rows)
            shutil.rmtree(out)
            return summary.rows_per_second

        # no saliency: the build vs the teacher forward on the same batches
        model, _ = load_model_dir(teacher_dir)
        runner = TeacherRunner(model, torch.device("cpu"), BuildConfig(data="", teacher="", out=""), [200, 100])
        fbanks = batches_of(data, crops, args.batch_size)
        n_rows = sum(len(b) for b in fbanks)

        def forward_only() -> float:
            t0, c0 = time.perf_counter(), _cpu()
            for feats in fbanks:
                runner.forward(feats)
            cpu["teacher forward only"].append((_cpu() - c0) / n_rows)
            return n_rows / (time.perf_counter() - t0)

        for feats in fbanks[:1]:  # warm-up
            runner.forward(feats)
        plain = C.interleaved({"build (no saliency)": lambda: build(False), "teacher forward only": forward_only},
                              repeats=repeats, warmup=0)

        # saliency: the build (one shard of ig_rows rows) vs Captum IG alone on the same batches
        ig_model, _ = load_model_dir(ig_teacher_dir)
        ig_fbanks = batches_of(ig_data, 1, ig_batch)
        labels = torch.zeros(ig_batch, dtype=torch.long)

        def ig_only() -> float:
            t0, c0 = time.perf_counter(), _cpu()
            for feats in ig_fbanks:
                multi_duration_saliency(ig_model, feats, labels[: len(feats)], [200, 100], args.ig_steps)
            cpu["Captum IG alone"].append((_cpu() - c0) / ig_rows)
            return ig_rows / (time.perf_counter() - t0)

        multi_duration_saliency(ig_model, ig_fbanks[0][:2], labels[:2], [200, 100], 2)  # warm-up
        sal = C.interleaved({"build (saliency)": lambda: build(True), "Captum IG alone": ig_only},
                            repeats=1 if quick else 2, warmup=0)

    med = {**{k: C.median(v) for k, v in plain.items()}, **{k: C.median(v) for k, v in sal.items()}}
    cmed = {k: C.median(v) for k, v in cpu.items()}
    C.print_table(f"Build throughput (rows/s, median; batch {args.batch_size}; teacher {args.teacher} "
                  f"{args.teacher_args}, S = {F.VOX2_SPEAKERS}; CPU = this process + the DataLoader worker)",
                  ["variant", "rows/s", "min", "max", "CPU ms/row"],
                  [[k, C.median(v), min(v), max(v), 1000 * cmed[k]] for k, v in {**plain, **sal}.items()])
    r1 = med["build (no saliency)"] / med["teacher forward only"]
    r2 = med["build (saliency)"] / med["Captum IG alone"]
    c1 = cmed["teacher forward only"] / cmed["build (no saliency)"]
    paired = [b / f for b, f in zip(plain["build (no saliency)"], plain["teacher forward only"])]
    goals = [["build / teacher-forward-only rows/s (no saliency)", r1, ">= 0.90", C.verdict(r1, ">= 0.90")],
             ["  same, median of per-round ratios", C.median(paired), ">= 0.90", C.verdict(C.median(paired), ">= 0.90")],
             ["  same in CPU time per row (forward CPU / build CPU)", c1, ">= 0.90", C.verdict(c1, ">= 0.90")],
             ["build with saliency / Captum IG alone rows/s", r2, "reported", ""]]
    C.print_table("Build goals", ["measure", "ratio", "goal", "verdict"], goals)
    C.write_json("build", {"rows_per_s": {k: C.summary(v) for k, v in {**plain, **sal}.items()},
                           "cpu_s_per_row": {k: C.summary(v) for k, v in cpu.items() if v},
                           "goals": [dict(zip(["measure", "value", "goal", "verdict"], g)) for g in goals],
                           "rows_no_saliency": n_rows, "seconds": time.perf_counter() - started},
                 args.out, args, settings)


if __name__ == "__main__":
    main()
