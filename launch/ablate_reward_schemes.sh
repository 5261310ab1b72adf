#!/usr/bin/env bash
# The paper's reward ablation: one `ray job submit` per reward variant, each its own run name and folder.
#   bash launch/ablate_reward_schemes.sh --address http://HEAD:8265 [flags] [-- TRAIN_FLAGS...]
# Run from the repository root: it becomes each job's working_dir.   (docs/launch.md)
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash launch/ablate_reward_schemes.sh [flags] [-- TRAIN_FLAGS...]

Submits launch/train_ppo_medqa.sh once per variant, as separate Ray jobs (submission id = run name),
and returns; watch them with `ray job logs -f RUN_NAME`.

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
  --dry-run             print each submit command and dry-run each variant here; submit nothing
  -h, --help            this text
  -- TRAIN_FLAGS...     passed to every train_ppo_medqa.sh, e.g. -- --algo grpo --nodes 2
EOF
}

die() { echo "med-rlvr ablate_reward_schemes.sh: error: $*" >&2; exit 2; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"; echo "$2"; }

variants=neutral,strict,leak leak_penalty=0.5 address=${RAY_ADDRESS:-http://127.0.0.1:8265}
prefix=medrlvr-ablate-$(date -u +%Y%m%dT%H%M%SZ) output_root=$HOME/med-rlvr-runs dry_run=0
train_flags=()
while (($#)); do
  case "$1" in
    --variants) variants=$(value "$@"); shift 2 ;;
    --leak-penalty) leak_penalty=$(value "$@"); shift 2 ;;
    --address) address=$(value "$@"); shift 2 ;;
    --prefix) prefix=$(value "$@"); shift 2 ;;
    --output-root) output_root=$(value "$@"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; train_flags=("$@"); break ;;
    *) die "unknown flag $1 (see --help; train_ppo_medqa.sh flags go after --)" ;;
  esac
done
[[ $output_root == /* ]] || die "--output-root must be an absolute path, got '$output_root'"

IFS=, read -ra variant_list <<<"$variants"
for variant in "${variant_list[@]}"; do
  case "$variant" in
    neutral) reward_flags=(--reward-scheme neutral) ;;
    penalized) reward_flags=(--reward-scheme penalized) ;;
    strict) reward_flags=(--reward-scheme neutral --format strict) ;;
    leak) reward_flags=(--reward-scheme neutral --leak-penalty "$leak_penalty") ;;
    *) die "unknown variant '$variant'; choose from neutral, penalized, strict, leak" ;;
  esac
  run_name=$prefix-$variant
  train=(bash launch/train_ppo_medqa.sh "${reward_flags[@]}" --run-name "$run_name" --output-dir "$output_root/$run_name")
  # The submission id is the run name: Ray refuses a second job with the same id, so a re-run of this
  # script with the same --prefix cannot start a duplicate (and the output folder check stops it too).
  submit=(ray job submit --address "$address" --working-dir . --submission-id "$run_name" --no-wait --
    "${train[@]}" "${train_flags[@]}")
  echo "ablate_reward_schemes.sh: $(printf '%q ' "${submit[@]}")"
  if ((dry_run)); then
    "${train[@]}" --dry-run "${train_flags[@]}"
  else
    "${submit[@]}"
  fi
done
