"""Glue of the papers' study (run.sh): corpus statistics, the teacher gate, and the collection of results.

    python studies/papers/study.py corpus-stats CORPUS --out FILE
    python studies/papers/study.py same-test-set CORPUS...
    python studies/papers/study.py gate --teacher DIR --out FILE [--force] CE_RUN...
    python studies/papers/study.py collect --root ROOT --out RESULTS [--k-passes 32] [--online-epochs 32]

The statistics (means, t-intervals) come from kdcache.evaluate.compare; this file only reads run folders
and writes Markdown, JSON and pictures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kdcache.evaluate.compare import t_quantile_975  # noqa: E402

SEED = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% t-interval (nan for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / np.sqrt(v.size)


def fmt(mean: float, half: float, scale: float = 100.0, digits: int = 2) -> str:
    if np.isnan(half):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}"


# ---- corpora -------------------------------------------------------------------------------------
def corpus_stats(args: argparse.Namespace) -> int:
    from kdcache.data.corpus import load_corpus

    out = {}
    for part in ("train", "test"):
        corpus = load_corpus(Path(args.corpus) / part)
        out[part] = {"speakers": len(corpus.speakers), "utterances": len(corpus),
                     "seconds": float(corpus.num_samples.sum()) / 16000.0}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


def _test_set_digest(corpus: Path) -> str:
    digest = hashlib.sha256()
    for name in ("wav.scp", "utt2spk", "trials.txt"):
        digest.update((corpus / "test" / name).read_bytes())
    for line in (corpus / "test" / "wav.scp").read_text().splitlines():
        digest.update((corpus / "wav" / line.split()[0]).read_bytes())
    return digest.hexdigest()


def same_test_set(args: argparse.Namespace) -> int:
    digests = {c: _test_set_digest(Path(c)) for c in args.corpora}
    if len(set(digests.values())) != 1:
        for c, d in digests.items():
            print(f"{c}: test set sha256 {d}", file=sys.stderr)
        print("the corpora's test sets differ", file=sys.stderr)
        return 1
    print(f"{len(digests)} corpora share one test set (sha256 {next(iter(digests.values()))[:16]})")
    return 0


# ---- the teacher gate ----------------------------------------------------------------------------
def _metrics(run: Path) -> dict | None:
    path = run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def gate(args: argparse.Namespace) -> int:
    teacher = _metrics(Path(args.teacher))
    if teacher is None:
        print(f"{args.teacher}/metrics.json: missing (run stage teacher first)", file=sys.stderr)
        return 2
    families: dict[str, list[float]] = defaultdict(list)
    for run in map(Path, args.ce):
        m = _metrics(run)
        match = SEED.match(run.name)
        if m is None or match is None:
            print(f"{run}: no metrics.json, left out", file=sys.stderr)
            continue
        families[match["group"]].append(m["eer"])
    if not families:
        print("no CE student has finished", file=sys.stderr)
        return 2
    lines = ["# Teacher against the CE students", "",
             f"Teacher `{args.teacher}`: EER {100 * teacher['eer']:.2f}%, minDCF(0.01) {teacher['min_dcf']:.3f}.", "",
             "| CE student | seeds | EER % (mean ± 95% CI) | teacher's margin (points) |", "|---|---|---|---|"]
    best = None
    for family, eers in sorted(families.items()):
        mean, half = mean_ci(eers)
        lines.append(f"| {family} | {len(eers)} | {fmt(mean, half)} | {100 * (mean - teacher['eer']):+.2f} |")
        best = mean if best is None else min(best, mean)
    margin = best - teacher["eer"]
    ok = margin > 0
    lines += ["", f"Margin over the best CE student: {100 * margin:+.2f} EER points "
              f"({100 * margin / best:+.0f}% of its EER). " + ("The teacher is better: KD can help."
              if ok else "The teacher is NOT better than a CE student: train a wider or longer one "
              "(TEACHER_ARGS / TEACHER_EPOCHS) before the KD grid.")]
    if not ok and args.force:
        lines += ["", "The study went on anyway (`run.sh --force`): KD results below rest on a teacher no better than CE."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok or args.force else 3


# ---- collection ----------------------------------------------------------------------------------
def _output_dir(root: Path, name: str) -> Path | None:
    for parent in ("students", "models"):
        if (root / parent / name).is_dir():
            return root / parent / name
    if name == "teacher":
        return root / "models" / "teacher"
    return None


def _cpu_table(root: Path) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Markdown lines of CPU time per stage and the (wall, cpu) seconds of each run."""
    per_run: dict[str, tuple[float, float]] = {}
    per_stage: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    path = root / "cpu_time.tsv"
    rows = path.read_text().splitlines() if path.is_file() else []
    for row in rows:
        stage, name, real, user, sys_ = row.split("\t")
        per_run[name] = (float(real), float(user) + float(sys_))
        acc = per_stage[stage]
        acc[0] += 1
        acc[1] += float(real)
        acc[2] += float(user) + float(sys_)
    lines = ["# CPU time of the study", "", "Measured per run with bash's `time` (user + sys of the run and its "
             "children, DataLoader workers included). Runs that ran in parallel (`--jobs`) overlap in wall time.", "",
             "| stage | runs | wall h (sum) | CPU h |", "|---|---|---|---|"]
    total = [0, 0.0, 0.0]
    for stage, (n, wall, cpu) in per_stage.items():
        lines.append(f"| {stage} | {n} | {wall / 3600:.2f} | {cpu / 3600:.2f} |")
        total = [total[0] + n, total[1] + wall, total[2] + cpu]
    lines.append(f"| **all** | {total[0]} | {total[1] / 3600:.2f} | **{total[2] / 3600:.2f}** |")
    restarted = sorted(p.parent.name for p in (root / "log").glob("*/log.attempt-1.txt") if p.parent.name in per_run)
    if restarted:
        lines += ["", f"{len(restarted)} run(s) finished on a later attempt after an interruption or a failure; "
                  "only the last attempt's time is counted, so the totals are a lower bound: " + ", ".join(restarted)]
    return lines, per_run


def _reference(group: str, groups: set[str]) -> str | None:
    """The CE group of the same student: the longest prefix P of ``group`` with ``P-ce`` present."""
    parts = group.split("-")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = "-".join(parts[:cut]) + "-ce"
        if candidate in groups and candidate != group:
            return candidate
    return None


def _results_table(runs: dict[str, dict]) -> list[str]:
    """One table per trial list: mean ± 95% CI over seeds of EER and minDCF, change against CE."""
    by_trials: dict[str, dict[str, list[tuple[int, dict]]]] = defaultdict(lambda: defaultdict(list))
    for name, m in runs.items():
        match = SEED.match(name)
        group, seed = (match["group"], int(match["seed"])) if match else (name, -1)
        by_trials[m.get("trials", "?")][group].append((seed, m))
    lines = ["# Results (mean ± 95% t-interval over seeds)", "",
             "Written by `studies/papers/study.py collect` (the columns of `kdcache report`; use its report when "
             "it exists). EER in %, change against the same student with `ce`, seeds as run.", ""]
    for trials, groups in sorted(by_trials.items()):
        lines += [f"## Trials `{trials}`", "", "| system | seeds | EER % | minDCF(0.01) | EER vs ce | per seed EER % |",
                  "|---|---|---|---|---|---|"]
        means = {g: mean_ci([m["eer"] for _, m in v])[0] for g, v in groups.items()}
        for group, items in sorted(groups.items()):
            items.sort(key=lambda x: x[0])
            eer, dcf = mean_ci([m["eer"] for _, m in items]), mean_ci([m["min_dcf"] for _, m in items])
            ref = _reference(group, set(groups))
            change = f"{100 * (eer[0] - means[ref]) / means[ref]:+.1f}%" if ref and means[ref] else ""
            seeds = " / ".join(f"{100 * m['eer']:.2f}" for _, m in items)
            lines.append(f"| {group} | {len(items)} | {fmt(*eer)} | {fmt(*dcf, scale=1.0, digits=3)} | {change} | {seeds} |")
        lines.append("")
    return lines


def _ksweep(runs: dict[str, dict], per_run: dict[str, tuple[float, float]], out: Path, k_passes: int,
            online_epochs: int) -> list[str]:
    """EER against K with online KD as a band, and each K's CPU cost as a share of online KD's.

    The share for one student counts the cache build; with the cache shared by many students only the
    student's own CPU time is left (the cache's cost per student tends to 0)."""
    pattern = re.compile(r"^xvector-dkd-T2-b8-(K(?P<k>\d+)|online)-s\d+$")
    points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # (eer, wall s, CPU s)
    for name, m in runs.items():
        match = pattern.match(name)
        if match:
            points[match["k"] or "online"].append((m["eer"], *per_run.get(name, (np.nan, np.nan))))
    ks = sorted(int(k) for k in points if k != "online")
    if not ks:
        return []
    summary: dict[str, tuple[list[float], float, float]] = {}  # group: (EERs, mean wall s, mean CPU s)
    for group, rows in points.items():
        eers, walls, cpus = zip(*rows)
        summary[group] = (list(eers), float(np.nanmean(walls)), float(np.nanmean(cpus)))
    online = summary.get("online")
    online_cpu = online[2] if online else np.nan

    def share(cpu: float) -> str:
        return "" if np.isnan(cpu / online_cpu) else f"{cpu / online_cpu:.2f}"

    lines = ["# Cached KD with K crops per utterance against online KD (dkd, beta 8, T 2; x-vector)", "",
             f"Equal steps: K crops x {k_passes} // K epochs cached; online {online_epochs} epochs of fresh crops. "
             "Cost is CPU time (user + sys) as a share of the online student's; wall time is shown as well, "
             "but two runs shared the machine's cores.", "",
             "| K | epochs | seeds | EER % | student wall min | student CPU min | cache build CPU min "
             "| CPU / online, 1 student | CPU / online, cache shared |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in ks:
        eers, wall, cpu = summary[str(k)]
        build = per_run.get(f"cache-k{k}", (np.nan, np.nan))[1]
        build_min = "" if np.isnan(build) else f"{build / 60:.1f}"
        lines.append(f"| {k} | {k_passes // k} | {len(eers)} | {fmt(*mean_ci(eers))} | {wall / 60:.1f} | "
                     f"{cpu / 60:.1f} | {build_min} | {share(build + cpu)} | {share(cpu)} |")
    if online:
        eers, wall, _ = online
        lines.append(f"| online | {online_epochs} | {len(eers)} | {fmt(*mean_ci(eers))} | {wall / 60:.1f} | "
                     f"{online_cpu / 60:.1f} | | 1.00 | 1.00 |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    stats = [mean_ci(summary[str(k)][0]) for k in ks]
    ax.errorbar(ks, [100 * m for m, _ in stats], yerr=[0 if np.isnan(h) else 100 * h for _, h in stats],
                marker="o", capsize=3, label="cached, K crops per utterance")
    if online:
        m, h = mean_ci(online[0])
        h = 0.0 if np.isnan(h) else h
        ax.axhspan(100 * (m - h), 100 * (m + h), color="tab:orange", alpha=0.25)
        ax.axhline(100 * m, color="tab:orange", label="online (mean, 95% CI band)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("cached crops per utterance K (equal steps)")
    ax.set_ylabel("EER %")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ksweep.png", dpi=120)
    plt.close(fig)
    return lines + ["", "![EER against K](ksweep.png)"]


def _speakers(runs: dict[str, dict], out: Path) -> list[str]:
    """ENSKD (a): EER against the number of training speakers, one row per corpus (same test set)."""
    pattern = re.compile(r"^spk(?P<n>\d+)x(?P<u>\d+)-xvector-(?P<loss>ce-own|ce|dkd-T2-b8)-s\d+$")
    cells: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, m in runs.items():
        match = pattern.match(name)
        if match:
            cells[(int(match["n"]), int(match["u"]))][match["loss"]].append(m["eer"])
    if not cells:
        return []
    losses = ("ce-own", "ce", "dkd-T2-b8")
    lines = ["# EER against the number of training speakers (x-vector; one test set for all corpora)", "",
             "`ce-own`: CE in the corpus's own label space (`train-teacher --arch xvector`); `ce` and `dkd-T2-b8`: "
             "students of the cache built by the teacher of the largest label space. EER % mean ± 95% CI (seeds).", "",
             "| training speakers x utterances | " + " | ".join(losses) + " |", "|---|---|---|---|"]
    for key in sorted(cells):
        row = [fmt(*mean_ci(cells[key][loss])) + f" ({len(cells[key][loss])})" if cells[key][loss] else ""
               for loss in losses]
        lines.append(f"| {key[0]} x {key[1]} | " + " | ".join(row) + " |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for loss in losses:
        keys = [k for k in sorted(cells) if cells[k][loss]]
        if not keys:
            continue
        stats = [mean_ci(cells[k][loss]) for k in keys]
        ax.errorbar([k[0] for k in keys], [100 * m for m, _ in stats],
                    yerr=[0 if np.isnan(h) else 100 * h for _, h in stats], marker="o", capsize=3, label=loss)
    ax.set_xscale("log", base=2)
    ax.set_xticks([k[0] for k in sorted(cells)], [str(k[0]) for k in sorted(cells)])
    ax.set_xlabel("training speakers (same number of utterances)")
    ax.set_ylabel("EER %")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speakers.png", dpi=120)
    plt.close(fig)
    return lines + ["", "![EER against the number of training speakers](speakers.png)"]


def _saliency(out: Path) -> list[str]:
    """Deletion / insertion AUCs of every saliency-eval run under OUT/saliency."""
    lines = []
    for path in sorted((out / "saliency").glob("*/saliency_eval.json")):
        summary = json.loads(path.read_text())
        if not lines:
            lines = ["# Deletion and insertion (kdcache saliency-eval)", "",
                     "AUC mean ± 1.96 SE over crops; lower deletion and higher insertion AUC: a more faithful map. "
                     "Gaps: mean |curve - teacher's curve|; r: frame-saliency correlation with the teacher.", ""]
        lines += [f"## {path.parent.name} ({len(summary['utterances'])} crops)", "",
                  "| model | deletion AUC | insertion AUC | deletion gap | insertion gap | r |", "|---|---|---|---|---|---|"]
        for m in summary["models"]:
            d, i, v = m["auc_deletion"], m["auc_insertion"], m.get("vs_reference")
            gaps = (f"{v['mean_abs_deletion_gap']:.3f} | {v['mean_abs_insertion_gap']:.3f} | "
                    f"{v['frame_saliency_correlation']:.3f}") if v else " | | "
            lines.append(f"| {m['label']} | {d['mean']:.3f} ± {d['ci95']:.3f} | {i['mean']:.3f} ± {i['ci95']:.3f} | {gaps} |")
        lines += ["", f"![{path.parent.name}](saliency/{path.parent.name}/saliency_eval.png)", ""]
    return lines


def _ig_steps(out: Path) -> list[str]:
    """IG maps against the step count (kdcache ig-steps under OUT/ig_steps): one table per teacher, one picture."""
    summaries = [json.loads(p.read_text()) for p in sorted((out / "ig_steps").glob("*/ig_steps.json"))]
    if not summaries:
        return []
    from kdcache.evaluate.ig_steps import plot_ig_steps

    plot_ig_steps(summaries, out / "ig_steps.png")
    lines = ["# IG maps against the step count (kdcache ig-steps)", "",
             "Per teacher, the same centre crops, maps made as the cache builder makes them. Completeness "
             "error: |sum of the map - (f(x) - f(0))| / |f(x) - f(0)|, f the target logit (0 for converged "
             "maps). r: Pearson correlation with the map at the most steps. Integrated input: the teacher's "
             "top-1 on it, and the KL (nats) of its softmax there to that at the most steps: what an imlkd "
             "student is taught. Mean ± 1.96 SE over crops.", ""]
    for s in summaries:
        settings = s["settings"]
        lines += [f"## {s['label']} ({len(s['utterances'])} crops of {settings['crop_seconds']:g} s, durations "
                  f"{', '.join(f'{d:g}' for d in settings['ig_durations'])} s, {settings['integrated_input']} input)", "",
                  "| steps | completeness error | r with the most steps | integrated top-1 | KL to the most steps (nats) "
                  "| CPU s per crop |", "|---|---|---|---|---|---|"]
        for r in s["rows"]:
            pm = lambda m, scale=1.0, digits=3: (  # noqa: E731
                f"{scale * r[m]['mean']:.{digits}f} ± {scale * r[m]['ci95']:.{digits}f}")
            lines.append(f"| {r['steps']} | {pm('completeness_error_relative')} | {pm('map_correlation')} | "
                         f"{pm('integrated_top1', 100, 1)}% | {pm('integrated_kl', 1, 4)} | {pm('cpu_seconds_per_crop', 1, 3)} |")
        lines.append("")
    return lines + ["![IG maps against the step count](ig_steps.png)", ""]


def _caches(root: Path) -> list[str]:
    """Every finished cache of the study: its IG settings and the teacher's top-1 on its crops and on the
    integrated inputs (kdcache.cache.info.teacher_top1, 512 rows), the check that caught imlkd's targets."""
    from kdcache.cache.info import teacher_top1
    from kdcache.cache.reader import TeacherCache

    lines = []
    for path in sorted((root / "caches").glob("*.zarr")):
        if not (root / "log" / f"cache-{path.stem}" / "done").is_file():
            continue
        cache = TeacherCache.open(path)
        sal = cache.settings.get("saliency") or {}
        top1 = teacher_top1(cache) or {}
        if not lines:
            lines = ["# The study's caches: the teacher's top-1 on them (kdcache cache info)", "",
                     "Top-1: how often the cached teacher logits name the row's speaker, over the first 512 rows; "
                     "'integrated': on IML-KD's integrated inputs (caches with saliency).", "",
                     "| cache | rows | IG steps | integrated input | top-1, crops | top-1, integrated |",
                     "|---|---|---|---|---|---|"]
        integrated = f"{100 * top1['integrated_logits']:.1f}%" if "integrated_logits" in top1 else "-"
        crops = f"{100 * top1['teacher_logits']:.1f}%" if top1 else "-"
        lines.append(f"| {path.stem} | {len(cache):,} | {sal.get('steps', '-')} | {sal.get('integrated_input', '-')} | "
                     f"{crops} | {integrated} |")
    return lines


def verdict(over_speakers: dict, over_seeds: dict | None) -> str:
    """'holds' when every interval lies below 0 (A better: lower EER), 'reversed' when every one lies above,
    otherwise 'cannot tell' naming the interval(s) that cross 0. A seeds interval of width 0 (every seed
    gave the same difference) is no evidence either way: it never makes an ordering hold."""
    flat = bool(over_seeds and "note" in over_seeds)
    intervals = {"speakers": over_speakers, **({"seeds": over_seeds} if over_seeds and not flat else {})}
    if all(i["high"] < 0 for i in intervals.values()) or all(i["low"] > 0 for i in intervals.values()):
        if flat:
            return "cannot tell (the seeds interval has width 0)"
        return "holds" if over_speakers["high"] < 0 else "reversed"
    crossing = [name for name, i in intervals.items() if i["low"] <= 0 <= i["high"]]
    if not crossing:
        return "cannot tell (intervals disagree)"
    return f"cannot tell ({' and '.join(crossing)} interval{'s cross' if len(crossing) > 1 else ' crosses'} 0)"


def _comparisons(out: Path) -> list[str]:
    """One line per `kdcache compare` result under OUT/compare: EER(A) - EER(B) in points with both 95%
    intervals, and whether A's claimed advantage (A better than B) holds."""
    lines = []
    for path in sorted((out / "compare").glob("*.json")):
        doc = json.loads(path.read_text())
        sp, se = doc["over_speakers"], doc.get("over_seeds")
        if se and "skipped" in se:  # e.g. a single teacher against CE seeds: no interval over seeds
            se = None
        if not lines:
            lines = ["# Paired comparisons: is A better than B? (kdcache compare)", "",
                     "EER(A) - EER(B) in points (negative: A better), with a 95% percentile bootstrap over the "
                     f"{sp['num_speakers']} test speakers ({sp['replicates']} draws, same trials) and a 95% "
                     "t-interval over seeds. 'holds': both intervals below 0.", "",
                     "| A | B | seeds A / B | EER A % | EER B % | A - B (points) | over speakers | over seeds | "
                     "relative | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
        seeds = f"{sp['seeds_a']} / {sp['seeds_b']}"
        seed_ci = f"[{100 * se['low']:+.2f}, {100 * se['high']:+.2f}] ({se['method']})" if se else "-"
        lines.append(f"| {doc['a']} | {doc['b']} | {seeds} | {100 * sp['eer_a']:.2f} | {100 * sp['eer_b']:.2f} | "
                     f"{100 * sp['difference']:+.2f} | [{100 * sp['low']:+.2f}, {100 * sp['high']:+.2f}] | {seed_ci} | "
                     f"{100 * sp['relative']:+.1f}% | {verdict(sp, se)} |")
    return lines


def collect(args: argparse.Namespace) -> int:
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu_lines, per_run = _cpu_table(root)
    runs: dict[str, dict] = {}
    for log in sorted((root / "log").glob("*/done")):
        name = log.parent.name
        target = out / "runs" / name
        target.mkdir(parents=True, exist_ok=True)
        for f in ("settings.txt", "time.txt"):
            if (log.parent / f).is_file():
                shutil.copyfile(log.parent / f, target / f)
        tail = (log.parent / "log.txt").read_text(errors="replace").replace("\r", "\n").splitlines()[-20:]
        (target / "log_tail.txt").write_text("\n".join(line for line in tail if line.strip()) + "\n")
        run_dir = _output_dir(root, name)
        if run_dir is not None and (run_dir / "metrics.json").is_file():
            shutil.copyfile(run_dir / "metrics.json", target / "metrics.json")
            runs[name] = json.loads((run_dir / "metrics.json").read_text())
    (out / "cpu_time.md").write_text("\n".join(cpu_lines) + "\n")
    (out / "results.md").write_text("\n".join(_results_table(runs)) + "\n")
    ksweep = _ksweep(runs, per_run, out, args.k_passes, args.online_epochs)
    if ksweep:
        (out / "ksweep.md").write_text("\n".join(ksweep) + "\n")
    written = ["results.md", "cpu_time.md"] + (["ksweep.md"] if ksweep else [])
    for name, lines in (("speakers.md", _speakers(runs, out)), ("saliency.md", _saliency(out)),
                        ("ig_steps.md", _ig_steps(out)),
                        ("comparisons.md", _comparisons(out)), ("caches.md", _caches(root))):
        if lines:
            (out / name).write_text("\n".join(lines) + "\n")
            written.append(name)
    pending = root / "pending.txt"
    if pending.is_file():
        shutil.copyfile(pending, out / "pending.txt")
    print(f"collected {len(runs)} runs with metrics into {out} ({', '.join(written)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("corpus-stats")
    p.add_argument("corpus")
    p.add_argument("--out", required=True)
    p.set_defaults(func=corpus_stats)
    p = sub.add_parser("same-test-set")
    p.add_argument("corpora", nargs="+")
    p.set_defaults(func=same_test_set)
    p = sub.add_parser("gate")
    p.add_argument("--teacher", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("ce", nargs="+")
    p.set_defaults(func=gate)
    p = sub.add_parser("collect")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--k-passes", type=int, default=32)
    p.add_argument("--online-epochs", type=int, default=32)
    p.set_defaults(func=collect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
