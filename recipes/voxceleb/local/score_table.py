"""Stage 7 of recipes/voxceleb/run.sh: one Markdown table of the metrics that stage 6 wrote.

Reads ``SCORES/<model>/vox1_<O|E|H>_<norm>.json`` (``kdcache evaluate --out``) and prints a row per
(model, score normalisation) with EER (%) and minDCF(0.01) on Vox1-O, E and H; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NAME = re.compile(r"^vox1_([OEH])_(\w+)\.json$")
SETS = ("O", "E", "H")


def table(scores: Path) -> str:
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for model_dir in sorted(p for p in scores.iterdir() if p.is_dir()):
        for f in sorted(model_dir.iterdir()):
            m = NAME.match(f.name)
            if m:
                rows.setdefault((model_dir.name, m.group(2)), {})[m.group(1)] = json.loads(f.read_text())
    if not rows:
        raise SystemExit(f"{scores}: no vox1_<O|E|H>_<norm>.json metrics (run stage 6 first)")
    order = sorted(rows, key=lambda k: (k[0] != "teacher", k[0], k[1]))
    head = "| model | scoring | " + " | ".join(f"Vox1-{s} EER (%) | Vox1-{s} minDCF" for s in SETS) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(SETS))]
    for model, norm in order:
        cells = []
        for s in SETS:
            m = rows[(model, norm)].get(s)
            cells += [f"{100 * m['eer']:.2f}", f"{m['min_dcf']:.4f}"] if m else ["-", "-"]
        label = "cosine - cohort mean" if norm == "none" else norm
        lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path, help="the scores folder of stage 6 ($exp/scores)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if not args.scores.is_dir():
        raise SystemExit(f"{args.scores}: no scores folder (run stage 6 first)")
    text = table(args.scores)
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
