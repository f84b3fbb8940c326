"""Cache commands: build-teacher-cache, and the ``cache`` group (info, verify, pull)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.commands_train import augment_config, augment_options
from cli.config_file import config_option, save_settings_in_cache
from cli.options import (INTEGRATED_INPUT_MODES, LOGITS_MODES, Count, Real, device_option, real_list, seed_option,
                         workers_option)
from kdcache.errors import IntegrityError, KdcacheError


def parse_durations(text: str) -> tuple[float, ...]:
    return real_list(text, "--ig-durations", maximum=60.0)


@click.command("build-teacher-cache")
@config_option
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Corpus to cache (VoxCeleb tree or wav.scp folder).")
@click.option("--teacher", required=True, type=click.Path(path_type=Path), help="Teacher model directory.")
@click.option("--out", required=True, type=str,
              help="Cache to write: a .zarr folder, or an object-store URL such as s3://bucket/cache.zarr.")
@click.option("--crops-per-utt", default=4, show_default=True, type=Count(1, 1000), help="Fixed crops cached per utterance.")
@click.option("--crop-seconds", default=2.0, show_default=True, type=Real(0.1, 60), help="Crop length (2.0 s = 200 frames).")
@seed_option(help="Seed of crop starts, row order and augmentation.")
@click.option("--logits", "logits_mode", type=LOGITS_MODES, default="dense", show_default=True,
              help="dense: float16 (12 KB/row at 5994 speakers); uint8: per-row affine (6 KB); "
                   "factorized: embedding + head only (exact for a cosine head).")
@click.option("--saliency/--no-saliency", default=False, show_default=True,
              help="Also store integrated-gradient maps and the teacher's outputs on the integrated inputs (IML-KD).")
@click.option("--ig-steps", default=50, show_default=True, type=Count(2, 10_000), help="Riemann steps of integrated gradients (`kdcache ig-steps` measures how many a teacher needs).")
@click.option("--ig-durations", default="2.0,1.0", show_default=True, help="Segment durations (s) for the IG maps, each in (0, 60].")
@click.option("--ig-internal-batch-size", default=None, type=Count(1, 1 << 20), help="Bound on IG's internal batch (memory).")
@click.option("--integrated-input", type=INTEGRATED_INPUT_MODES, default="weighted", show_default=True,
              help="How IML-KD's integrated inputs are built from the IG maps: weighted (the fbank scaled up "
                   "where the teacher attends) or attribution (the IG map itself; the teacher is mostly wrong "
                   "on it: `cache info` shows its top-1).")
@click.option("--shard-rows", default=4096, show_default=True, type=Count(1, 1 << 20), help="Rows per shard (the unit of work and resume).")
@click.option("--chunk-rows", default=64, show_default=True, type=Count(1, 1 << 16), help="Rows per inner chunk (the unit of reading).")
@click.option("--batch-size", default=64, show_default=True, type=Count(1, 1 << 16), help="Crops per teacher forward pass.")
@augment_options
@workers_option()
@device_option()
@click.option("--overwrite", is_flag=True, help="Replace an existing cache built with other settings.")
@click.option("--allow-unknown-speakers", is_flag=True, help="Cache speakers the teacher does not know, with label -1.")
@click.option("--skip-bad-audio", is_flag=True, help="Record rows whose audio is unreadable (rows/bad = 1; students skip them) instead of stopping.")
def build_teacher_cache_cmd(data, teacher, out, crops_per_utt, crop_seconds, seed, logits_mode, saliency, ig_steps, ig_durations,
                            ig_internal_batch_size, integrated_input, shard_rows, chunk_rows, batch_size, augment_noise,
                            augment_reverb, augment_prob, num_workers, device, overwrite, allow_unknown_speakers,
                            skip_bad_audio) -> None:
    """Run the teacher once over fixed, replayable crops and store its logits, embeddings and
    (optionally) IG saliency in a chunked Zarr v3 cache. Rerun the same command to resume; under
    `torchrun --nproc-per-node N` each rank writes its own shards."""
    from kdcache.teacher.build import BuildConfig, build_teacher_cache

    if shard_rows % chunk_rows:
        raise KdcacheError(f"--shard-rows {shard_rows} must be a multiple of --chunk-rows {chunk_rows}")
    summary = build_teacher_cache(BuildConfig(
        data=str(data), teacher=str(teacher), out=str(out), crops_per_utt=crops_per_utt, crop_seconds=crop_seconds,
        seed=seed, logits=logits_mode, saliency=saliency, ig_steps=ig_steps, ig_durations=parse_durations(ig_durations),
        ig_internal_batch_size=ig_internal_batch_size, integrated_input=integrated_input, shard_rows=shard_rows,
        chunk_rows=chunk_rows, batch_size=batch_size, num_workers=num_workers, device=device, overwrite=overwrite,
        allow_unknown_speakers=allow_unknown_speakers, skip_bad_audio=skip_bad_audio,
        augment=augment_config(augment_noise, augment_reverb, augment_prob),
    ))
    save_settings_in_cache(str(out))
    from kdcache.cache.info import cache_info, integrated_input_warning

    info = cache_info(str(out))
    size = info.get("bytes_on_disk")
    per_row = f", {size / max(summary.rows, 1):,.0f} bytes/row" if size else ""
    on_disk = f", {size / 2**20:,.1f} MiB on disk" if size else ""
    click.echo(
        f"{summary.rows} rows ({summary.shards_written} shards written, {summary.shards_skipped} already done)"
        f"{on_disk}{per_row}; {summary.rows_per_second:,.0f} rows/s"
    )
    if summary.bad_rows:
        click.echo(f"warning: {summary.bad_rows} rows had unreadable audio and were recorded as bad", err=True)
    warning = integrated_input_warning(info["teacher_top1"], integrated_input)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@click.group("cache")
def cache_group() -> None:
    """Inspect, check and copy teacher caches (local paths, file://, http(s)://, s3://)."""


@cache_group.command("info")
@click.argument("cache")
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON (for scripts).")
def cache_info_cmd(cache: str, as_json: bool) -> None:
    """Provenance, completeness, teacher outputs held and the methods (--loss) they allow, sizes and bytes
    per row of each array."""
    from kdcache.cache.info import format_info
    from kdcache.train.sources import cache_info_with_methods

    info = cache_info_with_methods(cache)
    click.echo(json.dumps(info, indent=1, default=str) if as_json else format_info(info))


@cache_group.command("verify")
@click.argument("cache")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Also re-run this teacher on a sample of replayed rows and compare.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Corpus to replay crops from (with --teacher).")
@click.option("--sample", default=256, show_default=True, type=Count(1, 1 << 31), help="Rows recomputed with --teacher.")
@augment_options
def cache_verify_cmd(cache: str, teacher, data, sample, augment_noise, augment_reverb, augment_prob) -> None:
    """Read every chunk (crc32c), check every shard is complete; exit 1 on any problem, naming the shard."""
    from kdcache.cache.verify import verify_cache

    report = verify_cache(cache)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    click.echo(f"{report.shards_checked} shards checked: {'ok' if report.ok else f'{len(report.problems)} problem(s)'}")
    failed = not report.ok
    if teacher is not None:
        if data is None:
            raise KdcacheError("--teacher needs --data (the corpus to replay the crops from)")
        from kdcache.cache.reader import TeacherCache
        from kdcache.data.augment import Augmenter
        from kdcache.data.corpus import load_corpus
        from kdcache.teacher.recompute import recompute_rows

        aug = augment_config(augment_noise, augment_reverb, augment_prob)
        rec = recompute_rows(TeacherCache.open(cache), load_corpus(data), str(teacher), sample=sample,
                             augmenter=Augmenter(aug) if aug else None)
        click.echo(
            f"teacher re-run on {rec.rows_checked} rows: max |logit diff| {rec.max_logit_diff:.4g} "
            f"(row {rec.worst_row}), max embedding rel. diff {rec.max_embedding_rel_diff:.3g}, "
            f"{len(rec.crc_mismatches)} input crc mismatches"
        )
        if not rec.ok():
            failed = True
            click.echo("problem: cached teacher outputs differ from a re-run of the teacher", err=True)
    if failed:
        raise IntegrityError(f"{cache}: verification failed")


@cache_group.command("pull")
@click.argument("url")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", default=8, show_default=True, type=Count(1, 64), help="Files fetched concurrently.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar (bytes).")
def cache_pull_cmd(url: str, dest: Path, workers: int, progress: bool) -> None:
    """Copy the cache at URL (http(s)://, s3://, file:// or a path) into the folder DEST, then verify every
    chunk. Rerun the same command to resume an interrupted copy: complete files are skipped. Exit 1 naming
    the shard if the copy is damaged (those files are removed, so a rerun fetches them again).

    \b
    s3:// needs `pip install 'kdcache[s3]'` (s3fs); credentials come from the usual AWS chain
    (environment, ~/.aws). fsspec options come from the environment, e.g.
    FSSPEC_S3='{"anon": true}' for a public bucket or
    FSSPEC_S3='{"client_kwargs": {"endpoint_url": "https://minio.example:9000"}}'.
    """
    from tqdm import tqdm

    from kdcache.cache.pull import check_pull, pull_cache
    from kdcache.progress import progress_bar

    bars: list[tqdm] = []

    def on_total(total: int) -> None:  # the bar starts once the source is open and its files are sized
        bars.append(progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="pull",
                         disable=not progress, mininterval=0.5, dynamic_ncols=True))

    try:
        report = pull_cache(url, dest, workers=workers, progress=lambda n: bars[0].update(n), on_total=on_total)
    finally:
        for bar in bars:
            bar.close()
    for problem in report.verify.problems if report.verify else []:
        click.echo(f"problem: {problem}", err=True)
    for removed in report.removed:
        click.echo(f"removed damaged copy: {removed}", err=True)
    verify = report.verify
    state = "ok" if not report.damage else f"{len(report.damage)} problem(s)"
    incomplete = (f"; the source has {len(report.shards_not_done)} unfinished shard(s), pull again once they are done"
                  if report.shards_not_done else "")
    click.echo(
        f"{url} -> {dest}: {report.files_copied} files copied ({report.bytes_copied / 2**20:,.1f} MiB), "
        f"{report.files_skipped} already complete, {report.files_absent} absent at the source; "
        f"{verify.shards_checked if verify else 0} shards verified: {state}{incomplete}"
    )
    check_pull(report)


@cache_group.command("push")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("url")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Objects uploaded concurrently.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar (bytes).")
def cache_push_cmd(source: Path, url: str, workers: int, progress: bool) -> None:
    """Upload the local cache SOURCE to the object store at URL (e.g. s3://bucket/cache.zarr), then read
    every chunk back from there (crc32c). Rerun the same command to resume: objects already uploaded are
    skipped. Until a push has finished, readers see the cache as incomplete.

    \b
    Credentials and endpoint: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws),
    AWS_ENDPOINT_URL for a store other than AWS (MinIO, SeaweedFS, ...), or FSSPEC_S3 (JSON) (docs/s3.md).
    """
    from tqdm import tqdm

    from kdcache.cache.push import push_cache

    bars: list[tqdm] = []

    def on_total(total: int) -> None:
        bars.append(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="push",
                         disable=not progress, mininterval=0.5, dynamic_ncols=True))

    try:
        report = push_cache(source, url, workers=workers, progress=lambda n: bars and bars[0].update(n),
                            on_total=on_total)
    finally:
        for bar in bars:
            bar.close()
    incomplete = (f"; the source has {len(report.shards_not_done)} unfinished shard(s), push again once they are done"
                  if report.shards_not_done else "")
    checked = report.verify.shards_checked if report.verify else 0
    click.echo(
        f"{source} -> {url}: {report.files_uploaded} objects uploaded ({report.bytes_uploaded / 2**20:,.1f} MiB), "
        f"{report.files_skipped} already there; {checked} shards verified in the store: ok{incomplete}"
    )


COMMANDS = [build_teacher_cache_cmd, cache_group]
