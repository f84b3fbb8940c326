#!/usr/bin/env bash
# The papers' comparisons with kdcache (issue 14), as one resumable command.
#
#   bash studies/papers/run.sh [--stage N|NAME] [--stop-stage N|NAME] [--jobs J] [--dry-run]
#                              [--root DIR] [--results DIR] [--force] [--keep-going]
#
# Stages (see studies/papers/README.md for what each measures and its estimated CPU time):
#   0 corpora         default corpus + speaker-count corpora (same test speakers and trials)
#   1 teacher         the study's teacher, trained once, and its EER
#   2 cache           the main cache: 4 crops of 1 s per utterance, logits and embeddings
#   3 ce              CE students of both families, then the teacher gate (teacher must beat them)
#   4 saliency-cache  the same crops with IG saliency (for imlkd)
#   5 grid            every KD loss, x-vector (>= 3 seeds) and ResNet34 thin (>= 2 seeds)
#   6 speakers        ENSKD finding (a): EER against the number of training speakers, ce and dkd
#   7 ksweep          cached KD with K crops per utterance against online KD, equal steps
#   8 imlkd-checks    imlkd on other IG settings: the attribution input mode, other IG step counts
#   9 saliency-eval   deletion / insertion curves: teacher, ce, kd, mlkd, imlkd students; IG maps
#                     against the step count (kdcache ig-steps, per teacher)
#  10 report          report tables, paired comparisons, run metadata and CPU time to docs/results
#
# Every run has a folder under ROOT/log/NAME with its settings (settings.txt), the exact command
# (command.sh), its output (log.txt; an earlier attempt's in log.attempt-N.txt) and its time (time.txt:
# real, user, sys seconds of the last attempt). A run whose
# log folder holds `done` is skipped; a run killed halfway resumes (training with --resume, cache
# builds by rerunning, corpora from scratch). Changing a run's settings is refused: remove its log
# folder and output, or use another --root. Options not yet in this kdcache (train-student
# --loss-args and --online-teacher, kdcache report) make their runs "pending": listed, not run.
# Settings can be overridden by environment variables (the defaults are below). A failed run stops
# the study at the end of its stage; with --keep-going the study goes on (a diverged student is a
# result too) and the failed runs are listed in ROOT/failed.txt. --force goes on past the teacher gate.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STAGES=(corpora teacher cache ce saliency-cache grid speakers ksweep imlkd-checks saliency-eval report)

die() { echo "run.sh: error: $*" >&2; exit 2; }

usage() { sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

stage_number() {
  local want=$1 i
  if [[ $want =~ ^[0-9]+$ ]] && (( want < ${#STAGES[@]} )); then echo "$want"; return; fi
  for i in "${!STAGES[@]}"; do [[ ${STAGES[$i]} == "$want" ]] && { echo "$i"; return; }; done
  die "unknown stage '$want' (0-$(( ${#STAGES[@]} - 1 )) or ${STAGES[*]})"
}

START=0; STOP=$(( ${#STAGES[@]} - 1 )); JOBS=1; DRY=0; FORCE=0; KEEP_GOING=0; FAILURES=0
ROOT=${ROOT:-$REPO/studies/papers/work}
RESULTS=${RESULTS:-$REPO/docs/results/papers}
while (( $# )); do
  case $1 in
    --stage) START=$(stage_number "${2:?--stage needs a value}") || exit 2; shift 2 ;;
    --stop-stage) STOP=$(stage_number "${2:?--stop-stage needs a value}") || exit 2; shift 2 ;;
    --jobs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive integer"; JOBS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --results) RESULTS=${2:?--results needs a folder}; shift 2 ;;
    --force) FORCE=1; shift ;;
    --keep-going) KEEP_GOING=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
(( START <= STOP )) || die "--stage ${STAGES[$START]} comes after --stop-stage ${STAGES[$STOP]}"
ROOT=$(realpath -m "$ROOT"); RESULTS=$(realpath -m "$RESULTS")

# ---- the kdcache command: $KDCACHE, else an installed kdcache, else this checkout --------------
PY=${PYTHON:-python3}
if [[ -n ${KDCACHE:-} ]]; then
  read -ra KD <<< "$KDCACHE"
elif command -v kdcache > /dev/null 2>&1; then
  KD=(kdcache)
else
  KD=("$PY" -m cli.main)
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export KDCACHE_THREADS=${KDCACHE_THREADS:-1}

# ---- settings -----------------------------------------------------------------------------------
SEEDS_XVEC=${SEEDS_XVEC:-"0 1 2"}
SEEDS_RESNET=${SEEDS_RESNET:-"0 1"}
SEEDS_SPK=${SEEDS_SPK:-"0 1 2"}
SEEDS_K=${SEEDS_K:-"0 1"}
CROP=${CROP:-1.0}                     # crop seconds for teacher, caches and students (README recipe)
K_MAIN=4                              # crops per utterance of the main cache
TEACHER_ARCH=${TEACHER_ARCH:-resnet34}
TEACHER_ARGS=${TEACHER_ARGS:-'{"m_channels": 8, "embed_dim": 128}'}  # 2x wider than the quick start
TEACHER_EPOCHS=${TEACHER_EPOCHS:-10}                                  # and 10 epochs instead of 6
XV_ARGS='{"hid_dim": 128, "stats_dim": 256, "embed_dim": 128}'
RN_M=${RN_M:-2}                       # ResNet34 m_channels of the second family, named resnet34m<RN_M>
RN=resnet34m$RN_M
RN_ARGS="{\"m_channels\": $RN_M, \"embed_dim\": 128}"
# The second family learns from a teacher of its own, with its own caches (rn-*) and gate: on the default
# corpus the study's teacher is not clearly better than its CE students (README). RN_TEACHER_ARGS="" (set
# and empty): from the study's teacher.
RN_TEACHER_ARGS=${RN_TEACHER_ARGS-'{"m_channels": 16, "embed_dim": 128}'}
RN_TEACHER_EPOCHS=${RN_TEACHER_EPOCHS:-$TEACHER_EPOCHS}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-6}
IG_STEPS=${IG_STEPS:-5}           # 5 Riemann steps, the whole crop: 36 CPU min for 16,000 rows (README)
IG_DURATIONS=${IG_DURATIONS:-1.0}   # the whole 1 s crop (IML-KD also uses its halves: 3x the cost)
IG_INPUT=${IG_INPUT:-weighted}     # integrated input; with attribution the teacher's outputs are ~all wrong (README)
IG_CHECK_STEPS=${IG_CHECK_STEPS:-10}  # a 10-step cache and student; 25 steps: ig-steps.md shows the maps (README)
SPK_CORPORA=${SPK_CORPORA:-"100x40 200x20 400x10"}
SPK_TEST_OFFSET=${SPK_TEST_OFFSET:-400}  # test speakers id10400..: identical in every speaker-count corpus
SPK_TEST_SPEAKERS=${SPK_TEST_SPEAKERS:-40}
SPK_TEST_UTTS=${SPK_TEST_UTTS:-20}
CORPUS_ARGS=${CORPUS_ARGS:-}          # extra make-synthetic-corpus words for the default corpus (tests)
SPK_ARGS=${SPK_ARGS:-}                # and for the speaker-count corpora
K_SWEEP=${K_SWEEP:-"1 2 4 8 16"}
K_PASSES=${K_PASSES:-32}             # crops per utterance x epochs of every K-sweep run: equal steps (2000;
                                     # 48 would be 3000 but ~1.5x the CPU time; 24 does not divide by 16)
ONLINE_EPOCHS=${ONLINE_EPOCHS:-32}   # one fresh crop per utterance per epoch: 2000 steps as well
ONLINE_ARGS=${ONLINE_ARGS:-}
SAL_UTTERANCES=${SAL_UTTERANCES:-64}
SAL_IG_STEPS=${SAL_IG_STEPS:-50}  # saliency-eval's maps: Captum's default (5 steps miss most of f(x) - f(0))
IG_SWEEP_STEPS=${IG_SWEEP_STEPS:-"5,10,25,50"}  # kdcache ig-steps: the maps against the step count
XV_LOSSES=${XV_LOSSES:-"ce embedding kd-T2 kd-T4 dkd-T1-b2 dkd-T2-b8 mlkd imlkd kd-T2-ls dkd-T2-b8-ls"}
RN_LOSSES=${RN_LOSSES:-"ce embedding kd-T2 dkd-T1-b2 dkd-T2-b8 mlkd imlkd"}
declare -A LOSS_ARGS=(
  [ce]="--loss ce"
  [embedding]="--loss embedding"
  [kd-T2]="--loss kd --temperature 2"
  [kd-T4]="--loss kd --temperature 4"
  [dkd-T1-b2]="--loss dkd --temperature 1 --beta 2"
  [dkd-T2-b8]="--loss dkd --temperature 2 --beta 8"
  [mlkd]="--loss mlkd"
  [imlkd]="--loss imlkd"
  [kd-T2-ls]='--loss kd --temperature 2 --loss-args {"logit_stand":true}'
  [dkd-T2-b8-ls]='--loss dkd --temperature 2 --beta 8 --loss-args {"logit_stand":true}'
)

DATA=$ROOT/data; MODELS=$ROOT/models; CACHES=$ROOT/caches; STUDENTS=$ROOT/students; LOG=$ROOT/log
DEMO=$DATA/demo; TEACHER=$MODELS/teacher; TEACHER_RN=$MODELS/teacher-rn
STUDY=("$PY" "$HERE/study.py")

# ---- what this kdcache offers (runs that need more are pending); asked once, when first needed ---
PROBED=0; HAS_LOSS_ARGS=0; HAS_ONLINE=0; HAS_REPORT=0
probe() {
  (( PROBED )) && return 0
  PROBED=1
  local help
  help=$("${KD[@]}" train-student --help 2>&1) || die "cannot run '${KD[*]} train-student --help': $help"
  [[ $help == *--loss-args* ]] && HAS_LOSS_ARGS=1
  [[ $help == *--online-teacher* ]] && HAS_ONLINE=1
  "${KD[@]}" report --help > /dev/null 2>&1 && HAS_REPORT=1
  return 0
}

# ---- runs ---------------------------------------------------------------------------------------
# A command is a list of words; "kdcache" and "python" as first word stand for the launchers, and
# ":::" separates the commands of one run.
quote() {  # one word for a shell line: as is when plain, else in single quotes (or %q)
  if [[ $1 =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then printf '%s ' "$1"
  elif [[ $1 != *"'"* ]]; then printf "'%s' " "$1"
  else printf '%q ' "$1"; fi
}

cmd_lines() {  # cmd_lines settings|shell WORDS...: one shell-quoted line per command
  local mode=$1 line="" word w
  shift
  for word in "$@"; do
    if [[ $word == ":::" ]]; then echo "${line% }"; line=""; continue; fi
    if [[ -z $line && $mode == shell && $word == kdcache ]]; then for w in "${KD[@]}"; do line+=$(quote "$w"); done; continue; fi
    if [[ -z $line && $mode == shell && $word == python ]]; then line=$(quote "$PY"); continue; fi
    line+=$(quote "$word")
  done
  [[ -n $line ]] && echo "${line% }"
  return 0
}

SUBMITTED=()
throttle() { while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n 2> /dev/null || true; done; }

run_one() {  # run_one STAGE NAME: run LOG/NAME/command.sh, time it, mark it done or failed
  local stage=$1 name=$2 dir=$LOG/$2 rc real user sys
  echo "[$(date -u +%H:%M:%S)] start  [$stage] $name"
  local TIMEFORMAT='%R %U %S'
  if [[ -f $dir/log.txt ]]; then  # an earlier attempt was killed or failed: keep its log (its time is lost)
    local earlier
    earlier=$(compgen -G "$dir/log.attempt-*.txt" | wc -l)
    mv "$dir/log.txt" "$dir/log.attempt-$(( earlier + 1 )).txt"
  fi
  { time bash "$dir/command.sh" > "$dir/log.txt" 2>&1; } 2> "$dir/time.txt"
  rc=$?
  if (( rc == 0 )); then
    read -r real user sys < "$dir/time.txt"
    printf '%s\t%s\t%s\t%s\t%s\n' "$stage" "$name" "$real" "$user" "$sys" >> "$ROOT/cpu_time.tsv"
    touch "$dir/done"
    echo "[$(date -u +%H:%M:%S)] done   [$stage] $name (wall ${real} s, CPU $(awk -v u="$user" -v s="$sys" 'BEGIN{print u + s}') s)"
  else
    echo "$rc" > "$dir/failed"
    echo "[$(date -u +%H:%M:%S)] FAILED [$stage] $name (exit $rc): see $dir/log.txt" >&2
  fi
}

job() {  # job STAGE NAME [--fresh DIR] -- WORDS...: run once (in the background, --jobs at a time)
  local stage=$1 name=$2 fresh="" settings dir=$LOG/$2
  shift 2
  if [[ $1 == --fresh ]]; then fresh=$2; shift 2; fi
  [[ $1 == -- ]] && shift
  settings=$(cmd_lines settings "$@")
  if [[ -f $dir/settings.txt && $(< "$dir/settings.txt") != "$settings" ]]; then
    die "$name: started before with other settings ($dir/settings.txt); remove $dir and the run's output, or use another --root"
  fi
  if [[ -f $dir/done ]]; then
    (( DRY )) && echo "# [$stage] $name: done"
    return 0
  fi
  if (( DRY )); then echo "# [$stage] $name"; cmd_lines shell "$@"; return 0; fi
  mkdir -p "$dir"
  rm -f "$dir/failed"
  printf '%s\n' "$settings" > "$dir/settings.txt"
  { echo "#!/usr/bin/env bash"; echo "set -euo pipefail"; echo "cd $(printf '%q' "$REPO")"
    echo "export KDCACHE_THREADS=$KDCACHE_THREADS"; cmd_lines shell "$@"; } > "$dir/command.sh"
  [[ -n $fresh ]] && rm -rf "$fresh"
  throttle
  run_one "$stage" "$name" &
  SUBMITTED+=("$name")
}

pending() {  # pending STAGE NAME REASON -- WORDS...: a run this kdcache cannot do yet
  local stage=$1 name=$2 reason=$3
  shift 3
  [[ $1 == -- ]] && shift
  [[ -f $LOG/$name/done ]] && { (( DRY )) && echo "# [$stage] $name: done"; return 0; }
  if (( DRY )); then
    echo "# [$stage] $name: pending ($reason)"
    cmd_lines shell "$@" | sed 's/^/#pending /'
    return 0
  fi
  echo "[$stage] $name: pending, not run ($reason)" >&2
  mkdir -p "$ROOT"
  grep -qxF "$stage $name: $reason" "$ROOT/pending.txt" 2> /dev/null || echo "$stage $name: $reason" >> "$ROOT/pending.txt"
}

barrier() {  # wait for the submitted runs; stop the study if one failed (a rerun resumes)
  (( DRY )) && return 0
  wait
  local name failed=()
  for name in "${SUBMITTED[@]}"; do [[ -f $LOG/$name/failed ]] && failed+=("$name"); done
  SUBMITTED=()
  (( ${#failed[@]} == 0 )) && return 0
  echo "run.sh: failed runs: ${failed[*]} (logs under $LOG; rerun to resume)" >&2
  (( KEEP_GOING )) || exit 1
  printf '%s\n' "${failed[@]}" >> "$ROOT/failed.txt"
  FAILURES=$(( FAILURES + ${#failed[@]} ))
}

step() {  # step STAGE NAME -- WORDS...: always run, in the foreground (reports, gate); returns its status
  local stage=$1 name=$2 dir=$LOG/$2
  shift 2
  [[ $1 == -- ]] && shift
  if (( DRY )); then echo "# [$stage] $name (always run)"; cmd_lines shell "$@"; return 0; fi
  mkdir -p "$dir"
  { echo "#!/usr/bin/env bash"; echo "set -euo pipefail"; echo "cd $(printf '%q' "$REPO")"; cmd_lines shell "$@"; } > "$dir/command.sh"
  echo "[$(date -u +%H:%M:%S)] step   [$stage] $name"
  bash "$dir/command.sh" 2>&1 | tee "$dir/log.txt"
}

finished() {  # the given run folders whose run is done (all of them in a dry run): a report never reads a
  local d     # student still training beside it
  for d in "$@"; do if (( DRY )) || [[ -d $d && -f $LOG/$(basename "$d")/done ]]; then echo "$d"; fi; done
}

# ---- building blocks ----------------------------------------------------------------------------
family_arch() { case $1 in xvector) echo xvector ;; "$RN") echo resnet34 ;; *) die "family $1" ;; esac; }
family_args() { case $1 in xvector) echo "$XV_ARGS" ;; "$RN") echo "$RN_ARGS" ;; esac; }
own_teacher() { [[ $1 == "$RN" && -n $RN_TEACHER_ARGS ]]; }  # own_teacher FAMILY: not the study's teacher?
family_teacher() { if own_teacher "$1"; then echo "$TEACHER_RN"; else echo "$TEACHER"; fi; }
family_caches() { if own_teacher "$1"; then echo "$CACHES/rn-"; else echo "$CACHES/"; fi; }  # path prefix

student() {  # student STAGE NAME FAMILY LOSS SEED CACHE CORPUS EPOCHS: train-student + evaluation
  local stage=$1 name=$2 family=$3 loss=$4 seed=$5 cache=$6 corpus=$7 epochs=$8 words loss_words
  probe
  read -ra loss_words <<< "${LOSS_ARGS[$loss]:?unknown loss $loss}"
  words=(kdcache train-student --cache "$cache" --data "$corpus/train" --student "$(family_arch "$family")"
         --model-args "$(family_args "$family")" "${loss_words[@]}" --epochs "$epochs" --batch-size 64
         --final-lr 1e-3 --margin 0 --seed "$seed" --out "$STUDENTS/$name"
         --trials "$corpus/test/trials.txt" --eval-data "$corpus/test" --resume)
  local cache_job
  cache_job=$(cache_run "$cache")
  if [[ $loss == *-ls ]] && (( ! HAS_LOSS_ARGS )); then
    pending "$stage" "$name" "needs train-student --loss-args (logit standardization)" -- "${words[@]}"
  elif (( ! DRY )) && [[ ! -f $LOG/$cache_job/done ]]; then
    pending "$stage" "$name" "waits for run $cache_job (its cache)" -- "${words[@]}"
  else
    job "$stage" "$name" -- "${words[@]}"
  fi
}

ig_cache() {  # ig_cache STEPS INPUT_MODE [FAMILY]: a saliency cache of the main crops (by FAMILY's teacher)
  echo "$(family_caches "${3:-xvector}")k$K_MAIN-ig$1-$2.zarr"
}
loss_cache() {  # loss_cache LOSS [FAMILY]: the cache a student of FAMILY reads for LOSS (ce ignores the
  if [[ $1 == imlkd ]]; then ig_cache "$IG_STEPS" "$IG_INPUT" "${2:-xvector}"  # teacher: the same crops in
  elif [[ $1 == ce ]]; then echo "$CACHES/k$K_MAIN.zarr"                      # the study's main cache)
  else echo "$(family_caches "${2:-xvector}")k$K_MAIN.zarr"; fi
}
saliency_cache() {  # saliency_cache STAGE STEPS INPUT_MODE [FAMILY]
  local out
  out=$(ig_cache "$2" "$3" "${4:-xvector}")
  build_cache "$1" "$DEMO" "$(family_teacher "${4:-xvector}")" "$out" "$K_MAIN" \
    --saliency --ig-steps "$2" --ig-durations "$IG_DURATIONS" --integrated-input "$3"
}

cache_run() { echo "cache-$(basename "$1" .zarr)"; }  # cache_run OUT: the name of the run that builds OUT

build_cache() {  # build_cache STAGE CORPUS TEACHER OUT K [extra build-teacher-cache words]: run cache-<OUT's name>
  local stage=$1 corpus=$2 teacher=$3 out=$4 k=$5
  shift 5
  job "$stage" "$(cache_run "$out")" -- kdcache build-teacher-cache --data "$corpus/train" --teacher "$teacher" --out "$out" \
    --crop-seconds "$CROP" --crops-per-utt "$k" "$@" ::: kdcache cache info "$out"
}

train_teacher() {  # train_teacher STAGE NAME CORPUS OUT [MODEL_ARGS EPOCHS]
  job "$1" "$2" -- kdcache train-teacher --data "$3/train" --arch "$TEACHER_ARCH" --model-args "${5:-$TEACHER_ARGS}" \
    --epochs "${6:-$TEACHER_EPOCHS}" --batch-size 16 --crop-seconds "$CROP" --final-lr 1e-2 --margin 0 --out "$4" --resume \
    ::: kdcache evaluate --model "$4" --data "$3/test" --trials "$3/test/trials.txt" --out "$4/metrics.json"
}

# ---- stages -------------------------------------------------------------------------------------
stage_corpora() {
  local spec dirs=() corpus_args spk_args
  read -ra corpus_args <<< "$CORPUS_ARGS"; read -ra spk_args <<< "$SPK_ARGS"
  job corpora corpus-demo --fresh "$DEMO" -- kdcache make-synthetic-corpus "$DEMO" "${corpus_args[@]}" \
    ::: python "$HERE/study.py" corpus-stats "$DEMO" --out "$DEMO/stats.json"
  for spec in $SPK_CORPORA; do
    job corpora "corpus-spk$spec" --fresh "$DATA/spk$spec" -- kdcache make-synthetic-corpus "$DATA/spk$spec" \
      --speakers "${spec%x*}" --utterances-per-speaker "${spec#*x}" --test-speakers "$SPK_TEST_SPEAKERS" \
      --test-utterances-per-speaker "$SPK_TEST_UTTS" --test-speaker-offset "$SPK_TEST_OFFSET" "${spk_args[@]}" \
      ::: python "$HERE/study.py" corpus-stats "$DATA/spk$spec" --out "$DATA/spk$spec/stats.json"
    dirs+=("$DATA/spk$spec")
  done
  barrier
  step corpora same-test-set -- python "$HERE/study.py" same-test-set "${dirs[@]}" || exit 1
}

stage_teacher() {
  train_teacher teacher teacher "$DEMO" "$TEACHER"
  own_teacher "$RN" && train_teacher teacher teacher-rn "$DEMO" "$TEACHER_RN" "$RN_TEACHER_ARGS" "$RN_TEACHER_EPOCHS"
  barrier
}

stage_cache() {
  local family out
  for family in xvector "$RN"; do
    [[ $family == xvector ]] || own_teacher "$family" || continue
    out=$(family_caches "$family")k$K_MAIN.zarr
    build_cache cache "$DEMO" "$(family_teacher "$family")" "$out" "$K_MAIN"
  done
  barrier
}

stage_ce() {
  local seed ce=() ce_rn=()
  for seed in $SEEDS_XVEC; do
    student ce "xvector-ce-s$seed" xvector ce "$seed" "$(loss_cache ce)" "$DEMO" "$STUDENT_EPOCHS"
    ce+=("$STUDENTS/xvector-ce-s$seed")
  done
  for seed in $SEEDS_RESNET; do
    student ce "$RN-ce-s$seed" "$RN" ce "$seed" "$(loss_cache ce "$RN")" "$DEMO" "$STUDENT_EPOCHS"
    if own_teacher "$RN"; then ce_rn+=("$STUDENTS/$RN-ce-s$seed"); else ce+=("$STUDENTS/$RN-ce-s$seed"); fi
  done
  barrier
  gate teacher-gate "$TEACHER" "$RESULTS/teacher_margin.md" "${ce[@]}"
  (( ${#ce_rn[@]} )) && gate teacher-gate-rn "$TEACHER_RN" "$RESULTS/teacher_margin_rn.md" "${ce_rn[@]}"
  return 0
}

gate() {  # gate NAME TEACHER OUT CE_RUN...: stop the study unless the teacher beats every CE family
  local name=$1 teacher=$2 out=$3 force=()
  shift 3
  (( FORCE )) && force=(--force)
  step ce "$name" -- python "$HERE/study.py" gate --teacher "$teacher" --out "$out" "${force[@]}" "$@" \
    || { echo "run.sh: the teacher gate failed (see $out); --force to go on" >&2; exit 3; }
}

stage_saliency_cache() {
  saliency_cache saliency-cache "$IG_STEPS" "$IG_INPUT"
  own_teacher "$RN" && saliency_cache saliency-cache "$IG_STEPS" "$IG_INPUT" "$RN"
  barrier
}

stage_grid() {
  local seed loss
  for seed in $SEEDS_XVEC; do
    for loss in $XV_LOSSES; do
      [[ $loss == ce ]] && continue
      student grid "xvector-$loss-s$seed" xvector "$loss" "$seed" "$(loss_cache "$loss")" "$DEMO" "$STUDENT_EPOCHS"
    done
  done
  for seed in $SEEDS_RESNET; do
    for loss in $RN_LOSSES; do
      [[ $loss == ce ]] && continue
      student grid "$RN-$loss-s$seed" "$RN" "$loss" "$seed" "$(loss_cache "$loss" "$RN")" "$DEMO" "$STUDENT_EPOCHS"
    done
  done
  barrier
}

stage_speakers() {
  local spec seed largest=${SPK_CORPORA##* } corpus model
  # CE in each corpus's own label space (the supervised trainer: 4 fresh crops per utterance per epoch,
  # the students' recipe otherwise), and the teacher of the largest label space
  train_teacher speakers "spk$largest-teacher" "$DATA/spk$largest" "$MODELS/spk$largest-teacher"
  for spec in $SPK_CORPORA; do
    corpus=$DATA/spk$spec
    for seed in $SEEDS_SPK; do
      model=$MODELS/spk$spec-xvector-ce-own-s$seed
      job speakers "spk$spec-xvector-ce-own-s$seed" -- kdcache train-teacher --data "$corpus/train" --arch xvector \
        --model-args "$XV_ARGS" --epochs "$STUDENT_EPOCHS" --batch-size 64 --crop-seconds "$CROP" --crops-per-utt "$K_MAIN" \
        --final-lr 1e-3 --margin 0 --seed "$seed" --out "$model" --resume \
        ::: kdcache evaluate --model "$model" --data "$corpus/test" --trials "$corpus/test/trials.txt" --out "$model/metrics.json"
    done
  done
  barrier
  for spec in $SPK_CORPORA; do
    build_cache speakers "$DATA/spk$spec" "$MODELS/spk$largest-teacher" \
      "$CACHES/spk$spec-k$K_MAIN.zarr" "$K_MAIN"
  done
  barrier
  # ce (the teacher's label space, teacher ignored) and dkd from the same cache of each corpus
  for spec in $SPK_CORPORA; do
    for seed in $SEEDS_SPK; do
      for loss in ce dkd-T2-b8; do
        student speakers "spk$spec-xvector-$loss-s$seed" xvector "$loss" "$seed" "$CACHES/spk$spec-k$K_MAIN.zarr" \
          "$DATA/spk$spec" "$STUDENT_EPOCHS"
      done
    done
  done
  barrier
}

stage_ksweep() {
  local k seed epochs name cache
  for k in $K_SWEEP; do
    (( K_PASSES % k == 0 )) || die "K_PASSES $K_PASSES is not a multiple of K $k (equal steps need whole epochs)"
    [[ $k == "$K_MAIN" ]] || build_cache ksweep "$DEMO" "$TEACHER" "$CACHES/k$k.zarr" "$k"
  done
  barrier
  for k in $K_SWEEP; do
    epochs=$(( K_PASSES / k ))
    for seed in $SEEDS_K; do
      student ksweep "xvector-dkd-T2-b8-K$k-s$seed" xvector dkd-T2-b8 "$seed" "$CACHES/k$k.zarr" "$DEMO" "$epochs"
    done
  done
  local extra=()
  probe
  read -ra extra <<< "$ONLINE_ARGS"
  for seed in $SEEDS_K; do
    name=xvector-dkd-T2-b8-online-s$seed
    local words=(kdcache train-student --online-teacher "$TEACHER" --crop-seconds "$CROP" --data "$DEMO/train" --student xvector
                 --model-args "$XV_ARGS" --loss dkd --temperature 2 --beta 8 --epochs "$ONLINE_EPOCHS" --batch-size 64
                 --final-lr 1e-3 --margin 0 --seed "$seed" --out "$STUDENTS/$name"
                 --trials "$DEMO/test/trials.txt" --eval-data "$DEMO/test" --resume "${extra[@]}")
    if (( HAS_ONLINE )); then job ksweep "$name" -- "${words[@]}"
    else pending ksweep "$name" "needs train-student --online-teacher" -- "${words[@]}"; fi
  done
  barrier
}

# The checks of imlkd's settings: the other integrated-input mode (all seeds, at the grid's IG steps),
# and other IG step counts (seed 0, the grid's input mode).
stage_imlkd_checks() {
  local steps seed other=attribution
  [[ $IG_INPUT == attribution ]] && other=weighted
  saliency_cache imlkd-checks "$IG_STEPS" "$other"
  for steps in $IG_CHECK_STEPS; do saliency_cache imlkd-checks "$steps" "$IG_INPUT"; done
  barrier
  for seed in $SEEDS_XVEC; do
    student imlkd-checks "xvector-imlkd-$other-s$seed" xvector imlkd "$seed" "$(ig_cache "$IG_STEPS" "$other")" "$DEMO" \
      "$STUDENT_EPOCHS"
  done
  for steps in $IG_CHECK_STEPS; do
    student imlkd-checks "xvector-imlkd-ig$steps-s0" xvector imlkd 0 "$(ig_cache "$steps" "$IG_INPUT")" "$DEMO" "$STUDENT_EPOCHS"
  done
  barrier
}

stage_saliency_eval() {
  local family loss words models=() other=attribution teacher
  [[ $IG_INPUT == attribution ]] && other=weighted
  for family in xvector "$RN"; do
    teacher=$(family_teacher "$family")
    # how far the cache's IG step count is from converged maps, per teacher (one run per teacher)
    if [[ $family == xvector ]] || own_teacher "$family"; then
      job saliency-eval "ig-steps-$family" -- kdcache ig-steps --model "$teacher" --label "$(basename "$teacher")" \
        --data "$DEMO/train" --out "$RESULTS/ig_steps/$family" --steps "$IG_SWEEP_STEPS" --utterances "$SAL_UTTERANCES" \
        --crop-seconds "$CROP" --ig-durations "$IG_DURATIONS" --integrated-input "$IG_INPUT"
    fi
    words=(kdcache saliency-eval --model "$teacher" --label teacher)
    models=("$teacher")
    for loss in ce kd-T2 mlkd imlkd; do models+=("$STUDENTS/$family-$loss-s0"); words+=(--model "${models[-1]}" --label "$loss"); done
    if [[ $family == xvector ]]; then  # the imlkd-checks student of the other input mode
      models+=("$STUDENTS/$family-imlkd-$other-s0"); words+=(--model "${models[-1]}" --label "imlkd-$other")
    fi
    words+=(--data "$DEMO/train" --out "$RESULTS/saliency/$family" --utterances "$SAL_UTTERANCES"
            --crop-seconds "$CROP" --ig-steps "$SAL_IG_STEPS")
    if (( ! DRY )) && [[ $(finished "${models[@]}" | wc -l) -ne ${#models[@]} ]]; then
      pending saliency-eval "saliency-eval-$family" "waits for its models (stages teacher, grid, imlkd-checks)" -- "${words[@]}"
    else
      job saliency-eval "saliency-eval-$family" -- "${words[@]}"
    fi
  done
  barrier
}

# Orderings the papers claim, and controls: "A B" = EER(A) - EER(B), pooled over A's and B's seeds.
COMPARISONS=(
  "xvector-dkd-T1-b2 xvector-embedding" "xvector-dkd-T1-b2 xvector-kd-T2" "xvector-dkd-T2-b8 xvector-embedding"
  "xvector-dkd-T2-b8 xvector-kd-T2" "xvector-dkd-T2-b8 xvector-kd-T4" "xvector-imlkd xvector-kd-T2"
  "xvector-imlkd xvector-embedding" "xvector-imlkd xvector-mlkd" "xvector-kd-T2-ls xvector-kd-T2"
  "xvector-dkd-T2-b8-ls xvector-dkd-T2-b8"
  "xvector-imlkd xvector-imlkd-attribution"
  "$RN-dkd-T1-b2 $RN-embedding" "$RN-dkd-T1-b2 $RN-kd-T2" "$RN-dkd-T2-b8 $RN-embedding" "$RN-dkd-T2-b8 $RN-kd-T2"
  "$RN-imlkd $RN-kd-T2" "$RN-imlkd $RN-embedding" "$RN-imlkd $RN-mlkd"
)
for loss in $XV_LOSSES; do  # and every loss of each family against its ce (a logit-standardized one against its base, above)
  [[ $loss == ce || $loss == *-ls ]] || COMPARISONS+=("xvector-$loss xvector-ce")
done
for loss in $RN_LOSSES; do
  [[ $loss == ce || $loss == *-ls ]] || COMPARISONS+=("$RN-$loss $RN-ce")
done

seed_dirs() {  # seed_dirs BASE SEEDS: the finished run folders BASE-s<seed>
  local base=$1 seed dirs=()
  for seed in $2; do dirs+=("$STUDENTS/$base-s$seed"); done
  finished "${dirs[@]}"
}

compare_step() {  # compare_step NAME_A "DIRS_A" NAME_B "DIRS_B" [--data CORPUS]: skipped when a side is empty
  local a=$1 b=$3 dirs_a=() dirs_b=() words d
  mapfile -t dirs_a <<< "$2"; mapfile -t dirs_b <<< "$4"
  shift 4
  [[ -n ${dirs_a[0]:-} && -n ${dirs_b[0]:-} ]] || { echo "compare $a vs $b: skipped (no finished runs)"; return 0; }
  words=(kdcache compare --name-a "$a" --name-b "$b")
  for d in "${dirs_a[@]}"; do words+=(--a "$d"); done
  for d in "${dirs_b[@]}"; do words+=(--b "$d"); done
  step report "compare-$a-vs-$b" -- "${words[@]}" "$@" --out "$RESULTS/compare/$a-vs-$b.json" \
    || echo "compare $a vs $b: failed (score files missing before 'evaluate' writes them?)" >&2
}

stage_report() {
  local pair a b seeds_a seeds_b fam spec k seed grid=() spk=() ks=()
  probe
  seeds_for() { if [[ $1 == "$RN"-* ]]; then echo "$SEEDS_RESNET"; else echo "$SEEDS_XVEC"; fi; }
  for pair in "${COMPARISONS[@]}"; do
    read -r a b <<< "$pair"
    compare_step "$a" "$(seed_dirs "$a" "$(seeds_for "$a")")" "$b" "$(seed_dirs "$b" "$(seeds_for "$b")")"
  done
  for steps in $IG_CHECK_STEPS; do  # the same seed-0 imlkd student on IG maps of another step count
    compare_step "imlkd-ig$steps" "$(seed_dirs "xvector-imlkd-ig$steps" 0)" "imlkd-ig$IG_STEPS" "$(seed_dirs xvector-imlkd 0)"
  done
  for fam in xvector "$RN"; do
    compare_step "$(basename "$(family_teacher "$fam")")" "$(finished "$(family_teacher "$fam")")" \
      "$fam-ce" "$(seed_dirs "$fam-ce" "$(seeds_for "$fam")")"
  done
  local largest=${SPK_CORPORA##* }
  for spec in $SPK_CORPORA; do
    [[ $spec == "$largest" ]] && continue
    local own_a=() own_b=()
    for seed in $SEEDS_SPK; do
      own_a+=("$MODELS/spk$largest-xvector-ce-own-s$seed"); own_b+=("$MODELS/spk$spec-xvector-ce-own-s$seed")
    done
    compare_step "spk$largest-ce-own" "$(finished "${own_a[@]}")" "spk$spec-ce-own" "$(finished "${own_b[@]}")"
    compare_step "spk$largest-dkd-T2-b8" "$(seed_dirs "spk$largest-xvector-dkd-T2-b8" "$SEEDS_SPK")" \
      "spk$spec-dkd-T2-b8" "$(seed_dirs "spk$spec-xvector-dkd-T2-b8" "$SEEDS_SPK")"
  done
  for spec in $SPK_CORPORA; do
    compare_step "spk$spec-dkd-T2-b8" "$(seed_dirs "spk$spec-xvector-dkd-T2-b8" "$SEEDS_SPK")" \
      "spk$spec-ce" "$(seed_dirs "spk$spec-xvector-ce" "$SEEDS_SPK")"
  done
  for k in $K_SWEEP; do
    compare_step "K$k" "$(seed_dirs "xvector-dkd-T2-b8-K$k" "$SEEDS_K")" "online" \
      "$(seed_dirs "xvector-dkd-T2-b8-online" "$SEEDS_K")"
  done
  if (( HAS_REPORT )); then
    local teachers=("$TEACHER"); own_teacher "$RN" && teachers+=("$TEACHER_RN")
    mapfile -t grid < <(finished "${teachers[@]}" "$STUDENTS"/xvector-* "$STUDENTS/$RN"-*)
    mapfile -t spk < <(finished "$MODELS"/spk*-teacher "$MODELS"/spk*-ce-own-* "$STUDENTS"/spk*)
    mapfile -t ks < <(finished "$STUDENTS"/xvector-dkd-T2-b8-K* "$STUDENTS"/xvector-dkd-T2-b8-online-*)
    (( ${#grid[@]} )) && step report report-grid -- kdcache report "${grid[@]}" --out "$RESULTS/grid"
    (( ${#spk[@]} )) && step report report-speakers -- kdcache report "${spk[@]}" --out "$RESULTS/speakers"
    (( ${#ks[@]} )) && step report report-ksweep -- kdcache report "${ks[@]}" --out "$RESULTS/ksweep"
  else
    pending report report "needs kdcache report (study.py collect writes tables with the same columns)" -- \
      kdcache report "$TEACHER" "$STUDENTS" --out "$RESULTS/grid"
  fi
  step report collect -- python "$HERE/study.py" collect --root "$ROOT" --out "$RESULTS" \
    --k-passes "$K_PASSES" --online-epochs "$ONLINE_EPOCHS"
}

# The whole run is one compound command, read by bash before it starts: editing this file (or a git pull)
# while a study runs changes nothing in the running one (bash reads a script as it goes otherwise).
{
  if (( ! DRY )); then
    echo "study root $ROOT, results $RESULTS, stages ${STAGES[$START]}..${STAGES[$STOP]}, $JOBS job(s) at a time"
    mkdir -p "$ROOT"
    rm -f "$ROOT/pending.txt" "$ROOT/failed.txt"  # both describe this invocation only
  fi
  (( DRY )) && { probe; echo "# kdcache: ${KD[*]}; loss-args $HAS_LOSS_ARGS, online-teacher $HAS_ONLINE, report $HAS_REPORT"; }
  for (( s = START; s <= STOP; s++ )); do
    name=${STAGES[$s]}
    (( DRY )) && echo "## stage $s $name" || echo "[$(date -u +%H:%M:%S)] ===== stage $s: $name ====="
    "stage_${name//-/_}"
  done
  (( DRY )) || { echo "study stages ${STAGES[$START]}..${STAGES[$STOP]} finished; results in $RESULTS"
                 [[ -s $ROOT/pending.txt ]] && echo "pending runs (each with what it waits for): $ROOT/pending.txt"
                 (( FAILURES )) && echo "$FAILURES run(s) failed (--keep-going): $ROOT/failed.txt"; }
  (( FAILURES )) && exit 1
  exit 0
}
