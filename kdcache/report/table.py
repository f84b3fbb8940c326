"""Comparison tables: runs grouped by trial list and training corpus, seeds folded into rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdcache.report.runs import RunRecord, format_setting
from kdcache.evaluate.stats import mean_ci


@dataclass
class Row:
    """One (model, loss, settings) with its seeds. EER values are fractions; ``*_ci`` are half-widths of
    the 95% Student's t interval (None for one seed); ``eer_change_vs_ce`` is relative (-0.3: 30% lower)."""

    model: str
    loss: str
    settings: str
    runs: list[RunRecord]
    eer: float
    eer_ci: float | None
    min_dcf: float
    min_dcf_ci: float | None
    parameters: int | None = None
    flops_per_2s: int | None = None
    eer_change_vs_ce: float | None = None
    kind: str = "student"

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "kind": self.kind, "loss": self.loss, "settings": self.settings,
            "seeds": self.seeds, "runs": [str(r.path) for r in self.runs],
            "eer": self.eer, "eer_ci95": self.eer_ci, "eer_per_seed": [r.eer for r in self.runs],
            "min_dcf": self.min_dcf, "min_dcf_ci95": self.min_dcf_ci, "min_dcf_per_seed": [r.min_dcf for r in self.runs],
            "parameters": self.parameters, "flops_per_2s": self.flops_per_2s, "eer_change_vs_ce": self.eer_change_vs_ce,
        }


@dataclass
class Table:
    """Rows evaluated on one trial list, trained on one corpus; ``why`` says which (and, when a report
    holds several tables, why they are apart)."""

    trials: str
    trials_id: str
    corpus_id: str
    rows: list[Row] = field(default_factory=list)
    why: str = ""


def _settings_text(run: RunRecord, varying: set[str]) -> str:
    parts = [format_setting(k, v) for k, v in run.settings.items()]
    parts += [format_setting(k, run.recipe[k]) for k in sorted(varying) if k in run.recipe]
    return ", ".join(parts) or "-"


def relative_change(value: float, reference: float) -> float | None:
    """(value - reference) / reference; None when the reference is 0."""
    return None if reference == 0 else (value - reference) / reference


def make_rows(runs: list[RunRecord]) -> list[Row]:
    """Fold seeds into rows (teachers first, then students by model and loss) and fill the relative EER
    change against the ``ce`` row of the same student model and recipe."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.row_key(), []).append(run)
    # recipe options are shown only where runs of one kind (students; teachers) differ in them
    recipe_values: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        for key, value in run.recipe.items():
            recipe_values.setdefault((run.kind, key), set()).add(repr(value))
    varying = {kind: {k for (c, k), values in recipe_values.items() if c == kind and len(values) > 1}
               for kind in ("teacher", "student")}
    rows = []
    for members in groups.values():
        members.sort(key=lambda r: r.seed)
        first = members[0]
        eer, eer_ci = mean_ci([r.eer for r in members])
        dcf, dcf_ci = mean_ci([r.min_dcf for r in members])
        rows.append(Row(model=first.model_label, loss=first.loss, settings=_settings_text(first, varying[first.kind]), runs=members,
                        eer=eer, eer_ci=eer_ci, min_dcf=dcf, min_dcf_ci=dcf_ci, kind=first.kind))
    for row in rows:
        if row.kind != "student" or row.loss == "ce":
            continue
        same = [other for other in rows if other.kind == "student" and other.loss == "ce"
                and other.model == row.model and other.runs[0].recipe == row.runs[0].recipe]
        if same:
            row.eer_change_vs_ce = relative_change(row.eer, same[0].eer)
    order = {"teacher": 0, "ce": 1}
    rows.sort(key=lambda r: (r.kind != "teacher", r.model, order.get(r.loss, 2), r.loss, r.settings))
    return rows


def make_tables(runs: list[RunRecord]) -> list[Table]:
    """One table per (trial list, training corpus), never a mixed one; each says what sets it apart."""
    keyed: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        keyed.setdefault((run.trials_id, run.corpus_id), []).append(run)
    tables = []
    for (trials_id, corpus_id), members in keyed.items():
        trial_names = sorted({r.trials for r in members})
        why = f"trial list {', '.join(trial_names)} (sha256 {trials_id[:12]}), training corpus {corpus_id[:12]}"
        tables.append(Table(trials=trial_names[0], trials_id=trials_id, corpus_id=corpus_id,
                            rows=make_rows(members), why=why))
    if len(tables) > 1:
        for table in tables:
            others_trials = {t.trials_id for t in tables if t is not table}
            reason = "its own trial list" if table.trials_id not in others_trials else "its own training corpus"
            table.why = f"{reason}: {table.why}"
    return tables


def format_mean_ci(mean: float, ci: float | None, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    text = f"{mean * scale:.{digits}f}{unit}"
    return text if ci is None else f"{text} ± {ci * scale:.{digits}f}{unit}"


def format_count(value: int | None) -> str:
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return str(value)


def markdown_table(table: Table) -> str:
    """The table as GitHub markdown: EER in percent, minDCF(0.01), each mean ± 95% CI over seeds."""
    lines = [
        "| model | loss | settings | seeds | EER | minDCF(0.01) | parameters | FLOPs / 2 s | EER vs ce |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.rows:
        change = "-" if row.eer_change_vs_ce is None else f"{100 * row.eer_change_vs_ce:+.1f}%"
        lines.append(
            f"| {row.model} | {row.loss} | {row.settings} | {len(row.runs)} | "
            f"{format_mean_ci(row.eer, row.eer_ci, 100, 2, '%')} | {format_mean_ci(row.min_dcf, row.min_dcf_ci, 1, 3)} | "
            f"{format_count(row.parameters)} | {format_count(row.flops_per_2s)} | {change} |"
        )
    return "\n".join(lines)
