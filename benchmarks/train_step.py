"""Time per training step of one student: CE alone, DKD and IML-KD from the cache, DKD and IML-KD with the
teacher online (what ENSKD / IML-KD do without a cache). Same student, batch rows and crops for all.

Three views, all interleaved in one process (1 torch thread in the measuring process, DataLoader workers
1 thread each):

- end-to-end: what ``kdcache train-student`` runs: ``BlockSampler`` -> ``DataLoader`` (1 worker,
  prefetch 4) over ``CacheBatches`` (replayed audio, fbank, cached teacher rows) -> forward, loss,
  backward, SGD. The CE variant reads no teacher arrays (``reads`` of the ``ce`` method), so the (b)/(a)
  ratio is the whole price of distilling from the cache. The online variants use the CE data path
  plus the teacher in memory.
- compute only: the same steps on a batch already in memory (the loss and the extra forward).
- data only: ``CacheBatches[rows]`` in this process, without and with the teacher reads.

The online IML-KD teacher work (50-step integrated gradients over the crop and its halves, then the
teacher on the integrated inputs, as ``kdcache.teacher.build.TeacherRunner`` does) costs ~100 teacher
forward+backward passes per row; on a CPU it is timed on ``--ig-rows`` rows of each batch and scaled
to the batch (it is linear in rows): step = measured step + (B / k - 1) * t_teacher(k rows). The JSON
records k and both parts.

    python benchmarks/train_step.py --quick
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402


import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from kdcache.cache.reader import TeacherCache  # noqa: E402
from kdcache.cache.sampler import BlockSampler  # noqa: E402
from kdcache.data.corpus import load_corpus  # noqa: E402
from kdcache.data.datasets import worker_init  # noqa: E402
from kdcache.data.features import FeatureConfig  # noqa: E402
from kdcache.models import attach_head, build_model, count_parameters  # noqa: E402
from kdcache.teacher.build import BuildConfig, TeacherRunner  # noqa: E402
from kdcache.cache.batches import CacheBatches  # noqa: E402
from kdcache.distill.methods import RunInfo, build, get  # noqa: E402
from kdcache.train.student import StudentNet, StudentTrainConfig, total_loss  # noqa: E402

VARIANTS = {
    "a": ("ce", "cache", "(a) ce"),
    "b": ("dkd", "cache", "(b) dkd, cached teacher"),
    "c": ("dkd", "online", "(c) dkd, online teacher"),
    "d": ("imlkd", "cache", "(d) imlkd, cached teacher"),
    "e": ("imlkd", "online", "(e) imlkd, online teacher (IG 50 steps)"),
}


def flops_per_crop(model: torch.nn.Module, frames: int = 200, with_backward: bool = False) -> float:
    """FLOPs of one 2 s crop (torch.utils.flop_counter; forward, or forward + backward)."""
    was = model.training
    model.eval()
    x = torch.randn(2, frames, 80, requires_grad=with_backward)
    with FlopCounterMode(display=False) as counter:
        if with_backward:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    model.train(was)
    return counter.get_total_flops() / 2


def _rusage() -> float:
    """User + system CPU seconds of this process and its reaped children."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Bench:
    def __init__(self, args, wd: Path) -> None:
        quick = args.quick
        self.B = args.batch_size or (64 if quick else 128)
        spk, utts, crops = (32, 8, 2) if quick else (64, 8, 4)
        data = F.make_corpus(wd / "corpus", speakers=spk, utterances_per_speaker=utts)
        teacher_args = json.loads(args.teacher_args)
        self.teacher = build_model(args.teacher, **teacher_args)
        attach_head(self.teacher, F.VOX2_SPEAKERS, scale=F.SCALE).update(0.2)
        self.teacher.eval()
        D = int(self.teacher.embed_dim)
        spec = F.CacheSpec(embed_dim=D, crops_per_utt=crops, saliency=True, shard_rows=512)
        self.cache = TeacherCache.open(F.write_cache(wd / "cache.zarr", data, spec))
        self.corpus = load_corpus(data)
        self.features = FeatureConfig()
        self.scale = F.SCALE
        self.datasets = {
            loss: CacheBatches(self.cache, self.corpus, self.features, None, teacher=get(loss).reads)
            for loss in ("ce", "dkd", "imlkd")
        }
        torch.manual_seed(0)
        student = build_model(args.student, **json.loads(args.student_args))
        attach_head(student, F.VOX2_SPEAKERS, scale=F.SCALE).update(0.2)
        self.cfgs = {loss: StudentTrainConfig(cache="", data="", student=args.student, loss=loss, out="", beta=2.0,
                                              teacher_margin=0.2)
                     for loss in ("ce", "dkd", "imlkd")}
        run = RunInfo(epochs=self.cfgs["ce"].epochs, student_dim=int(student.embed_dim), teacher_dim=D,
                      teacher_scale=F.SCALE, teacher_margin=0.2, teacher=self.cache.settings)
        self.nets, self.init_states = {}, {}
        for key, (loss, _, _) in VARIANTS.items():
            net = StudentNet(copy.deepcopy(student), build(loss, self.cfgs[loss].method_options(), run))
            self.init_states[key] = copy.deepcopy(net.state_dict())
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
            self.nets[key] = (net.train(), opt)
        frames = self.features.frames_for_seconds(2.0)
        self.ig_cfg = BuildConfig(data="", teacher="", out="", saliency=True, ig_steps=args.ig_steps,
                                  ig_durations=(2.0, 1.0))
        dur = [min(self.features.frames_for_seconds(d), frames) for d in self.ig_cfg.ig_durations]
        self.runner_fwd = TeacherRunner(self.teacher, torch.device("cpu"),
                                        BuildConfig(data="", teacher="", out="", saliency=False), dur)
        self.runner_ig = TeacherRunner(self.teacher, torch.device("cpu"), self.ig_cfg, dur)
        self.ig_rows = max(1, min(args.ig_rows or (1 if quick else 4), self.B))
        self.epoch = 0
        self.sampler = BlockSampler(len(self.cache), self.B, block_rows=self.cache.layout.chunk_rows, seed=0)
        self.info = {
            "student": {"arch": args.student, "args": json.loads(args.student_args),
                        "params": count_parameters(student), "gflops_fwd_per_crop": flops_per_crop(student) / 1e9},
            "teacher": {"arch": args.teacher, "args": teacher_args, "params": count_parameters(self.teacher),
                        "gflops_fwd_per_crop": flops_per_crop(self.teacher) / 1e9},
            "rows": len(self.cache), "batch_size": self.B, "classes": F.VOX2_SPEAKERS, "embed_dim": D,
            "ig_steps": args.ig_steps, "ig_durations_s": list(self.ig_cfg.ig_durations),
            "ig_rows_timed_per_batch": self.ig_rows,
        }
        self.info["teacher_over_student_flops"] = (self.info["teacher"]["gflops_fwd_per_crop"]
                                                   / self.info["student"]["gflops_fwd_per_crop"])

    # ------------------------------------------------------------------ one step
    def teacher_online(self, key: str, batch: dict) -> float:
        """Adds the online teacher's outputs to batch; returns the extrapolation term (seconds)."""
        loss = VARIANTS[key][0]
        if loss == "dkd":
            logits, _ = self.runner_fwd.forward(batch["feats"])
            batch["teacher_logits"] = logits
            return 0.0
        k, B = self.ig_rows, len(batch["label"])
        t0 = time.perf_counter()
        outs = self.runner_ig(batch["feats"][:k], batch["label"][:k])
        t_k = time.perf_counter() - t0
        reps = -(-B // k)
        batch["saliency"] = outs["saliency"].float().repeat(reps, 1, 1, 1)[:B]
        batch["integrated_logits"] = outs["integrated_logits"].repeat(reps, 1)[:B]
        batch["integrated_embedding"] = outs["integrated_embedding"].repeat(reps, 1)[:B]
        return (B / k - 1.0) * t_k

    def step(self, key: str, batch: dict, net_key: str | None = None) -> float:
        """One training step as train_student/fit run it; returns extra (extrapolated) seconds."""
        loss, source, _ = VARIANTS[key]
        net, opt = self.nets[net_key or key]
        extra = self.teacher_online(key, batch) if source == "online" else 0.0
        for group in opt.param_groups:
            group["lr"] = 0.01
        total, logs = total_loss(net(batch, 5.0))
        if not torch.isfinite(total):
            raise RuntimeError(f"{key}: loss is {total}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        _ = {"loss": float(total.detach()), **logs}
        return extra

    # ------------------------------------------------------------------ views
    def loader(self, loss: str) -> DataLoader:
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        return DataLoader(self.datasets[loss], sampler=self.sampler, batch_size=None, num_workers=1,
                          worker_init_fn=worker_init, prefetch_factor=4, persistent_workers=False)

    def end_to_end(self, key: str, steps: int | None = None) -> tuple[float, float | None]:
        """(wall seconds per step, CPU seconds per batch of this process and its DataLoader worker).

        Wall: the steps after the first (worker start-up and warm-up excluded), ``steps`` of them or the
        rest of the epoch. CPU: user + system time of this process and the worker (reaped at the end)
        over the whole epoch divided by its batches; only when the whole epoch is consumed (so every
        batch the worker produced was used), else None.
        """
        loss, source, _ = VARIANTS[key]
        whole = steps is None
        net, opt = self.nets[key]  # every epoch starts from the same weights
        net.load_state_dict(self.init_states[key])
        opt.state.clear()
        r0 = _rusage()
        it = iter(self.loader("ce" if source == "online" else loss))
        n = len(self.sampler)
        self.step(key, next(it))
        extra, done = 0.0, 0
        t0 = time.perf_counter()
        for batch in it:
            extra += self.step(key, batch)
            done += 1
            if not whole and done >= steps:
                break
        wall = time.perf_counter() - t0
        del it, batch  # joins the worker, so RUSAGE_CHILDREN includes it
        cpu = (_rusage() - r0) / n if whole else None
        return (wall + extra) / done, cpu
    def compute_only(self, key: str, batch: dict) -> tuple[float, float]:
        """(wall, CPU) seconds of one step on a batch in memory (online: teacher included). CPU is this
        thread's (torch runs 1 thread here): far less disturbed by other jobs on the machine than wall."""
        b = dict(batch)
        # every variant steps from the same student weights (and a fresh optimizer state): only the loss
        # (the method, and its projection for imlkd) differs, not weights drifting apart
        net, opt = self.nets[key]
        net.load_state_dict(self.init_states[key])
        opt.state.clear()
        c0, t0 = time.thread_time(), time.perf_counter()
        extra = self.step(key, b)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return wall + extra, cpu + extra


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default 64 quick, 128 full)")
    p.add_argument("--student", default="xvector")
    p.add_argument("--student-args", default='{"hid_dim": 128, "stats_dim": 384, "embed_dim": 128}')
    p.add_argument("--teacher", default="xvector", help="the online teacher (WeSpeaker's x-vector by default)")
    p.add_argument("--teacher-args", default="{}")
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--ig-rows", type=int, default=None, help="rows of each batch given the online IG (default 1 quick, 4)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps of the online (c) end-to-end measurement (a, b, d run whole epochs)")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler tables of the ce and dkd steps")
    args = p.parse_args()
    settings = C.set_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (4 if quick else 8)  # rounds of the (a)/(b) end-to-end pair
    steps = args.steps or (3 if quick else 5)
    started = time.perf_counter()

    with C.Workdir(args.workdir, "train-step") as wd:
        bench = Bench(args, wd)
        info = bench.info
        settings |= {"rounds_ab": repeats, "online_dkd_timed_steps": steps, "dataloader_workers": 1,
                     "prefetch_factor": 4}
        print(f"student {info['student']['arch']} {info['student']['args']}: {info['student']['gflops_fwd_per_crop']:.3f} "
              f"GFLOP/crop; teacher {info['teacher']['arch']} {info['teacher']['args']}: "
              f"{info['teacher']['gflops_fwd_per_crop']:.3f} GFLOP/crop ({info['teacher_over_student_flops']:.1f}x); "
              f"batch {bench.B}, {info['rows']} rows, S = {F.VOX2_SPEAKERS}", flush=True)

        # ---- compute only (one batch in memory, every output present)
        rows = next(iter(BlockSampler(len(bench.cache), bench.B, seed=99)))
        full = CacheBatches(bench.cache, bench.corpus, bench.features, None, with_saliency=True)[rows]
        comp: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
        for k in ("a", "b", "d", "c"):
            bench.compute_only(k, full)  # warm-up
        for r in range(3 * repeats):  # (a), (b) in alternating order; (d) in a few rounds
            for k in (("a", "b") if r % 2 == 0 else ("b", "a")) + (("d",) if r < 3 else ()):
                comp[k].append(bench.compute_only(k, full))
        for r in range(1 if quick else 3):
            comp["c"].append(bench.compute_only("c", full))
        # online IML-KD: warm the IG path with 2 steps, then time
        saved = bench.runner_ig.cfg.ig_steps
        bench.runner_ig.cfg.ig_steps = 2
        bench.compute_only("e", full)
        bench.runner_ig.cfg.ig_steps = saved
        for r in range(1 if quick else 2):
            comp["e"].append(bench.compute_only("e", full))

        # ---- data only (CacheBatches in this process)
        data_sets = {"ce (no teacher read)": bench.datasets["ce"], "dkd (logits)": bench.datasets["dkd"],
                     "imlkd (saliency + integrated)": bench.datasets["imlkd"]}
        data_times = C.interleaved({name: (lambda ds=ds: ds[rows]) for name, ds in data_sets.items()},
                                   repeats=3 * repeats, warmup=1)

        # ---- end to end (DataLoader, 1 worker): whole epochs, (a) and (b) paired in each round
        e2e: dict[str, list[float]] = {k: [] for k in VARIANTS}
        e2e_cpu: dict[str, list[float]] = {k: [] for k in ("a", "b", "d")}
        for r in range(repeats):
            for k in (("a", "b") if r % 2 == 0 else ("b", "a")) + (("d",) if r < (1 if quick else 3) else ()):
                wall, cpu = bench.end_to_end(k)
                e2e[k].append(wall)
                e2e_cpu[k].append(cpu)
        e2e["c"] = [bench.end_to_end("c", steps)[0] for _ in range(1 if quick else 2)]
        e2e["e"] = [bench.end_to_end("e", 1)[0]]

        if args.profile:
            profile(bench, full)

    # ---- tables
    med = {k: C.median(v) for k, v in e2e.items()}
    mcpu = {k: C.median(v) for k, v in e2e_cpu.items()}
    cw = {k: C.median([w for w, _ in v]) for k, v in comp.items()}
    cc = {k: C.median([c for _, c in v]) for k, v in comp.items()}
    paired = {
        "e2e wall": [b / a for a, b in zip(e2e["a"], e2e["b"])],
        "e2e CPU": [b / a for a, b in zip(e2e_cpu["a"], e2e_cpu["b"])],
        "compute wall": [b[0] / a[0] for a, b in zip(comp["a"], comp["b"])],
        "compute CPU": [b[1] / a[1] for a, b in zip(comp["a"], comp["b"])],
    }
    rows_out = []
    for k, (_, _, label) in VARIANTS.items():
        cpu_ratio = mcpu[k] / mcpu["a"] if k in mcpu else None
        rows_out.append([label, med[k], med[k] / med["a"], cpu_ratio, cw[k], cw[k] / cw["a"], cc[k] / cc["a"]])
    C.print_table(f"Step time, batch {bench.B}, medians (end-to-end = DataLoader with 1 worker + step, whole epochs; "
                  "CPU = this process + the worker; compute = the step on a batch in memory)",
                  ["variant", "e2e s/step", "e2e / (a)", "e2e CPU / (a)", "compute s/step", "compute / (a)",
                   "compute CPU / (a)"], rows_out)
    C.print_table("(b) / (a) paired by round (each round measures both back to back)",
                  ["measure", "rounds", "median", "min", "max"],
                  [[k, len(v), C.median(v), min(v), max(v)] for k, v in paired.items()])
    dmed = {k: C.median(v) for k, v in data_times.items()}
    base = dmed["ce (no teacher read)"]
    C.print_table("Data path only: CacheBatches[rows] in this process (what the worker does per batch)",
                  ["items", "s/batch", "/ ce"], [[k, v, v / base] for k, v in dmed.items()])
    pr = {k: C.median(v) for k, v in paired.items()}
    goals = [
        ["cached dkd step / ce step (end-to-end wall, paired)", pr["e2e wall"], "<= 1.05",
         C.verdict(pr["e2e wall"], "<= 1.05")],
        ["cached dkd / ce, end-to-end CPU (process + worker, paired)", pr["e2e CPU"], "<= 1.05",
         C.verdict(pr["e2e CPU"], "<= 1.05")],
        ["cached dkd step / ce step (compute only, paired)", pr["compute wall"], "<= 1.05",
         C.verdict(pr["compute wall"], "<= 1.05")],
        ["cached dkd step / ce step (compute only, thread CPU, paired)", pr["compute CPU"], "<= 1.05",
         C.verdict(pr["compute CPU"], "<= 1.05")],
        ["online dkd / cached dkd (end-to-end)", med["c"] / med["b"],
         f"reported (teacher {info['teacher_over_student_flops']:.1f}x FLOPs)", ""],
        ["online imlkd / cached imlkd (end-to-end)", med["e"] / med["d"], ">= 50", C.verdict(med["e"] / med["d"], ">= 50")],
        ["cached imlkd / ce (end-to-end)", med["d"] / med["a"], "reported (2 student forwards)", ""],
    ]
    C.print_table("Goals", ["measure", "ratio", "goal", "verdict"], goals)
    payload = {
        "setup": info,
        "end_to_end_s_per_step": {VARIANTS[k][2]: C.summary(v) for k, v in e2e.items()},
        "end_to_end_cpu_s_per_batch": {VARIANTS[k][2]: C.summary(v) for k, v in e2e_cpu.items()},
        "compute_only_s_per_step": {VARIANTS[k][2]: {"wall": C.summary([w for w, _ in v]),
                                                     "cpu": C.summary([c for _, c in v])} for k, v in comp.items()},
        "data_only_s_per_batch": {k: C.summary(v) for k, v in data_times.items()},
        "paired_b_over_a": {k: C.summary(v) for k, v in paired.items()},
        "ratios": {"e2e_over_a": {VARIANTS[k][2]: med[k] / med["a"] for k in VARIANTS},
                   "compute_over_a": {VARIANTS[k][2]: cw[k] / cw["a"] for k in VARIANTS}},
        "goals": [dict(zip(["measure", "value", "goal", "verdict"], g)) for g in goals],
        "notes": ("(e) teacher IG is timed on ig_rows_timed_per_batch rows per batch and scaled linearly to the "
                  "batch; online variants use the ce data path plus the in-memory teacher."),
        "seconds": time.perf_counter() - started,
    }
    C.write_json("train_step", payload, args.out, args, settings)


def profile(bench: Bench, batch: dict) -> None:
    """torch.profiler tables of the compute-only ce and dkd steps (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    for key in ("a", "b"):
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                bench.step(key, dict(batch))
        print(f"\n### torch.profiler: {VARIANTS[key][2]} (3 steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
