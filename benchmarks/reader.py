"""Reader throughput: rows/s of TeacherCache batches through the block sampler vs fully random rows.

S = 5994 float16 logits (12 KB a row), 64-row inner chunks in 4096-row shards (the defaults), batches of
256 rows. Variants: local files (page-cached after the first pass) and over HTTP on 127.0.0.1 (the
Range-capable test server, run in a separate process); read in this process, or through a DataLoader
with 2 workers (each opens the cache itself). "f16" reads the stored values (``cache.read``), "f32" is
``cache.logits(rows)`` (float32, what the trainer asks for).

Goal (issue 5): block-sampled, local, 1 process >= 50,000 rows/s and >= 20x fully random rows.

    python benchmarks/reader.py --quick
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402

import numpy as np  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from kdcache.cache import schema as sc  # noqa: E402
from kdcache.cache.reader import TeacherCache  # noqa: E402
from kdcache.cache.sampler import BlockSampler, RandomRowSampler  # noqa: E402
from kdcache.data.datasets import worker_init  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class LogitBatches(Dataset):
    """Item = float32 teacher logits of a batch of rows (the cache opens lazily in each worker)."""

    def __init__(self, cache: TeacherCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.cache.logits(rows))


class HttpServer:
    """tests/cache/http_server.py (Range requests, threaded) serving a folder, in a child process."""

    def __init__(self, root: Path) -> None:
        code = (
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from tests.cache.http_server import serve_directory\n"
            "with serve_directory(sys.argv[2]) as url:\n"
            "    print(url, flush=True); sys.stdin.read()\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(REPO), str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError("the HTTP server did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


CPU_RATES: dict[str, list[float]] = {}


def _rate(batches, max_batches: int, budget_s: float, skip: int, name: str | None = None) -> float:
    """rows/s over up to max_batches batches (after `skip` untimed ones), stopping after budget_s.
    With a name, also records rows per CPU-second of this process (all its threads) in CPU_RATES."""
    it = iter(batches)
    for _ in range(skip):
        next(it)
    rows, t0, c0 = 0, time.perf_counter(), time.process_time()
    for k, b in enumerate(it):
        rows += len(b)
        if k + 1 >= max_batches or time.perf_counter() - t0 >= budget_s:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if name is not None:
        CPU_RATES.setdefault(name, []).append(rows / max(cpu, 1e-9))
    return rows / wall


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=None, help="cache rows (default 8192 quick, 32768 full)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-http", action="store_true", help="skip the HTTP variants")
    args = p.parse_args()
    settings = C.set_threads(args.threads)
    N = args.rows or (8192 if args.quick else 32768)
    B = args.batch_size
    repeats = args.repeats or (3 if args.quick else 5)
    budget = 1.5 if args.quick else 4.0  # seconds per measurement (upper bound; fast variants stop earlier)
    settings |= {"rows": N, "batch_size": B, "num_classes": F.VOX2_SPEAKERS, "dtype": "float16",
                 "chunk_rows": 64, "shard_rows": 4096, "repeats": repeats, "budget_s": budget,
                 "dataloader_workers": 2, "page_cache": "warm (the cache is read once before timing)"}

    with C.Workdir(args.workdir, "reader") as wd:
        data = F.make_corpus(wd / "corpus", speakers=16, utterances_per_speaker=4)
        utts = sum(1 for _ in open(data / "wav.scp"))
        spec = F.CacheSpec(crops_per_utt=math.ceil(N / utts), embed_dim=256)
        path = F.write_cache(wd / "cache.zarr", data, spec)
        cache = TeacherCache.open(path)
        N = len(cache)
        settings["rows"] = N
        for s in range(0, N, 4096):  # warm the page cache
            cache.read([sc.LOGITS], slice(s, min(s + 4096, N)))

        server = None if args.no_http else HttpServer(wd)
        try:
            sources = {"local": str(path)}
            if server is not None:
                sources["http"] = f"{server.url}/cache.zarr"
            variants = {}
            for where, url in sources.items():
                c = TeacherCache.open(url)
                remote = where == "http"
                for sampler_name, make in (("block", lambda e: BlockSampler(N, B, seed=e)),
                                           ("random", lambda e: RandomRowSampler(N, B, seed=e))):
                    slow = sampler_name == "random"
                    nb = 2 if slow else 10_000
                    epoch = [0]

                    key = f"{where} {sampler_name}"

                    def one_proc_f16(c=c, make=make, nb=nb, key=key):
                        epoch[0] += 1
                        return _rate((c.read([sc.LOGITS], r)[sc.LOGITS] for r in make(epoch[0])), nb, budget, 0,
                                     f"{key} f16 1 proc")

                    def one_proc_f32(c=c, make=make, nb=nb, key=key):
                        epoch[0] += 1
                        return _rate((c.logits(r) for r in make(epoch[0])), nb, budget, 0, f"{key} f32 1 proc")

                    def workers(c=c, make=make, nb=nb):
                        epoch[0] += 1
                        loader = DataLoader(LogitBatches(TeacherCache(c.url)), sampler=make(epoch[0]), batch_size=None,
                                            num_workers=2, worker_init_fn=worker_init, prefetch_factor=4)
                        return _rate(loader, nb * 2, budget, 2)

                    if remote and slow:
                        # one batch of random rows over HTTP is 256 range requests of whole 64-row chunks
                        variants[f"{where} {sampler_name} f16 1 proc"] = one_proc_f16
                        continue
                    variants[f"{where} {sampler_name} f16 1 proc"] = one_proc_f16
                    variants[f"{where} {sampler_name} f32 1 proc"] = one_proc_f32
                    variants[f"{where} {sampler_name} f32 2 workers"] = workers
            rates = C.interleaved(variants, repeats=repeats, warmup=0)
        finally:
            if server is not None:
                server.close()

    rows = []
    for name, values in rates.items():
        cpu = C.median(CPU_RATES[name]) if name in CPU_RATES else None
        rows.append([name, C.median(values), min(values), max(values), cpu])
    C.print_table(f"TeacherCache rows/s (S = {F.VOX2_SPEAKERS} float16, batch {B}, {N} rows; median of {repeats}; "
                  "per CPU-s = rows per second of this process's CPU time, all threads)",
                  ["variant", "rows/s", "min", "max", "rows per CPU-s"], rows)
    med = {k: C.median(v) for k, v in rates.items()}
    goals = []
    block = med["local block f16 1 proc"]
    ratio = block / med["local random f16 1 proc"]
    goals.append(["block, local, 1 proc, stored f16 (rows/s)", block, ">= 50000", C.verdict(block, ">= 50000")])
    cpu_block = C.median(CPU_RATES["local block f16 1 proc"])
    goals.append(["  same, rows per CPU-second (load-independent)", cpu_block, ">= 50000",
                  C.verdict(cpu_block, ">= 50000")])
    goals.append(["block / random rows, local, 1 proc, f16", ratio, ">= 20", C.verdict(ratio, ">= 20")])
    b32 = med["local block f32 1 proc"]
    goals.append(["block, local, 1 proc, float32 logits (rows/s)", b32, ">= 50000", C.verdict(b32, ">= 50000")])
    goals.append(["block / random rows, local, 1 proc, f32", b32 / med["local random f32 1 proc"], ">= 20",
                  C.verdict(b32 / med["local random f32 1 proc"], ">= 20")])
    if "http block f16 1 proc" in med:
        goals.append(["block / random rows, HTTP, 1 proc, f16",
                      med["http block f16 1 proc"] / med["http random f16 1 proc"], "(reported)", ""])
    C.print_table("Reader goals", ["measure", "value", "goal", "verdict"], goals)
    C.write_json("reader", {"rows_per_s": {k: C.summary(v) for k, v in rates.items()},
                            "rows_per_cpu_s": {k: C.summary(v) for k, v in CPU_RATES.items()},
                            "goals": [dict(zip(["measure", "value", "goal", "verdict"], g)) for g in goals]},
                 args.out, args, settings)


if __name__ == "__main__":
    main()
