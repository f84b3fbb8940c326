"""MLKD's class-level term without a C x C matrix: time (forward + backward) of ``class_level_loss`` vs
``batch_level_loss`` vs a naive implementation that builds the C x C Gram matrices, C = 5994, B = 256.

Logits are AAM-like (``fixtures.aam_outputs``): the teacher's, and a student's = teacher + noise, at
T = 4 (the MLKD temperatures' middle). The naive value is also checked against the library's.
Also timed for reference: the DKD terms and CE on the same logits (the per-step loss cost of
``--loss dkd``).

    python benchmarks/losses.py --quick
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  (first: it sets the BLAS thread count before numpy loads)
import fixtures as F  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

from kdcache.distill import losses as L  # noqa: E402


def naive_class_level(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """MLKD's reference code: ||P_t^T P_t - P_s^T P_s||_F^2 / C with the C x C matrices built."""
    ps, pt = Fn.softmax(student / T, dim=1), Fn.softmax(teacher / T, dim=1)
    return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / student.shape[1]


def naive_batch_level(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    ps, pt = Fn.softmax(student / T, dim=1), Fn.softmax(teacher / T, dim=1)
    return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / student.shape[0]


def main() -> None:
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--classes", type=int, default=F.VOX2_SPEAKERS)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--no-naive", action="store_true", help="skip the C x C implementation (~0.6 GB, slow)")
    args = p.parse_args()
    settings = C.set_threads(args.threads)
    B, S, T = args.batch_size, args.classes, args.temperature
    repeats = args.repeats or (5 if args.quick else 11)
    settings |= {"batch_size": B, "classes": S, "temperature": T, "repeats": repeats, "dtype": "float32",
                 "measured": "forward + backward (grad w.r.t. the student logits)"}

    head = F.random_head(S, 256)
    labels = np.random.default_rng(0).integers(0, S, B)
    _, teacher_np = F.aam_outputs(labels, head, seed=1)
    teacher = torch.from_numpy(teacher_np)
    student0 = teacher + 2.0 * torch.randn(B, S, generator=torch.Generator().manual_seed(0))
    target = torch.from_numpy(labels)

    def fb(fn):
        def run():
            s = student0.clone().requires_grad_(True)
            fn(s).backward()
        return run

    fns = {
        "class_level_loss": fb(lambda s: L.class_level_loss(s, teacher, T)),
        "batch_level_loss": fb(lambda s: L.batch_level_loss(s, teacher, T)),
        "multi_level_loss (5 temperatures)": fb(lambda s: sum(L.multi_level_loss(s, teacher).values())),
        "dkd_terms + ce (T=1)": fb(lambda s: sum(L.dkd_terms(s, teacher, target, 1.0)) + Fn.cross_entropy(s, target)),
        "ce alone": fb(lambda s: Fn.cross_entropy(s, target)),
    }
    if not args.no_naive:
        fns["naive class level (C x C)"] = fb(lambda s: naive_class_level(s, teacher, T))
        fns["naive batch level (B x B)"] = fb(lambda s: naive_batch_level(s, teacher, T))
    started = time.perf_counter()
    times = C.interleaved(fns, repeats=repeats, warmup=1)

    with torch.no_grad():
        ours = float(L.class_level_loss(student0, teacher, T))
        ours_b = float(L.batch_level_loss(student0, teacher, T))
        check = {"class_level_loss": ours, "batch_level_loss": ours_b}
        if not args.no_naive:
            s64, t64 = student0.double(), teacher.double()
            check["naive_class_float64"] = float(naive_class_level(s64, t64, T))
            check["naive_batch_float64"] = float(naive_batch_level(s64, t64, T))
            check["class_rel_error_vs_float64"] = abs(ours - check["naive_class_float64"]) / abs(check["naive_class_float64"])
            check["batch_rel_error_vs_float64"] = abs(ours_b - check["naive_batch_float64"]) / abs(check["naive_batch_float64"])

    med = {k: C.median(v) for k, v in times.items()}
    base = med["batch_level_loss"]
    C.print_table(f"Loss forward + backward, B = {B}, C = {S}, T = {T:g} (median of {repeats}, 1 thread)",
                  ["loss", "ms", "/ batch_level_loss"], [[k, 1000 * v, v / base] for k, v in med.items()])
    ratio = med["class_level_loss"] / base
    goals = [["class_level_loss / batch_level_loss time", ratio, "<= 2", C.verdict(ratio, "<= 2")]]
    if not args.no_naive:
        goals.append(["naive C x C / class_level_loss time", med["naive class level (C x C)"] / med["class_level_loss"],
                      "reported", ""])
        goals.append(["class_level_loss relative error vs float64 naive", check["class_rel_error_vs_float64"],
                      "reported", ""])
    C.print_table("Loss goals", ["measure", "value", "goal", "verdict"], goals)
    C.write_json("losses", {"ms": {k: C.summary([1000 * t for t in v]) for k, v in times.items()}, "values": check,
                            "goals": [dict(zip(["measure", "value", "goal", "verdict"], g)) for g in goals],
                            "seconds": time.perf_counter() - started},
                 args.out, args, settings)


if __name__ == "__main__":
    main()
