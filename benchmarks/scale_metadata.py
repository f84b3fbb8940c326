"""What grows with the number of rows when the row data does not matter: a cache's metadata, utterance table and
``progress/done`` flags at 10k to 10M rows (N / 10 utterances, 4096-row shards: 3 to 2,442 done objects),
locally and over S3 (a local SeaweedFS server, when its ``weed`` binary is installed).

The caches are created by ``CacheWriter.create`` (recipe arrays and utterance tables in full) with every
done flag set, but without teacher outputs (their shards are never read here): seconds to open the cache,
to read the done flags, to run ``cache info``, and to load the utterance table (what ``train-student``
checks the corpus against).

    python benchmarks/scale_metadata.py --quick       # 10k and 100k rows
    python benchmarks/scale_metadata.py               # 10k ... 10M rows
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def create(url: str, rows: int) -> None:
    from kdcache.cache import schema as sc
    from kdcache.cache.schema import CacheLayout
    from kdcache.cache.writer import CacheWriter

    utts = rows // 10
    layout = CacheLayout(num_rows=rows, num_classes=5994, embed_dim=256, logits_mode="factorized",
                         saliency_shape=None, integrated=False, shard_rows=4096, chunk_rows=64)
    rng = np.random.default_rng(0)
    speakers = [f"id{i:05d}" for i in range(5994)]
    spk = rng.integers(0, 5994, utts)
    utt = np.repeat(np.arange(utts), 10)
    writer = CacheWriter.create(
        url, layout, speakers=speakers,
        utterance_ids=[f"{speakers[s]}/v{i:07d}/00001.wav" for i, s in enumerate(spk)],
        utterance_speakers=[speakers[s] for s in spk], utterance_num_samples=np.full(utts, 130000),
        rows=dict(utterance=utt, start=rng.integers(0, 90000, rows), num_samples=np.full(rows, 32240),
                  label=spk[utt], aug_seed=rng.integers(0, 2**62, rows)),
        head=rng.standard_normal((5994, 256)),
        attrs={"tool_version": "bench", "teacher": {"arch": "none", "scale": 32.0}},
    )
    writer._array(sc.DONE)[:] = np.ones(layout.num_shards, dtype=bool)  # every shard marked done
    writer.finalize()


def measure(url: str, repeats: int) -> dict:
    from kdcache.cache.info import cache_info
    from kdcache.cache.reader import TeacherCache

    fns = {
        "open": lambda: TeacherCache.open(url),
        "open + done flags": lambda: TeacherCache.open(url).done(),
        "cache info": lambda: cache_info(url),
        "utterance table": lambda: TeacherCache.open(url).utterances(),
    }
    times = C.interleaved(fns, repeats, warmup=1)
    return {k: C.summary(v) for k, v in times.items()}


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None)
    p.add_argument("--no-s3", action="store_true", help="local only")
    args = p.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000,100000" if args.quick else "10000,100000,1000000,10000000")).split(",")]
    repeats = args.repeats or 3
    settings = C.set_threads(args.threads) | {"sizes": sizes, "repeats": repeats, "shard_rows": 4096,
                                               "utterances": "rows / 10"}
    results: dict[str, dict] = {}
    server = None
    with C.Workdir(args.workdir, "scale-metadata") as wd:
        targets = {"local": lambda n: str(wd / f"meta-{n}.zarr")}
        if not args.no_s3:
            from tests.s3_server import ADMIN, BUCKET, S3Server, weed_binary

            if weed_binary() is not None:
                server = S3Server(wd / "weed").start()
                os.environ.update(server.env(ADMIN))
                targets["s3 (SeaweedFS, loopback)"] = lambda n: f"s3://{BUCKET}/meta-{n}.zarr"
        try:
            for where, url_of in targets.items():
                for n in sizes:
                    t0 = time.perf_counter()
                    create(url_of(n), n)
                    made = time.perf_counter() - t0
                    res = measure(url_of(n), repeats)
                    res["create_s"] = made
                    results.setdefault(where, {})[str(n)] = res
                    print(f"{where} {n:,} rows: created in {made:.1f} s; " + ", ".join(
                        f"{k} {v['median'] * 1e3:.0f} ms" for k, v in res.items() if k != "create_s"), flush=True)
        finally:
            if server is not None:
                server.stop()
    rows = []
    for where, by_size in results.items():
        for n, res in by_size.items():
            rows.append([where, int(n), -(-int(n) // 4096), *(res[k]["median"] * 1e3 for k in
                         ("open", "open + done flags", "cache info", "utterance table"))])
    C.print_table("Metadata at scale (ms, median)", ["store", "rows", "done objects", "open", "open + done",
                                                       "cache info", "utterance table"], rows)
    C.write_json("scale_metadata", {"results": results}, args.out, args, settings)


if __name__ == "__main__":
    main()
