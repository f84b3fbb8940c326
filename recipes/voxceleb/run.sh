#!/usr/bin/env bash
# kdcache on VoxCeleb, staged as WeSpeaker's examples/voxceleb/v2/run.sh:
#   1 prepare   lists of VoxCeleb2-dev (train, m4a converted once), VoxCeleb1 (eval), MUSAN, RIRS_NOISES,
#               Vox1-O/E/H trials                                      -> $data
#   2 teacher   import a WeSpeaker model folder (avg_model.pt + config.yaml); classes = sorted vox2 ids
#   3 cache     run the teacher once over K crops per utterance (torchrun, all local GPUs)
#   4 students  one per config file (torchrun DDP)
#   5 average   the last $num_avg epoch checkpoints of each student
#   6 score     cosine with mean subtraction and AS-norm (top $top_n, VoxCeleb2-dev cohort): EER, minDCF
#   7 report    a table of Vox1-O/E/H in $exp/results.md (+ `kdcache report` when kdcache has it)
# Usage: recipes/voxceleb/run.sh [--stage N] [--stop-stage N] [--name value ...]   (--help lists names)
set -euo pipefail

recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---- settings (each one can be given as --name value; dashes or underscores)
stage=1
stop_stage=7
python=python3                    # the Python that has kdcache (run as: $python -m cli.main)
# sources (stage 1)
vox1=/data/voxceleb1              # wav/idNNNNN/<video>/<n>.wav and veri_test2.txt, list_test_all2.txt, list_test_hard2.txt
vox2_dev=/data/voxceleb2/dev      # aac/idNNNNN/<video>/<n>.m4a
musan=/data/musan                 # noise/ music/ speech/  (empty: no noise augmentation)
rirs=/data/RIRS_NOISES            # simulated_rirs/        (empty: no reverberation)
trials_dir=                       # folder of the trial lists [default: $vox1]
data=data                         # lists written by stage 1
audio_dir=                        # converted VoxCeleb2 audio [default: $data/vox2_dev_audio]
audio_format=wav                  # wav (as WeSpeaker) or flac (lossless, smaller)
prepare_jobs=16                   # m4a decoding processes
cohort_per_speaker=10             # VoxCeleb2-dev utterances per speaker in the AS-norm cohort (0: all)
# teacher (stage 2)
teacher_dir=pretrained/voxceleb_resnet293_LM   # WeSpeaker model folder: avg_model.pt + config.yaml
exp=exp/kdcache                   # everything else goes here
# cache (stage 3)
nproc=auto                        # torchrun ranks: auto = every local GPU (1 process on a CPU-only machine)
device=auto                       # auto | cpu | cuda
crops_per_utt=10                  # K fixed crops per utterance
crop_seconds=2.0
logits=factorized                 # dense (12 KB/row) | uint8 (6 KB/row) | factorized (0.5 KB/row, exact for AAM)
saliency=false                    # true: IG maps for IML-KD (about 50 teacher passes more per crop)
ig_steps=50
aug_prob=0.6                      # MUSAN + RIR augmentation probability (0: none)
cache_batch_size=128
shard_rows=4096
chunk_rows=64
num_workers=8                     # DataLoader workers per rank
# students (stages 4-5)
student_configs="$recipe_dir/conf/student_campplus.yaml $recipe_dir/conf/student_resnet34.yaml $recipe_dir/conf/student_ecapa_c512.yaml"
student_epochs=15                 # cache epochs (one epoch = every cached row: utterances x K); 15 at K = 10 shows
                                  # as many crops as WeSpeaker's 150 epochs of one crop per utterance
                                  # (empty: the configs' own epochs)
num_avg=2                         # last N epoch checkpoints averaged (2 of 15 cache epochs; WeSpeaker: 10 of 150)
# scoring (stage 6)
trials="O E H"
score_norms="none asnorm"         # none = cosine with the cohort mean subtracted
top_n=300
eval_device=auto                  # auto | cpu | cuda | cuda:N (stage 6)
# ---- end of settings

. "$recipe_dir/local/parse_options.sh"

kd() { "$python" -m cli.main "$@"; }
run_ranks() { "$python" -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node "$nproc" -m cli.main "$@"; }
# have COMMAND [OPTION]: this kdcache has the command (and the option); "import-wespeaker dir" asks whether
# import-wespeaker reads a WeSpeaker model folder (config.yaml) instead of needing --arch.
have() {
  "$python" - "$@" <<'PY'
import sys
from cli.main import main
cmd = main.commands.get(sys.argv[1])
want = sys.argv[2] if len(sys.argv) > 2 else None
if cmd is None:
    sys.exit(1)
if want == "dir":
    sys.exit(1 if any(p.name == "arch" and p.required for p in cmd.params) else 0)
sys.exit(0 if want is None or any(want in p.opts for p in cmd.params) else 1)
PY
}
need() {  # need STAGE COMMAND [OPTION]
  if ! have "${@:2}"; then
    echo "run.sh: stage $1 needs 'kdcache $2${3:+ $3}', which this kdcache lacks" >&2
    exit 3
  fi
}
on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

resolve_devices() {  # nproc=auto: every local GPU (1 process without one); eval_device=auto: cuda when present
  if [ "$nproc" = auto ]; then
    nproc=$("$python" -c 'import torch; print(torch.cuda.device_count())')
    [ "$nproc" -ge 1 ] || nproc=1
  fi
  if [ "$eval_device" = auto ]; then
    if [ "$device" = cpu ]; then eval_device=cpu
    else eval_device=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")'); fi
  fi
}
aug_args=()
if [ "$aug_prob" != 0 ]; then
  [ -f "$data/musan/wav.scp" ] && aug_args+=(--augment-noise "$data/musan")
  [ -f "$data/rirs/wav.scp" ] && aug_args+=(--augment-reverb "$data/rirs")
  [ ${#aug_args[@]} -gt 0 ] && aug_args+=(--augment-prob "$aug_prob")
fi
students() { for cfg in $student_configs; do basename "$cfg" .yaml; done; }

if on 3 || on 4 || on 6; then resolve_devices; fi

if on 1; then
  echo "stage 1: prepare $vox1 + $vox2_dev -> $data"
  kd prepare-voxceleb --vox1 "$vox1" --vox2-dev "$vox2_dev" --out "$data" \
    ${musan:+--musan "$musan"} ${rirs:+--rirs "$rirs"} ${trials_dir:+--trials-dir "$trials_dir"} \
    ${audio_dir:+--audio-dir "$audio_dir"} --audio-format "$audio_format" --jobs "$prepare_jobs" \
    --cohort-per-speaker "$cohort_per_speaker"
fi

if on 2; then
  echo "stage 2: teacher $teacher_dir -> $exp/teacher"
  need 2 import-wespeaker dir
  kd import-wespeaker "$teacher_dir" --utt2spk "$data/vox2_dev/utt2spk" --out "$exp/teacher"
fi

if on 3; then
  echo "stage 3: cache, $crops_per_utt crops/utt, logits $logits, saliency $saliency, $nproc rank(s) -> $exp/cache.zarr"
  sal_args=()
  [ "$saliency" = true ] && sal_args=(--saliency --ig-steps "$ig_steps")
  run_ranks build-teacher-cache --data "$data/vox2_dev" --teacher "$exp/teacher" --out "$exp/cache.zarr" \
    --crops-per-utt "$crops_per_utt" --crop-seconds "$crop_seconds" --logits "$logits" "${sal_args[@]}" \
    "${aug_args[@]}" --batch-size "$cache_batch_size" --shard-rows "$shard_rows" --chunk-rows "$chunk_rows" \
    --num-workers "$num_workers" --device "$device"
  kd cache info "$exp/cache.zarr"
fi

if on 4; then
  need 4 train-student --config
  for cfg in $student_configs; do
    name=$(basename "$cfg" .yaml)
    echo "stage 4: student $name ($cfg), $nproc rank(s) -> $exp/students/$name"
    run_ranks train-student --config "$cfg" --cache "$exp/cache.zarr" --data "$data/vox2_dev" "${aug_args[@]}" \
      ${student_epochs:+--epochs "$student_epochs"} --num-avg "$num_avg" --num-workers "$num_workers" \
      --device "$device" --out "$exp/students/$name"
  done
fi

if on 5; then
  need 5 average --num
  for name in $(students); do
    echo "stage 5: average the last $num_avg checkpoints of $name -> $exp/students/$name/avg_model"
    kd average "$exp/students/$name" --num "$num_avg" --out "$exp/students/$name/avg_model"
  done
fi

scored_models() {  # name=model_dir, teacher first
  [ -f "$exp/teacher/config.json" ] && echo "teacher=$exp/teacher"
  for name in $(students); do
    if [ -f "$exp/students/$name/avg_model/config.json" ]; then echo "$name=$exp/students/$name/avg_model"
    elif [ -f "$exp/students/$name/config.json" ]; then echo "$name=$exp/students/$name"; fi
  done
}

if on 6; then
  for entry in $(scored_models); do
    name=${entry%%=*}; model=${entry#*=}
    for t in $trials; do
      list="$data/trials/vox1_$t.txt"
      if [ ! -f "$list" ]; then echo "stage 6: no $list, Vox1-$t skipped"; continue; fi
      for norm in $score_norms; do
        echo "stage 6: $name on Vox1-$t, $norm"
        kd evaluate --model "$model" --data "$data/vox1" --trials "$list" --cohort "$data/vox2_dev_cohort" \
          --score-norm "$norm" --top-n "$top_n" --device "$eval_device" --out "$exp/scores/$name/vox1_${t}_$norm.json"
        # the run folder's metrics.json (read by `kdcache report`): Vox1-O with the last norm listed
        [ "$t" = O ] && cp "$exp/scores/$name/vox1_${t}_$norm.json" "$model/metrics.json"
      done
    done
  done
fi

if on 7; then
  echo "stage 7: report -> $exp/results.md"
  "$python" "$recipe_dir/local/score_table.py" "$exp/scores" --out "$exp/results.md"
  if have report; then
    runs=()
    for entry in $(scored_models); do runs+=("${entry#*=}"); done
    kd report "${runs[@]}" --out "$exp/report"
  else
    echo "stage 7: this kdcache has no 'report' command; the table above is the report"
  fi
fi
