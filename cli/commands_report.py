"""Commands that gather results: demo (the whole chain in one command) and report."""

from __future__ import annotations

import time
from pathlib import Path

import click

STAGE_HELP = "1 corpus, 2 teacher, 3 evaluate (teacher), 4 cache, 5 students (ce, kd, dkd), 6 report."


def _print_report(report) -> None:
    from kdcache.report.table import markdown_table

    for number, table in enumerate(report.tables, start=1):
        click.echo("")
        if len(report.tables) > 1:
            click.echo(f"Table {number}: {table.why}")
        click.echo(markdown_table(table))
    for line in report.skipped:
        click.echo(f"skipped: {line}", err=True)
    for line in report.notes:
        click.echo(f"note: {line}", err=True)
    click.echo("")
    click.echo(f"report: {report.markdown_path}")
    for names in report.pictures.values():
        for name in names:
            click.echo(f"picture: {report.out / name}")


@click.command("demo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fast", is_flag=True, help="A 2-3 minute smoke version (smaller corpus and models, fewer epochs).")
@click.option("--stage", default=1, show_default=True, type=click.IntRange(1, 6), help=f"First stage to run: {STAGE_HELP}")
@click.option("--stop-stage", default=6, show_default=True, type=click.IntRange(1, 6), help="Last stage to run.")
def demo_cmd(out: Path, fast: bool, stage: int, stop_stage: int) -> None:
    """Run the whole chain on the synthetic corpus into OUT: corpus, teacher, its evaluation, the teacher
    cache, students ce / kd / dkd --beta 8 --temperature 2, evaluation, report (docs/demo.md).

    \b
    Each stage is skipped when its output is complete: a killed run resumes when run again.
    About 12.5-14 minutes on 2 idle cores (estimated; --fast: about 2.5). OUT must be new, empty, or an earlier demo.
    """
    from kdcache.report.build import REPORT_MD
    from kdcache.workflows.demo import STAGES, run_demo

    started = time.monotonic()
    report_dir = run_demo(out, fast=fast, stage=stage, stop_stage=stop_stage, say=click.echo)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    click.echo(f"demo stages {stage}-{stop_stage} done in {minutes} min {seconds:02d} s")
    if stop_stage == len(STAGES) and (report_dir / REPORT_MD).is_file():
        click.echo("")
        for line in (report_dir / REPORT_MD).read_text(encoding="utf-8").splitlines():
            if line.startswith("|"):
                click.echo(line)
        click.echo(f"\nreport: {report_dir / REPORT_MD} (DET curves: {report_dir / 'det_1.png'})")


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for report.md, report.json and the PNGs.")
def report_cmd(run_dirs: tuple[Path, ...], out: Path) -> None:
    """Gather the metrics.json, scores.txt and train_log.jsonl of teacher and student RUN_DIRS into a
    table (mean ± 95% CI over seeds, parameters, FLOPs per 2 s crop, EER change against ce), DET curves,
    training curves and, for caches with saliency, saliency pictures. Runs on different trial lists or
    corpora get separate tables; folders without metrics are named and skipped."""
    from kdcache.report.build import build_report

    _print_report(build_report(list(run_dirs), out))


COMMANDS = [demo_cmd, report_cmd]
