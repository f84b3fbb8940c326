"""VoxCeleb commands: prepare-voxceleb (stage 1 of recipes/voxceleb) and make-synthetic-voxceleb."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import Count, Real, seed_option


@click.command("prepare-voxceleb")
@click.option("--vox1", required=True, type=click.Path(path_type=Path),
              help="VoxCeleb1 folder holding wav/idNNNNN/<video>/<n>.wav (dev and test merged).")
@click.option("--vox2-dev", required=True, type=click.Path(path_type=Path),
              help="VoxCeleb2-dev folder holding aac/idNNNNN/<video>/<n>.m4a, as distributed.")
@click.option("--musan", type=click.Path(path_type=Path), default=None, help="MUSAN folder (noise/, music/, speech/).")
@click.option("--rirs", type=click.Path(path_type=Path), default=None, help="RIRS_NOISES folder (simulated_rirs/).")
@click.option("--trials-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of veri_test2.txt, list_test_all2.txt, list_test_hard2.txt [default: --vox1].")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Data folder to write.")
@click.option("--audio-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the converted VoxCeleb2 audio goes [default: OUT/vox2_dev_audio].")
@click.option("--audio-format", type=click.Choice(["wav", "flac"]), default="wav", show_default=True,
              help="Converted VoxCeleb2 audio: wav as WeSpeaker (about 270 GB) or lossless flac (smaller, "
                   "more CPU per read).")
@click.option("--jobs", default=1, show_default=True, type=Count(1, 256), help="Decoding processes.")
@click.option("--cohort-per-speaker", default=10, show_default=True, type=Count(0, 1_000_000),
              help="VoxCeleb2-dev utterances per speaker in the scoring cohort (0: all).")
def prepare_voxceleb_cmd(vox1, vox2_dev, musan, rirs, trials_dir, out, audio_dir, audio_format, jobs,
                         cohort_per_speaker) -> None:
    """Check local VoxCeleb1, VoxCeleb2-dev (and MUSAN, RIRS_NOISES), convert VoxCeleb2's m4a once to
    16 kHz audio, and write wav.scp/utt2spk lists, augmentation lists and the Vox1-O/E/H trials to OUT.
    Rerun to resume an interrupted conversion."""
    from kdcache.data.voxceleb import PrepareConfig, prepare_voxceleb

    s = prepare_voxceleb(PrepareConfig(
        vox1=str(vox1), vox2_dev=str(vox2_dev), out=str(out), musan=str(musan) if musan else None,
        rirs=str(rirs) if rirs else None, trials_dir=str(trials_dir) if trials_dir else None,
        audio_dir=str(audio_dir) if audio_dir else None, audio_format=audio_format, jobs=jobs,
        cohort_per_speaker=cohort_per_speaker,
    ))
    trials = ", ".join(f"{k} {v['trials']}" for k, v in s["trials"].items())
    click.echo(f"vox2_dev: {s['vox2_dev']['utterances']} utterances of {s['vox2_dev']['speakers']} speakers "
               f"({s['vox2_dev']['converted_now']} converted now); vox1: {s['vox1']['utterances']} utterances; "
               f"trials: {trials}; musan: {s['musan']}; rirs: {s['rirs']} -> {out}")


@click.command("make-synthetic-voxceleb")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--vox2-speakers", default=8, show_default=True, type=Count(2, 10_000))
@click.option("--vox1-speakers", default=6, show_default=True, type=Count(3, 10_000))
@click.option("--vox1-o-speakers", default=3, show_default=True, type=Count(2, 10_000), help="VoxCeleb1 speakers in Vox1-O.")
@click.option("--utterances-per-speaker", default=4, show_default=True, type=Count(2, 1000))
@click.option("--seconds", default=1.5, show_default=True, type=Real(0.5, 60))
@click.option("--num-trials", default=60, show_default=True, type=Count(2, 10_000_000), help="Trials per list.")
@seed_option()
def make_synthetic_voxceleb_cmd(out, vox2_speakers, vox1_speakers, vox1_o_speakers, utterances_per_speaker, seconds,
                                num_trials, seed) -> None:
    """Write a small VoxCeleb-shaped tree of synthetic speakers to OUT (demos and tests of the recipe).

    \b
    OUT/voxceleb2/dev/aac/idNNNNN/<video>/<n>.m4a   real AAC
    OUT/voxceleb1/wav/idNNNNN/<video>/<n>.wav + veri_test2.txt, list_test_all2.txt, list_test_hard2.txt
    OUT/musan/{noise,music,speech}, OUT/RIRS_NOISES/simulated_rirs
    """
    from kdcache.data.voxceleb_synthetic import make_synthetic_voxceleb

    make_synthetic_voxceleb(out, vox2_speakers=vox2_speakers, vox1_speakers=vox1_speakers,
                            vox1_o_speakers=vox1_o_speakers, utterances_per_speaker=utterances_per_speaker,
                            seconds=seconds, num_trials=num_trials, seed=seed)
    click.echo(f"wrote a VoxCeleb-shaped tree of {vox2_speakers} + {vox1_speakers} synthetic speakers to {out}")


COMMANDS = [prepare_voxceleb_cmd, make_synthetic_voxceleb_cmd]
