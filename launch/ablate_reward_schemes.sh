#!/usr/bin/env bash
# The paper's reward ablation: one `ray job submit` per reward variant, each its own run name and folder,
# one after another (--parallel: all at once).
#   bash launch/ablate_reward_schemes.sh --address http://HEAD:8265 [flags] [-- TRAIN_FLAGS...]
# Run from the repository root: it becomes each job's working_dir.   (docs/launch.md)
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash launch/ablate_reward_schemes.sh [flags] [-- TRAIN_FLAGS...]

Submits launch/train_ppo_medqa.sh once per variant, as separate Ray jobs (submission id = run name), one
after another: each job starts when the previous one has ended, and a variant that does not succeed stops
the rest (--keep-going: go on, and exit 1 at the end). Each job checks the cluster's free GPUs and the disk
for itself when it starts. With --parallel every variant is submitted at once, after one job has checked
that the cluster has the GPUs and the output disk the room for all of them together; watch them with
`ray job logs -f RUN_NAME`.

Variants (reward flags of train_ppo_medqa.sh) and what each changes against neutral:
  neutral     --reward-scheme neutral              the paper's reward: the baseline
  strict      --format strict                      reasoning before <think> is malformed (-1): closes the
                                                   paper's "step-by-step exploit" hack, all run long
  leak        --leak-penalty X                     a <think> that merely states the answer loses X: closes
                                                   the paper's "direct answer hacker" hack, all run long
  penalized   --reward-scheme penalized            the paper's ablation, wrong = -1 = malformed. Where no
                                                   response is malformed, rewards are 2 x neutral - 1: grpo
                                                   and reinforce_baseline get the same advantages, ppo the
                                                   same but for a KL weight halved against the reward. It
                                                   tests whether a wrong answer must score above a malformed
                                                   one, which matters while responses are still malformed.

  --variants LIST       comma-separated (default neutral,strict,leak: each persists through the run)
  --leak-penalty X      the leak variant's penalty (default 0.5)
  --address URL         Ray dashboard (default $RAY_ADDRESS, else http://127.0.0.1:8265)
  --prefix P            run names are P-VARIANT (default medrlvr-ablate-UTCTIME)
  --output-root DIR     absolute; each run writes DIR/RUN_NAME (default ~/med-rlvr-runs)
  --keep-going          one after another: run the remaining variants after one fails
  --parallel            submit all variants at once, after checking GPUs and disk for all of them together
  --dry-run             print each submit command and dry-run each variant here; submit nothing
  -h, --help            this text
  -- TRAIN_FLAGS...     passed to every train_ppo_medqa.sh, e.g. -- --algo grpo --nodes 2
EOF
}

die() { echo "med-rlvr ablate_reward_schemes.sh: error: $*" >&2; exit 2; }
fail() { echo "med-rlvr ablate_reward_schemes.sh: error: $*" >&2; exit 1; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"; echo "$2"; }

variants=neutral,strict,leak leak_penalty=0.5 address=${RAY_ADDRESS:-http://127.0.0.1:8265}
prefix=medrlvr-ablate-$(date -u +%Y%m%dT%H%M%SZ) output_root=$HOME/med-rlvr-runs dry_run=0 keep_going=0 parallel=0
train_flags=()
while (($#)); do
  case "$1" in
    --variants) variants=$(value "$@"); shift 2 ;;
    --leak-penalty) leak_penalty=$(value "$@"); shift 2 ;;
    --address) address=$(value "$@"); shift 2 ;;
    --prefix) prefix=$(value "$@"); shift 2 ;;
    --output-root) output_root=$(value "$@"); shift 2 ;;
    --keep-going) keep_going=1; shift ;;
    --parallel) parallel=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; train_flags=("$@"); break ;;
    *) die "unknown flag $1 (see --help; train_ppo_medqa.sh flags go after --)" ;;
  esac
done
[[ $output_root == /* ]] || die "--output-root must be an absolute path, got '$output_root'"
((!parallel || !keep_going)) || die "--keep-going is for variants run one after another, not --parallel"

# The variant's train_ppo_medqa.sh command, in the array `train`: VARIANT RUN_NAME
set_train() {
  case "$1" in
    neutral) train=(--reward-scheme neutral) ;;
    penalized) train=(--reward-scheme penalized) ;;
    strict) train=(--reward-scheme neutral --format strict) ;;
    leak) train=(--reward-scheme neutral --leak-penalty "$leak_penalty") ;;
    *) die "unknown variant '$1'; choose from neutral, penalized, strict, leak" ;;
  esac
  train=(bash launch/train_ppo_medqa.sh "${train[@]}" --run-name "$2" --output-dir "$output_root/$2")
}

# `train` as a Ray job, printed first: RUN_NAME [RAY_JOB_SUBMIT_FLAGS...]. The submission id is the run
# name: Ray refuses a second job with the same id, so a re-run of this script with the same --prefix
# cannot start a duplicate (and the output folder check stops it too).
submit() {
  local command=(ray job submit --address "$address" --working-dir . --submission-id "$1" "${@:2}" --
    "${train[@]}" "${train_flags[@]}")
  echo "ablate_reward_schemes.sh: $(printf '%q ' "${command[@]}")"
  if ((dry_run)); then
    "${train[@]}" --dry-run "${train_flags[@]}"
  else
    "${command[@]}"
  fi
}

# Whether a job ended well, from Ray's own record once it has ended: `ray job submit` without --no-wait
# exits 0 for a stopped job too, and a lost connection ends it early.
succeeded() {
  local status
  while status=$(ray job status --address "$address" "$1" 2>&1) && [[ $status == *"Status for job"* ]]; do
    sleep 30 # pending or running
  done
  echo "$status" | tail -n 2
  [[ $status == *"Job '$1' succeeded"* ]]
}

IFS=, read -ra variant_list <<<"$variants"
for variant in "${variant_list[@]}"; do set_train "$variant" "$prefix-$variant"; done # unknown ones stop here

if ((parallel)); then
  # A dry run as a job on the cluster, --runs-together N: the first variant's GPUs and checkpoint disk,
  # N times, against the cluster's free GPUs and the output folder's free disk.
  set_train "${variant_list[0]}" "$prefix-check"
  train+=(--runs-together "${#variant_list[@]}" --dry-run)
  if ((dry_run)); then
    echo "ablate_reward_schemes.sh: --parallel: the cluster checks GPUs and disk for all ${#variant_list[@]} runs" \
      "with: $(printf '%q ' "${train[@]}" "${train_flags[@]}")"
  else
    submit "$prefix-check" ||
      fail "the cluster or the disk cannot hold all ${#variant_list[@]} runs at once (job $prefix-check); nothing submitted"
  fi
  for variant in "${variant_list[@]}"; do
    set_train "$variant" "$prefix-$variant"
    submit "$prefix-$variant" --no-wait
  done
  exit 0
fi

failed=()
for i in "${!variant_list[@]}"; do
  run_name=$prefix-${variant_list[$i]}
  set_train "${variant_list[$i]}" "$run_name"
  if submit "$run_name" --no-wait && { ((dry_run)) || {
    ray job logs --address "$address" --follow "$run_name" || true
    succeeded "$run_name"
  }; }; then
    continue
  fi
  failed+=("$run_name")
  rest=("${variant_list[@]:i+1}")
  if ((!keep_going && ${#rest[@]})); then
    fail "$run_name did not succeed (ray job logs $run_name); not submitted: ${rest[*]} (--keep-going runs them anyway)"
  fi
done
((${#failed[@]} == 0)) || fail "did not succeed: ${failed[*]} (ray job logs RUN_NAME)"
