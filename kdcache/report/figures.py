"""Report pictures (matplotlib, Agg backend, PNG): DET curves, training curves, saliency rows."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdcache.evaluate.metrics import det_curve  # noqa: E402

# DET axes as NIST's DETware and WeSpeaker's compute_det.py draw them: probit (normal deviate) scales.
DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
DET_LIMITS = (0.0005, 0.5)
# train_log.jsonl fields that are bookkeeping, not loss terms
LOG_META = {"epoch", "iterations", "lr", "margin", "seconds", "rows_per_s", "grad_norm", "acc"}


def probit(p: np.ndarray | float) -> np.ndarray:
    """Normal deviate Phi^-1(p), with p clipped into the DET limits so 0 and 1 stay on the plot."""
    clipped = np.clip(np.asarray(p, dtype=np.float64), DET_LIMITS[0] / 10, 1 - DET_LIMITS[0] / 10)
    inv = np.vectorize(NormalDist().inv_cdf)
    return inv(clipped)


def det_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(miss, false_alarm)`` rates at every threshold between distinct scores (see ``det_curve``)."""
    fnr, fpr, _ = det_curve(scores, labels)
    return fnr, fpr


def plot_det(curves: list[tuple[str, np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """One DET plot of ``(label, scores, is_target)`` systems, false-alarm on x, miss on y, both in %."""
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    colours = plt.get_cmap("tab10")
    worst = 0.0
    for index, (label, scores, labels) in enumerate(curves):
        miss, fa = det_points(scores, labels)
        worst = max(worst, float(np.min(np.maximum(miss, fa))))  # about the EER
        ax.plot(probit(fa), probit(miss), label=label, color=colours(index % 10), linewidth=1.4)
    # weak systems (a smoke run) stay in the picture on a wider range
    lower, upper = DET_LIMITS if worst < 0.25 else (0.005, 0.95)
    shown = [t for t in DET_TICKS + (0.6, 0.8, 0.9) if lower <= t <= upper]
    ticks = probit(np.array(shown))
    names = [f"{100 * t:g}" for t in shown]
    lo, hi = probit(lower), probit(upper)
    ax.plot([lo, hi], [lo, hi], color="0.7", linewidth=0.8, linestyle=":")  # EER line
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, color="0.85")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def loss_terms(log: list[dict]) -> list[str]:
    """The per-epoch loss terms of a train_log.jsonl (e.g. loss, ce, tckd, nckd)."""
    names: list[str] = []
    for record in log:
        for key, value in record.items():
            if key not in LOG_META and isinstance(value, (int, float)) and key not in names:
                names.append(key)
    return names


def plot_training_curves(runs: list[tuple[str, list[dict]]], path: str | Path, title: str) -> Path | None:
    """One panel per loss term, one line per run (value per epoch); None when no run has a log."""
    runs = [(label, log) for label, log in runs if log]
    terms: list[str] = []
    for _, log in runs:
        terms += [t for t in loss_terms(log) if t not in terms]
    if not terms:
        return None
    cols = min(3, len(terms))
    rows = (len(terms) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, term in zip(axes.flat, terms):
        for index, (label, log) in enumerate(runs):
            points = [(r["epoch"], r[term]) for r in log if term in r and "epoch" in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=label, color=colours(index % 10))
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, color="0.9")
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(3, max(len(labels), 1)))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(labels) + 2) // 3), 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_saliency_rows(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Per cache row ``(label, fbank [T, F], ig_map [T, F], integrated [T, F])``: three images side by side,
    frequency bins up, frames across."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 2.4 * len(rows)), squeeze=False)
    for line, (label, fbank, ig, integrated) in zip(axes, rows):
        bound = float(np.abs(ig).max()) or 1.0
        for ax, image, name, cmap, limits in (
            (line[0], fbank, "fbank", "viridis", (None, None)),
            (line[1], ig, "IG map", "RdBu_r", (-bound, bound)),
            (line[2], integrated, "integrated input", "viridis", (None, None)),
        ):
            shown = ax.imshow(np.asarray(image).T, origin="lower", aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_title(f"{label}: {name}", fontsize=8)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
            fig.colorbar(shown, ax=ax, fraction=0.04)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
