"""A summary of a cache: provenance, completeness, per-array sizes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import schema as sc
from .fingerprint import cache_fingerprint, fingerprint_inputs
from .reader import TeacherCache


def _bytes_by_folder(path: Path) -> dict[str, int]:
    """Bytes of the files in each folder below ``path`` (relative '/'-paths, '' for ``path``), one walk."""
    sizes: dict[str, int] = {}
    for root, _, files in os.walk(path):
        rel = Path(root).relative_to(path).as_posix()
        sizes["" if rel == "." else rel] = sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return sizes


def _bytes_under(sizes: dict[str, int], folder: str) -> int:
    return sum(n for rel, n in sizes.items() if rel == folder or rel.startswith(folder + "/"))


TOP1_ROWS = 512  # enough for +-2.2 points (one standard error at 50%); 6 MB of float16 logits at 5994 classes
INTEGRATED_TOP1_FLOOR = 0.5  # below this share of its top-1 on the crops, the integrated outputs mislead


def teacher_top1(cache: TeacherCache, rows: int = TOP1_ROWS) -> dict[str, Any] | None:
    """How often the cached teacher outputs name the row's speaker.

    Top-1 accuracy (a fraction) of ``teacher_logits`` and, where stored, of ``integrated_logits`` (the
    teacher on IML-KD's integrated inputs) against ``rows/label``, over the first ``rows`` rows of done
    shards less those without a label (-1) or readable audio. Rows are stored in a seeded random order,
    so this is a random sample of the crops. Returns ``{"rows": n, field: accuracy, ...}``, or None
    when no row qualifies.
    """
    lay = cache.layout
    parts, count = [], 0
    for shard in np.flatnonzero(cache.done()):
        part = np.arange(lay.shard_slice(int(shard)).start, lay.shard_slice(int(shard)).stop)[: rows - count]
        parts.append(part)
        count += len(part)
        if count >= rows:
            break
    if not count:
        return None
    picked = np.concatenate(parts)
    meta = cache.read([sc.ROW_LABEL, sc.ROW_BAD], picked)
    usable = (meta[sc.ROW_LABEL] >= 0) & (meta[sc.ROW_BAD] == 0)
    if not usable.any():
        return None
    picked, labels = picked[usable], meta[sc.ROW_LABEL][usable]
    fields = ["teacher_logits"] + (["integrated_logits"] if lay.integrated else [])
    out: dict[str, Any] = {"rows": int(len(picked))}
    for name in fields:
        out[name] = float(np.mean(cache.read(name, picked).argmax(axis=1) == labels))
    return out


def integrated_input_warning(top1: dict[str, Any] | None, mode: str | None = None) -> str | None:
    """A warning when the teacher is mostly wrong on the integrated inputs (imlkd would distill wrong
    speakers), else None. ``mode``: the cache's ``--integrated-input``, for the advice."""
    if not top1 or "integrated_logits" not in top1:
        return None
    crops, integrated = top1["teacher_logits"], top1["integrated_logits"]
    if integrated >= INTEGRATED_TOP1_FLOOR * crops:
        return None
    advice = ("Rebuild with --integrated-input weighted." if mode in (None, "attribution") else
              f"Check the IG settings (--integrated-input {mode}).")
    return (f"the teacher names the right speaker for {integrated:.1%} of the integrated inputs against "
            f"{crops:.1%} of the crops: imlkd would distill mostly wrong speakers. {advice}")


def cache_info(cache: TeacherCache | str | Path) -> dict[str, Any]:
    """Provenance attrs, the fingerprint (sha256 over what the cached values are a function of: teacher
    weights, features, crop plan, corpus manifest, augmentation, saliency, logits mode), completeness,
    rows/shards done, the teacher's top-1 accuracy on a sample of rows (:func:`teacher_top1`) and, for
    local caches, on-disk bytes per array and in all."""
    cache = cache if isinstance(cache, TeacherCache) else TeacherCache.open(cache)
    lay = cache.layout
    done = cache.done()
    rows_done = int(sum(lay.shard_slice(int(s)).stop - lay.shard_slice(int(s)).start for s in np.flatnonzero(done)))
    local = None if cache.is_remote else Path(cache.url.removeprefix("file://"))
    sizes = _bytes_by_folder(local) if local is not None else {}
    U = int(cache.settings.get("num_utterances", 0))
    arrays: dict[str, Any] = {}
    for name, spec in sc.array_specs(lay, U, with_head=bool(cache.settings.get("has_head"))).items():
        arr = cache.array(name)
        entry: dict[str, Any] = {
            "shape": list(arr.shape),
            "dtype": "str" if arr.dtype.kind in "TUO" else str(arr.dtype),
            "chunks": list(arr.chunks),
            "shards": list(arr.shards) if arr.shards else None,
        }
        if local is not None:
            stored = _bytes_under(sizes, name)
            entry["stored_bytes"] = stored
            if spec.row_indexed:
                entry["bytes_per_row"] = stored / max(rows_done, 1)
        arrays[name] = entry
    info: dict[str, Any] = {
        "path": cache.url,
        "fingerprint": cache_fingerprint(cache.settings),
        "fingerprint_inputs": sorted(fingerprint_inputs(cache.settings)),
        "settings": cache.settings,
        "complete": bool(done.all()),
        "num_rows": lay.num_rows,
        "rows_done": rows_done,
        "num_shards": lay.num_shards,
        "shards_done": int(done.sum()),
        "missing_shards": [int(s) for s in np.flatnonzero(~done)],
        "arrays": arrays,
        "outputs": {o.name: {"field": o.field, "stored": o.stored(lay), "build_option": o.build_option,
                             "arrays": [a[0] for a in o.arrays(lay)]} for o in sc.OUTPUTS},
        "teacher_top1": teacher_top1(cache),
    }
    if local is not None:
        info["bytes_on_disk"] = sum(sizes.values())
    return info


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of cache_info's dict."""
    s = info["settings"]
    lay = s.get("layout", {})
    lines = [
        f"cache          {info['path']}",
        f"fingerprint    {info['fingerprint']}",
        f"format         {s.get('format_version')}   created {s.get('created', '?')}",
        f"rows           {info['rows_done']:,} of {info['num_rows']:,} written; shards {info['shards_done']} of "
        f"{info['num_shards']} done" + ("" if info["complete"] else " (INCOMPLETE)"),
        f"layout         S={lay.get('num_classes')} D={lay.get('embed_dim')} logits={lay.get('logits_mode')} "
        f"shard_rows={lay.get('shard_rows')} chunk_rows={lay.get('chunk_rows')} "
        f"saliency={lay.get('saliency_shape')} integrated={lay.get('integrated')}",
    ]
    skip = {"format_version", "created", "layout", "complete", "initialized"}
    for key in sorted(k for k in s if k not in skip):
        lines.append(f"{key:<14} {json.dumps(s[key], sort_keys=True)}")
    missing = info["missing_shards"]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        lines.append(f"missing        shards {shown}")
    outputs = info.get("outputs", {})
    held = [name for name, o in outputs.items() if o["stored"]]
    absent = [f"{name} ({o['build_option']})" for name, o in outputs.items() if not o["stored"]]
    lines.append(f"{'outputs':<14} {', '.join(held)}" + (f"; not built: {', '.join(absent)}" if absent else ""))
    top1 = info.get("teacher_top1")
    if top1:
        on_integrated = (f"; {top1['integrated_logits']:.1%} on the integrated inputs"
                         if "integrated_logits" in top1 else "")
        lines.append(f"{'teacher top-1':<14} {top1['teacher_logits']:.1%} of {top1['rows']} crops{on_integrated}")
        warning = integrated_input_warning(top1, (s.get("saliency") or {}).get("integrated_input"))
        if warning:
            lines.append(f"{'WARNING':<14} {warning}")
    methods = info.get("methods")
    if methods:
        usable = [name for name, why in methods.items() if not why]
        lines.append(f"{'methods':<14} {', '.join(usable)}"
                     + "".join(f"; not {name}: {why}" for name, why in methods.items() if why))
    lines.append("arrays")
    for name, a in info["arrays"].items():
        size = f"  {_size(a['stored_bytes']):>10}" if "stored_bytes" in a else ""
        per_row = f"  {a['bytes_per_row']:.0f} B/row" if "bytes_per_row" in a else ""
        lines.append(f"  {name:<30} {str(tuple(a['shape'])):<22} {a['dtype']:<10}{size}{per_row}")
    return "\n".join(lines)
