"""Bytes per row and KL error of the three logits modes (dense float16, uint8 per-row affine, factorized
embedding + head), for S = 5994 AAM-like teacher logits.

The logits are what a trained cosine (AAM) head gives: ``32 * cos(e, w_c)`` with the target cosine in
U(0.4, 0.85), a few confusable speakers and random class directions (``fixtures.aam_outputs``). Each
mode is written with the library's CacheWriter and read back with ``TeacherCache.logits`` (float32);
the error is ``KL(softmax(z/T) || softmax(z_read/T))`` per row in float64, z the float32 logits given
to the writer. Bytes are the on-disk sizes of the arrays a mode needs (checksums and shard indexes
included), divided by the rows. Also: read throughput of float32 logits per mode, and the probability
mass that top-k storage would leave out (why kdcache stores every logit).

    python benchmarks/storage.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402

import numpy as np  # noqa: E402

from kdcache.cache import schema as sc  # noqa: E402
from kdcache.cache.reader import TeacherCache  # noqa: E402
from kdcache.cache.sampler import BlockSampler  # noqa: E402

TEMPERATURES = (1.0, 2.0, 4.0)
MODE_ARRAYS = {
    "dense": [sc.LOGITS],
    "uint8": [sc.LOGITS, sc.LOGITS_SCALE, sc.LOGITS_OFFSET],
    "factorized": [sc.EMBEDDING, sc.EMBEDDING_NORM],
}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def log_softmax64(z: np.ndarray, T: float) -> np.ndarray:
    x = z.astype(np.float64) / T
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def kl_rows(ref: np.ndarray, got: np.ndarray, T: float) -> np.ndarray:
    lp, lq = log_softmax64(ref, T), log_softmax64(got, T)
    return (np.exp(lp) * (lp - lq)).sum(axis=1)


def worst(results: dict, mode: str, stat: str) -> float:
    return max(results[mode]["kl"][f"T={T:g}"][stat] for T in TEMPERATURES)


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=None, help="rows per cache (default 2048 quick, 8192)")
    p.add_argument("--embed-dim", type=int, default=256)
    args = p.parse_args()
    settings = C.set_threads(args.threads)
    N = args.rows or (2048 if args.quick else 8192)
    repeats = args.repeats or 3
    settings |= {"rows": N, "num_classes": F.VOX2_SPEAKERS, "embed_dim": args.embed_dim, "scale": F.SCALE,
                 "temperatures": list(TEMPERATURES), "kl_dtype": "float64"}
    results: dict[str, dict] = {}
    with C.Workdir(args.workdir, "storage") as wd:
        data = F.make_corpus(wd / "corpus", speakers=8, utterances_per_speaker=2)
        utts = sum(1 for _ in open(data / "wav.scp"))
        reference = None
        for mode in MODE_ARRAYS:
            spec = F.CacheSpec(embed_dim=args.embed_dim, crops_per_utt=-(-N // utts), logits=mode)
            path = F.write_cache(wd / f"{mode}.zarr", data, spec)
            cache = TeacherCache.open(path)
            n = len(cache)
            if reference is None:  # the float32 logits the writer was given (same seed in every mode)
                head = F.random_head(F.VOX2_SPEAKERS, args.embed_dim, spec.seed)
                labels = cache.read([sc.ROW_LABEL], slice(None))[sc.ROW_LABEL]
                reference = np.concatenate([
                    F.shard_values(cache.layout, head, labels, s, spec.seed)["logits"]
                    for s in range(cache.layout.num_shards)])
            got = cache.logits(slice(None))
            stored = sum(du(path / name) for name in MODE_ARRAYS[mode])
            fixed = du(path / sc.HEAD) if mode == "factorized" else 0
            kls = {T: kl_rows(reference, got, T) for T in TEMPERATURES}
            sampler = BlockSampler(n, 256, seed=1)
            batches = list(sampler)

            def read_all(cache=cache, batches=batches):
                for b in batches:
                    cache.logits(b)

            read_all()
            times = C.repeat(read_all, repeats, warmup=0)
            results[mode] = {
                "bytes_per_row": stored / n,
                "fixed_bytes_head": fixed,
                "teacher_bytes_per_row_all_arrays": du(path / "teacher") / n,
                "kl": {f"T={T:g}": {"mean": float(k.mean()), "p99": float(np.quantile(k, 0.99)), "max": float(k.max())}
                       for T, k in kls.items()},
                "max_abs_logit_error": float(np.abs(got - reference).max()),
                "read_rows_per_s_f32": C.summary([len(batches) * 256 / t for t in times]),
            }
        # top-k: the probability mass a top-k store leaves out (reference logits)
        topk = {}
        part = np.sort(reference, axis=1)[:, ::-1]
        for T in TEMPERATURES:
            lp = log_softmax64(part, T)
            pr = np.exp(lp)
            topk[f"T={T:g}"] = {k: float((1.0 - pr[:, :k].sum(axis=1)).mean()) for k in (64, 256, 1024)}

    rows = []
    for mode, r in results.items():
        rows.append([mode, r["bytes_per_row"], r["teacher_bytes_per_row_all_arrays"],
                     *[r["kl"][f"T={T:g}"]["mean"] for T in TEMPERATURES],
                     *[r["kl"][f"T={T:g}"]["max"] for T in TEMPERATURES],
                     r["max_abs_logit_error"], C.median(r["read_rows_per_s_f32"]["samples"])])
    C.print_table(f"Logit storage, S = {F.VOX2_SPEAKERS}, {N} AAM-like rows (KL of softmax(z/T), float64)",
                  ["mode", "logit bytes/row", "teacher bytes/row", *[f"KL mean T={T:g}" for T in TEMPERATURES],
                   *[f"KL max T={T:g}" for T in TEMPERATURES], "max |dz|", "read rows/s f32"], rows)
    head = results["factorized"]["fixed_bytes_head"]
    print(f"factorized also stores teacher/head once: {head:,} bytes ({head / N:.0f} bytes/row at {N} rows)")
    C.print_table("Mean probability mass outside the top-k teacher logits (not a kdcache mode)",
                  ["T", "k=64", "k=256", "k=1024"], [[T, *v.values()] for T, v in topk.items()])
    dense_b, u8_b, f_b = (results[m]["bytes_per_row"] for m in MODE_ARRAYS)
    goals = [
        ["dense float16: KL mean, worst T", worst(results, "dense", "mean"), "<= 1e-6 (DESIGN)",
         C.verdict(worst(results, "dense", "mean"), "<= 1e-6")],
        ["dense float16: KL max over rows, worst T", worst(results, "dense", "max"), "reported", ""],
        ["uint8: KL max over rows, worst T", worst(results, "uint8", "max"), "<= 1e-4 (DESIGN)",
         C.verdict(worst(results, "uint8", "max"), "<= 1e-4")],
        ["factorized: KL max over rows, worst T", worst(results, "factorized", "max"), "<= 1e-6",
         C.verdict(worst(results, "factorized", "max"), "<= 1e-6")],
        ["bytes/row dense : uint8 : factorized", f"{dense_b:.0f} : {u8_b:.0f} : {f_b:.0f}", "reported", ""],
    ]
    C.print_table("Storage checks", ["measure", "value", "expected", "verdict"], goals)
    C.write_json("storage", {"modes": results, "topk_mass_outside": topk,
                             "checks": [dict(zip(["measure", "value", "expected", "verdict"], g)) for g in goals]},
                 args.out, args, settings)


if __name__ == "__main__":
    main()
