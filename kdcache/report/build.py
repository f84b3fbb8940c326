"""``kdcache report``: gather finished runs into report.md, report.json and PNG pictures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.errors import KdcacheError
from kdcache.evaluate.compare import read_scores
from kdcache.report import figures
from kdcache.report.complexity import model_complexity
from kdcache.report.runs import RunRecord, load_runs
from kdcache.report.table import Table, make_tables, markdown_table

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
SALIENCY_ROWS = 3


@dataclass
class Report:
    """What :func:`build_report` wrote: the tables, the pictures and the folders it skipped."""

    out: Path
    tables: list[Table]
    skipped: list[str]
    pictures: dict[str, list[str]] = field(default_factory=dict)  # table index -> PNG names
    notes: list[str] = field(default_factory=list)

    @property
    def markdown_path(self) -> Path:
        return self.out / REPORT_MD


def _run_label(row_model: str, loss: str, settings: str, seed: int | None = None) -> str:
    text = f"{row_model.split(' (')[0]} {loss}" + (f" [{settings}]" if settings != "-" else "")
    return text if seed is None else f"{text} seed {seed}"


def _saliency_rows(cache_url: str, data: str, count: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``count`` good rows of a cache with saliency: replayed fbank, mean IG map, integrated input."""
    from kdcache.cache import schema as sc
    from kdcache.cache.reader import TeacherCache
    from kdcache.data.corpus import load_corpus
    from kdcache.data.features import FeatureConfig
    from kdcache.distill.integrated import cached_mode, integrated_inputs
    from kdcache.train.student import CacheBatches

    cache = TeacherCache.open(cache_url)
    settings = cache.settings
    if not settings.get("saliency"):
        return []
    if settings.get("augment"):
        raise KdcacheError(f"{cache_url}: built with augmentation; its crops are not replayed for pictures")
    corpus = load_corpus(data)
    dataset = CacheBatches(cache, corpus, FeatureConfig.from_dict(settings["features"]), None,
                           with_saliency=True, teacher=("saliency",))
    rows = np.arange(min(count, len(cache)))
    batch = dataset[rows]
    mode = cached_mode(settings)
    integrated = integrated_inputs(batch["feats"], batch["saliency"], mode)
    utterances = cache.read([sc.ROW_UTTERANCE], rows)[sc.ROW_UTTERANCE]
    ids, _, _ = cache.utterances()
    return [
        (f"row {int(r)} ({ids[int(u)]})", batch["feats"][k].numpy(), batch["saliency"][k].float().mean(0).numpy(),
         integrated[k].numpy())
        for k, (r, u) in enumerate(zip(rows, utterances))
    ]


def _complexity(run: RunRecord, memo: dict[str, dict[str, int]]) -> dict[str, int]:
    key = json.dumps([run.arch, run.model_args, run.config.num_classes, run.config.features], sort_keys=True)
    if key not in memo:
        memo[key] = model_complexity(run.config)
    return memo[key]


def build_report(run_dirs: list[str | Path], out: str | Path) -> Report:
    """Read ``run_dirs`` (folders without metrics are named and skipped), write ``out/report.md``,
    ``out/report.json`` and per table ``det_N.png`` and ``training_N.png``, plus ``saliency_N.png`` per
    cache with saliency maps. Returns what was written."""
    out = Path(out)
    runs, skipped = load_runs(list(run_dirs))
    if not runs:
        raise KdcacheError("no run to report: " + ("; ".join(skipped) if skipped else "no folders given"))
    out.mkdir(parents=True, exist_ok=True)
    tables = make_tables(runs)
    report = Report(out=out, tables=tables, skipped=skipped)
    memo: dict[str, dict[str, int]] = {}
    with torch.no_grad():
        for table in tables:
            for row in table.rows:
                size = _complexity(row.runs[0], memo)
                row.parameters, row.flops_per_2s = size["parameters"], size["flops_per_2s"]
    for number, table in enumerate(tables, start=1):
        names: list[str] = []
        curves = []
        for row in table.rows:
            for run in row.runs:
                if run.scores is not None:
                    trials = read_scores(run.scores)
                    scores, labels = trials.scores, trials.labels
                    seed = run.seed if len(row.runs) > 1 else None
                    curves.append((_run_label(row.model, row.loss, row.settings, seed), scores, labels))
        missing = [str(r.path) for row in table.rows for r in row.runs if r.scores is None]
        if missing:
            report.notes.append(f"table {number}: no per-trial scores (no DET curve) in {', '.join(missing)}")
        if curves:
            names.append(figures.plot_det(curves, out / f"det_{number}.png", f"DET, {Path(table.trials).name}").name)
        logs = [(_run_label(row.model, row.loss, row.settings, run.seed), run.train_log)
                for row in table.rows for run in row.runs]
        picture = figures.plot_training_curves(logs, out / f"training_{number}.png", "loss terms per epoch (train_log.jsonl)")
        if picture is not None:
            names.append(picture.name)
        report.pictures[str(number)] = names
    caches = sorted({(r.cache, str(r.config.extra.get("training", {}).get("data"))) for r in runs if r.cache})
    saliency_pictures = []
    for cache_url, data in caches:
        try:
            rows = _saliency_rows(cache_url, data, SALIENCY_ROWS)
        except (KdcacheError, OSError) as why:
            report.notes.append(f"saliency pictures of {cache_url} skipped: {why}")
            continue
        if rows:
            name = f"saliency_{len(saliency_pictures) + 1}.png"
            figures.plot_saliency_rows(rows, out / name, f"cache {cache_url}")
            saliency_pictures.append({"cache": cache_url, "picture": name})
    _write(report, saliency_pictures)
    return report


def _write(report: Report, saliency: list[dict[str, str]]) -> None:
    md = ["# kdcache report", ""]
    md.append("EER and minDCF(0.01): mean ± half-width of the 95% Student's t interval over seeds (no interval "
              "for one seed). Parameters: the embedding network without the AAM head. FLOPs: one forward of a "
              "2 s crop (200 frames), torch's FlopCounterMode. EER vs ce: relative change of the mean EER "
              "against the `ce` row of the same student and recipe.")
    md.append("")
    for number, table in enumerate(report.tables, start=1):
        md += [f"## Table {number}", "", table.why, "", markdown_table(table), ""]
        for name in report.pictures.get(str(number), []):
            md += [f"![{name}]({name})", ""]
    for item in saliency:
        md += [f"## Saliency: {item['cache']}", "", "fbank, IG map (mean over durations), integrated input.", "",
               f"![{item['picture']}]({item['picture']})", ""]
    if report.skipped:
        md += ["## Skipped", ""] + [f"- {line}" for line in report.skipped] + [""]
    if report.notes:
        md += ["## Notes", ""] + [f"- {line}" for line in report.notes] + [""]
    report.markdown_path.write_text("\n".join(md), encoding="utf-8")
    data: dict[str, Any] = {
        "tables": [
            {"why": t.why, "trials": t.trials, "trials_sha256": t.trials_id, "corpus": t.corpus_id,
             "rows": [row.to_json() for row in t.rows], "pictures": report.pictures.get(str(n), [])}
            for n, t in enumerate(report.tables, start=1)
        ],
        "saliency": saliency,
        "skipped": report.skipped,
        "notes": report.notes,
    }
    (report.out / REPORT_JSON).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
