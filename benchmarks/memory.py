"""Peak memory of ``kdcache train-student`` on a cache with N rows vs 10N rows (same corpus: K vs 10K crops
per utterance; S = 5994 float16 logits, so 12 KB a row). Goal: the 10N run peaks within 10% of the N run.

Each run is a fresh process: ``python benchmarks/memory.py --child STEPS -- <train-student options>``
runs the real CLI (``cli.main``) with one change, made so the two runs do the same work: the block
sampler stops after STEPS batches (the N cache's whole epoch; a 10th of the 10N cache's). Reported:

- main: the trainer process's peak resident set (VmHWM from /proc/self/status at exit);
- worker: the largest peak among its DataLoader workers (RUSAGE_CHILDREN ru_maxrss, after they exit);
- tree: the peak of the summed RSS of the whole process tree, sampled every 20 ms by this process.

    python benchmarks/memory.py --quick
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)


def _child(steps: int, cli_args: list[str]) -> None:
    """Run train-student in this process with the block sampler cut to `steps` batches."""
    import resource

    import kdcache.train.sources as sources
    from cli.main import main as cli_main

    class FirstBatches(sources.BlockSampler):
        def __len__(self) -> int:
            return min(steps, super().__len__())

        def __iter__(self):
            for k, rows in enumerate(super().__iter__()):
                if k >= steps:
                    return
                served[0] += 1
                yield rows

    served = [0]  # batches handed to the DataLoader: shows the cut took hold

    sources.BlockSampler = FirstBatches
    code = 0
    try:
        cli_main.main(args=cli_args, standalone_mode=False)
    except SystemExit as e:  # pragma: no cover
        code = int(e.code or 0)
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print("MEMORY " + json.dumps({"main_kb": hwm, "worker_kb": kids, "exit": code, "batches": served[0]}), flush=True)


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of pid and its descendants (kB)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total


def run_train(steps: int, cli_args: list[str], log: Path) -> dict:
    """Peak memory of one train-student run cut to `steps` batches; its --out is emptied first (a workdir
    reused from an earlier run must not make it refuse to start)."""
    out = Path(cli_args[cli_args.index("--out") + 1])
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(steps), "--", *cli_args]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, text=True, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.02)
        stdout = proc.stdout.read()
    line = next((ln for ln in stdout.splitlines() if ln.startswith("MEMORY ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"train-student failed ({proc.returncode}); see {log}:\n{Path(log).read_text()[-2000:]}")
    res = json.loads(line[len("MEMORY "):])
    if res["exit"] != 0:
        raise RuntimeError(f"train-student failed (exit {res['exit']}); see {log}:\n{Path(log).read_text()[-2000:]}")
    if res["batches"] != steps:
        raise RuntimeError(f"train-student ran {res['batches']} batches instead of {steps}: the sampler was not cut; "
                           f"see {log}")
    res["tree_peak_kb"] = peak
    res["seconds"] = time.perf_counter() - t0
    return res


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        sep = sys.argv.index("--")
        _child(int(sys.argv[i + 1]), sys.argv[sep + 1:])
        return
    import fixtures as F

    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--crops", type=int, default=None, help="crops per utterance of the N cache (x10 for 10N)")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    quick = args.quick
    repeats = args.repeats or (1 if quick else 2)
    spk, utts = (16, 4) if quick else (32, 8)
    K = args.crops or (16 if quick else 16)
    settings = C.set_threads(args.threads) | {"trainer_threads (--threads)": args.threads, "num_workers": 1, "batch_size": args.batch_size, "repeats": repeats,
                "student": "xvector (hid 128, stats 384, emb 128)", "loss": "dkd", "num_classes": F.VOX2_SPEAKERS}
    results: dict[str, list[dict]] = {"N": [], "10N": []}
    with C.Workdir(args.workdir, "memory") as wd:
        data = F.make_corpus(wd / "corpus", speakers=spk, utterances_per_speaker=utts)
        caches = {}
        for name, k in (("N", K), ("10N", 10 * K)):
            caches[name] = F.write_cache(wd / f"cache-{name}.zarr", data, F.CacheSpec(embed_dim=256, crops_per_utt=k))
        from kdcache.cache.reader import TeacherCache

        rows = {name: len(TeacherCache.open(path)) for name, path in caches.items()}
        steps = rows["N"] // args.batch_size  # the N cache's whole epoch
        settings |= {"rows": rows, "steps": steps, "cache_bytes": {n: _du(p) for n, p in caches.items()}}
        print(f"caches: {rows} rows; {steps} steps of {args.batch_size} rows each", flush=True)
        for r in range(repeats):
            for name in (("N", "10N") if r % 2 == 0 else ("10N", "N")):
                out = wd / f"student-{name}-{r}"
                cli_args = ["--threads", str(args.threads), "train-student", "--cache", str(caches[name]), "--data", str(data),
                            "--student", "xvector", "--model-args",
                            '{"hid_dim": 128, "stats_dim": 384, "embed_dim": 128}', "--loss", "dkd", "--epochs", "1",
                            "--batch-size", str(args.batch_size), "--num-workers", "1", "--device", "cpu",
                            "--out", str(out)]
                res = run_train(steps, cli_args, wd / f"log-{name}-{r}.txt")
                results[name].append(res)
                print(f"  {name}: main {res['main_kb'] / 1024:.0f} MiB, worker {res['worker_kb'] / 1024:.0f} MiB, "
                      f"tree {res['tree_peak_kb'] / 1024:.0f} MiB, {res['seconds']:.1f} s", flush=True)

    def med(name: str, key: str) -> float:
        return C.median([r[key] for r in results[name]]) / 1024

    table = []
    for key, label in (("main_kb", "trainer process peak RSS (VmHWM)"), ("worker_kb", "DataLoader worker peak RSS"),
                       ("tree_peak_kb", "process tree peak RSS (sampled)")):
        table.append([label, med("N", key), med("10N", key), med("10N", key) / med("N", key)])
    C.print_table(f"Peak memory of train-student (MiB), {rows['N']} vs {rows['10N']} rows, {steps} steps each",
                  ["measure", "N", "10N", "10N / N"], table)
    ratio = max(t[3] for t in table)
    goals = [["peak RSS, 10N / N (worst of the three)", ratio, "<= 1.10", C.verdict(ratio, "<= 1.10")]]
    C.print_table("Memory goal", ["measure", "ratio", "goal", "verdict"], goals)
    C.write_json("memory", {"runs": results, "table_mib": [dict(zip(["measure", "N", "10N", "ratio"], t)) for t in table],
                            "goals": [dict(zip(["measure", "value", "goal", "verdict"], g)) for g in goals]},
                 args.out, args, settings)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


if __name__ == "__main__":
    main()
