"""Scale: caches of 10k, 100k and 1M rows (S = 5994; factorized and uint8 logits) written through the real
CacheWriter, and what each costs to use as it grows. Goal: flat from the smallest to the largest size
(within 10%), except ``cache verify``, which reads every byte and is linear.

The corpus grows with the cache as VoxCeleb2 does at K = 10 crops per utterance: N / 10 utterances (a
Kaldi folder whose wav.scp points the utterances at 256 real 3-second files), so the utterance tables
grow too. Teacher outputs are AAM-like values (benchmarks/fixtures.py) of one 4096-row shard, rolled
per shard: the writer quantizes, checksums and stores every shard as a real build does.

Per size and mode:
- write: rows/s of CacheWriter.write_shard over all shards (this process);
- open: seconds of TeacherCache.open (metadata and settings) and of open + progress/done;
- reader: rows/s of float32 logits of block-sampler batches (256 rows, 64-row blocks), the same number of
  batches at every size, a fresh epoch per repeat, sizes interleaved;
- train-student: peak RSS (trainer process VmHWM, DataLoader worker, whole tree) over the same number
  of steps (benchmarks/memory.py's child runner: the real CLI with the block sampler cut);
- cache info: seconds (local: it also sums the bytes of every file);
- cache verify: rows/s (every chunk read and checksummed);
- train-student's start-up work that grows with the corpus (N / 10 utterances): loading the corpus (one
  audio header per utterance) and checking it against the cache's utterance table.

    python benchmarks/scale.py --quick              # 2k, 8k, 32k rows: a few minutes
    python benchmarks/scale.py                      # 10k, 100k, 1M rows: ~7 GB of disk
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402

import numpy as np  # noqa: E402

CROPS_PER_UTT = 10
BASE_SPEAKERS, BASE_UTTS = 32, 8  # 256 real wav files


def make_scaled_corpus(base: Path, out: Path, num_utts: int) -> Path:
    """A Kaldi folder of num_utts utterances over the base corpus's wav files (ids spkNNN-uNNNNNNN)."""
    out = Path(out)
    if (out / "wav.scp").exists():
        return out
    from kdcache.data.corpus import load_corpus

    real = list(load_corpus(base))
    out.mkdir(parents=True, exist_ok=True)
    scp, u2s = [], []
    for i in range(num_utts):
        u = real[i % len(real)]
        utt = f"{u.speaker}-u{i:08d}"
        scp.append(f"{utt} {u.path}\n")
        u2s.append(f"{utt} {u.speaker}\n")
    (out / "utt2spk").write_text("".join(u2s))
    (out / "wav.scp").write_text("".join(scp))
    return out


def rolled_values(template: dict, layout, s: int) -> dict:
    """Shard s's teacher outputs: the template shard rolled by s rows (cut to the shard's length)."""
    sl = layout.shard_slice(s)
    n = sl.stop - sl.start
    return {k: np.roll(v, s, axis=0)[:n] for k, v in template.items()}


def write_scaled_cache(path: Path, data: Path, mode: str) -> tuple[Path, float]:
    """Write (or reuse) the cache; returns (path, write rows/s or nan if reused)."""
    import json

    from kdcache.cache.reader import TeacherCache

    note = path.parent / f"{path.name}.write.json"  # the write rate of a cache reused from --workdir
    if (path / "zarr.json").exists() and TeacherCache.open(path).is_complete and note.exists():
        return path, float(json.loads(note.read_text())["rows_per_s"])
    timing: dict[str, float] = {}

    def values(layout, head, labels, s, seed):
        if "template" not in timing:
            timing["template"] = 1.0
            tmpl = F.shard_values(layout, head, labels, 0, seed)
            values.template = tmpl  # type: ignore[attr-defined]
            timing["t0"] = time.perf_counter()
        return rolled_values(values.template, layout, s)  # type: ignore[attr-defined]

    path.parent.mkdir(parents=True, exist_ok=True)

    F.write_cache(path, data, F.CacheSpec(embed_dim=256, crops_per_utt=CROPS_PER_UTT, logits=mode), values=values)
    n = len(TeacherCache.open(path))
    rate = n / (time.perf_counter() - timing["t0"])
    note.write_text(json.dumps({"rows_per_s": rate}))
    return path, rate


def main() -> None:
    import memory as M

    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="rows per cache, comma-separated (default 10000,100000,1000000)")
    p.add_argument("--modes", default="factorized,uint8")
    p.add_argument("--batches", type=int, default=None, help="reader batches of 256 rows per measurement")
    p.add_argument("--steps", type=int, default=None, help="train-student steps (batch 64) per size")
    p.add_argument("--skip-train", action="store_true", help="leave out the train-student runs (the test's tiny run)")
    args = p.parse_args()
    quick = args.quick
    sizes = [int(s) for s in (args.sizes or ("2000,8000,32000" if quick else "10000,100000,1000000")).split(",")]
    modes = args.modes.split(",")
    repeats = args.repeats or (2 if quick else 3)
    batches = args.batches or (10 if quick else 40)
    steps = args.steps or (3 if quick else 20)
    settings = C.set_threads(args.threads) | {
        "sizes": sizes, "modes": modes, "repeats": repeats, "reader_batches": batches, "reader_batch_rows": 256,
        "train_steps": steps, "train_batch_rows": 64, "crops_per_utt": CROPS_PER_UTT, "num_classes": F.VOX2_SPEAKERS,
        "shard_rows": 4096, "chunk_rows": 64,
    }
    from kdcache.cache.info import cache_info
    from kdcache.cache.reader import TeacherCache
    from kdcache.cache.sampler import BlockSampler
    from kdcache.cache.verify import verify_cache

    results: dict[str, dict[str, dict]] = {m: {} for m in modes}
    with C.Workdir(args.workdir, "scale") as wd:
        base = F.make_corpus(wd / "base", speakers=BASE_SPEAKERS, utterances_per_speaker=BASE_UTTS)
        caches: dict[tuple[str, int], Path] = {}
        corpora: dict[int, Path] = {}
        for n in sizes:
            corpora[n] = make_scaled_corpus(base, wd / f"corpus-{n}", n // CROPS_PER_UTT)
            for mode in modes:
                t0 = time.perf_counter()
                caches[mode, n], rate = write_scaled_cache(wd / f"{mode}-{n}.zarr", corpora[n], mode)
                results[mode][str(n)] = {"write_rows_per_s": rate, "write_s": time.perf_counter() - t0,
                                         "bytes": M._du(caches[mode, n])}
                print(f"{mode} {n:,} rows: written in {time.perf_counter() - t0:.1f} s", flush=True)

        for mode in modes:
            res = results[mode]
            # open, info: interleaved over sizes, fresh TeacherCache each time
            opens = C.interleaved({str(n): (lambda n=n: TeacherCache.open(caches[mode, n])) for n in sizes},
                                  repeats * 3)
            opens_done = C.interleaved(
                {str(n): (lambda n=n: TeacherCache.open(caches[mode, n]).done()) for n in sizes}, repeats * 3)
            infos = C.interleaved({str(n): (lambda n=n: cache_info(caches[mode, n])) for n in sizes}, repeats)

            opened = {n: TeacherCache.open(caches[mode, n]) for n in sizes}

            def read_rate(n: int, counter=[0]) -> float:
                cache = opened[n]  # opened once (the head and array handles are read on first use)
                sampler = BlockSampler(len(cache), 256, 64, seed=0)
                counter[0] += 1
                sampler.set_epoch(counter[0])
                t0 = time.perf_counter()
                for k, rows in enumerate(sampler):
                    if k >= batches:
                        break
                    cache.logits(rows)
                return (time.perf_counter() - t0) / batches  # seconds per batch

            reads = C.interleaved({str(n): (lambda n=n: read_rate(n)) for n in sizes}, repeats)
            for n in sizes:
                r = res[str(n)]
                r["open_s"] = C.summary(opens[str(n)])
                r["open_and_done_s"] = C.summary(opens_done[str(n)])
                r["info_s"] = C.summary(infos[str(n)])
                r["reader_rows_per_s"] = 256 / C.median(reads[str(n)])
                r["reader_s_per_batch"] = C.summary(reads[str(n)])
            for n in sizes:  # what train-student does before its first step: load the corpus, check the manifest
                from kdcache.data.corpus import load_corpus
                from kdcache.train.student import check_corpus_matches

                t0 = time.perf_counter()
                corpus = load_corpus(corpora[n])
                t1 = time.perf_counter()
                check_corpus_matches(TeacherCache.open(caches[mode, n]), corpus)
                res[str(n)]["corpus_load_s"] = t1 - t0
                res[str(n)]["manifest_check_s"] = time.perf_counter() - t1
            for n in sizes:
                t0 = time.perf_counter()
                report = verify_cache(caches[mode, n])
                secs = time.perf_counter() - t0
                assert report.ok, report.problems[:3]
                res[str(n)]["verify_s"] = secs
                res[str(n)]["verify_rows_per_s"] = n / secs
                print(f"{mode} {n:,}: verify {secs:.1f} s", flush=True)
            for n in sizes if not args.skip_train else ():
                out = wd / f"student-{mode}-{n}"
                cli_args = ["--threads", str(args.threads), "train-student", "--cache", str(caches[mode, n]),
                            "--data", str(corpora[n]), "--student", "xvector", "--model-args",
                            '{"hid_dim": 128, "stats_dim": 384, "embed_dim": 128}', "--loss", "dkd",
                            "--epochs", "1", "--batch-size", "64", "--num-workers", "1", "--device", "cpu",
                            "--out", str(out)]
                mem = M.run_train(steps, cli_args, wd / f"log-{mode}-{n}.txt")
                res[str(n)]["train"] = mem
                print(f"{mode} {n:,}: train-student main {mem['main_kb'] / 1024:.0f} MiB, worker "
                      f"{mem['worker_kb'] / 1024:.0f} MiB, tree {mem['tree_peak_kb'] / 1024:.0f} MiB, "
                      f"{mem['seconds']:.1f} s", flush=True)

    table, goals = [], []
    small, large = str(sizes[0]), str(sizes[-1])
    for mode in modes:
        res = results[mode]
        for n in sizes:
            r = res[str(n)]
            t = r.get("train") or {"main_kb": float("nan"), "worker_kb": float("nan"), "tree_peak_kb": float("nan")}
            table.append([mode, n, r["bytes"] / 2**20, r["write_rows_per_s"], r["open_s"]["median"] * 1e3,
                          r["open_and_done_s"]["median"] * 1e3, r["reader_rows_per_s"], t["main_kb"] / 1024,
                          t["worker_kb"] / 1024, t["tree_peak_kb"] / 1024, r["info_s"]["median"],
                          r["verify_rows_per_s"], r["corpus_load_s"], r["manifest_check_s"]])
        a, b = res[small], res[large]
        for label, va, vb, higher_better in (
                ("open (ms)", a["open_s"]["median"], b["open_s"]["median"], False),
                ("open + done (ms)", a["open_and_done_s"]["median"], b["open_and_done_s"]["median"], False),
                ("reader rows/s", a["reader_rows_per_s"], b["reader_rows_per_s"], True),
                *((("train-student peak RSS, trainer", a["train"]["main_kb"], b["train"]["main_kb"], False),
                   ("train-student peak RSS, worker", a["train"]["worker_kb"], b["train"]["worker_kb"], False),
                   ("train-student peak RSS, tree", a["train"]["tree_peak_kb"], b["train"]["tree_peak_kb"], False))
                  if "train" in a else ()),
                ("cache info (s)", a["info_s"]["median"], b["info_s"]["median"], False)):
            ratio = vb / va
            cost = 1 / ratio if higher_better else ratio
            goals.append([mode, label, ratio, "cost <= 1.10", "met" if cost <= 1.10 else "MISSED"])
        lin = (b["verify_rows_per_s"] / a["verify_rows_per_s"])
        goals.append([mode, "verify rows/s (linear time: rows/s flat)", lin, "reported", ""])
    C.print_table("Scale (per cache size and logits mode)",
                  ["mode", "rows", "MiB", "write rows/s", "open ms", "open+done ms", "reader rows/s",
                   "train RSS MiB", "worker RSS MiB", "tree RSS MiB", "info s", "verify rows/s", "corpus load s",
                   "manifest check s"], table)
    C.print_table(f"Goals: {large} rows against {small} rows", ["mode", "measure", f"{large} / {small}", "goal",
                                                                  "verdict"], goals)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    C.write_json("scale", {"results": results, "goals": [dict(zip(["mode", "measure", "ratio", "goal", "verdict"], g))
                                                          for g in goals], "loadavg_at_tables": load},
                 args.out, args, settings)


if __name__ == "__main__":
    main()
