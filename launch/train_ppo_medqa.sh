#!/usr/bin/env bash
# Med-RLVR on OpenRLHF 0.11.2: PPO from Qwen2.5-3B (base) on MedQA-USMLE with the rule-based reward.
# On a Ray cluster, from the repository root:
#   ray job submit --address http://HEAD:8265 --working-dir . -- bash launch/train_ppo_medqa.sh [flags]
# Without a GPU: bash launch/train_ppo_medqa.sh --dry-run   (docs/launch.md)
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash launch/train_ppo_medqa.sh [flags] [-- OPENRLHF_FLAGS...]

Checks the OpenRLHF command (data, reward file, OpenRLHF's own parser and train() assertions), prints the
run plan, checks the cluster, writes the run's manifest, gives every Ray actor the reward configuration,
and starts openrlhf.cli.train_ppo_ray.

Reward (reaches the reward function in every rollout actor on every node):
  (each flag's default is its MED_RLVR_* variable when the job's environment sets one, as with ray job submit
  --runtime-env-json: Ray gives every actor the job's value, so a flag that contradicts it is refused)
  --reward-scheme S        neutral (default, the paper's: wrong = 0) | penalized (wrong = -1, the paper's
                           ablation). penalized differs from neutral only where a response is malformed: with
                           none in a batch, penalized = 2 x neutral - 1, which gives grpo and reinforce_baseline
                           the same advantages (their group baselines and normalization remove it) and ppo the
                           same up to its KL term, whose weight halves relative to the reward (and the critic's
                           scale). What it tests is whether a wrong answer should score above a malformed one.
  --format F               lenient (default, the paper's) | strict (nothing may precede <think>)
  --leak-penalty X         subtract X when <think> merely states the answer (default 0 = off)
  --min-think-words N      thinking shorter than N words loses --short-think-penalty (default 0 = off); each CJK
                           character counts as a word
  --short-think-penalty X  (default 1.0; only with --min-think-words > 0)
  --reward-server          grade through an HTTP reward service (python -m med_rlvr_plugin.serve) that the
                           launcher starts on the head node for the run, instead of loading the reward file
                           in every rollout actor; same flags, same probe of every node (docs/reuse.md)
Algorithm (each spends 256 responses a step and about the same steps and responses per run):
  --algo A                 ppo (default: PPO with a critic, GAE; 256 prompts x 1, 8 passes)
                           | grpo | reinforce_baseline (32 prompts x 8, 1 pass; no critic)
Model, data, cluster:
  --model M                Hugging Face name or path (default Qwen/Qwen2.5-3B, the base model)
  --train-data FILE        prompt file (default data/medqa_train.jsonl)
  --eval-data FILES        comma-separated dev prompt files for OpenRLHF's periodic eval, or "none"
                           (default data/medqa_dev.jsonl; test sets are refused: they are for the end)
  --eval-share F           periodic eval may cost this share of training's generation (default 0.1):
                           sets how often it runs, per --algo (docs/launch.md, "Run plan")
  --evals N                periodic evals at least over the run (default 5): when the whole dev file
                           that often would cost more than --eval-share, each eval reads a fixed subset
                           (its first prompts), written to OUTPUT_DIR/eval_subset.jsonl
  --checkpoints N          checkpoints over the run, each with Hugging Face weights (default 10)
  --cuda-graphs            let vLLM use CUDA graphs (drops --vllm.enforce_eager; docs/launch.md, "Defaults")
  --nodes N                GPU nodes (default 1)
  --gpus-per-node N        (default 8)
Run:
  --run-name NAME          (default medrlvr-ALGO-SCHEME-FORMAT[-leakX][-thinkN]-UTCTIME)
  --output-dir DIR         absolute; checkpoints, final model, manifest (default ~/med-rlvr-runs/NAME).
                           Must not exist yet, unless --resume. Multi-node: shared storage (checked).
  --resume                 continue the run in --output-dir from its last checkpoint
  --allow-changes          with --resume: resume although the command differs from the run's
                           manifest (model, algorithm, reward, data, batch shape); without it
                           --resume refuses and lists each difference
  --wandb-project P        log to Weights & Biases; the key is read from WANDB_API_KEY in the job's env
  --tensorboard            log to OUTPUT_DIR/tensorboard
  --rollout-samples F      record a share F (0 to 1) of graded rollouts in OUTPUT_DIR/rollouts, for
                           `python -m med_rlvr_plugin.analyze OUTPUT_DIR` (docs/dynamics.md; default off)
  --dry-run                check everything and print the command and the plan; start nothing, write
                           nothing. Uses the built-in sample when none of the default data files exists.
  --runs-together N        with --dry-run, run as a Ray job: check that the cluster's free GPUs and the
                           output folder's free disk hold N runs like this one at once (what
                           ablate_reward_schemes.sh --parallel does before it submits them)
  -h, --help               this text
  -- OPENRLHF_FLAGS...     passed to OpenRLHF unchanged, after the script's own (the last one wins)
EOF
}

die() { echo "med-rlvr train_ppo_medqa.sh: error: $*" >&2; exit 2; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"; echo "$2"; }
# A reward flag's value (reward_flag VARIABLE --flag VALUE). Ray gives every actor the MED_RLVR_* value of
# the job's runtime env (ray job submit --runtime-env-json) over the driver's, so a flag that contradicts
# the environment is refused, and without the flag the environment's value is the default.
reward_flag() {
  local name=$1 given
  shift
  given=$(value "$@")
  [[ -z ${!name-} || ${!name} == "$given" ]] ||
    die "$1 $given contradicts $name=${!name} in the job's environment (--runtime-env-json, export): set one"
  echo "$given"
}

reward_scheme=${MED_RLVR_REWARD_SCHEME:-neutral} format=${MED_RLVR_FORMAT:-lenient}
leak_penalty=${MED_RLVR_LEAK_PENALTY:-0} min_think_words=${MED_RLVR_MIN_THINK_WORDS:-0}
short_think_penalty=${MED_RLVR_SHORT_THINK_PENALTY:-1.0}
algo=ppo model=Qwen/Qwen2.5-3B nodes=1 gpus_per_node=8 eager=(--vllm.enforce_eager)
train_data="" eval_data="" run_name="" output_dir="" dry_run=0 rollout_samples=""
launcher_flags=() passthrough=()
launch_command="bash launch/train_ppo_medqa.sh $(printf '%q ' "$@")"
while (($#)); do
  case "$1" in
    --reward-scheme) reward_scheme=$(reward_flag MED_RLVR_REWARD_SCHEME "$@"); shift 2 ;;
    --format) format=$(reward_flag MED_RLVR_FORMAT "$@"); shift 2 ;;
    --leak-penalty) leak_penalty=$(reward_flag MED_RLVR_LEAK_PENALTY "$@"); shift 2 ;;
    --min-think-words) min_think_words=$(reward_flag MED_RLVR_MIN_THINK_WORDS "$@"); shift 2 ;;
    --short-think-penalty) short_think_penalty=$(reward_flag MED_RLVR_SHORT_THINK_PENALTY "$@"); shift 2 ;;
    --algo) algo=$(value "$@"); shift 2 ;;
    --model) model=$(value "$@"); shift 2 ;;
    --train-data) train_data=$(value "$@"); shift 2 ;;
    --eval-data) eval_data=$(value "$@"); shift 2 ;;
    --nodes) nodes=$(value "$@"); shift 2 ;;
    --gpus-per-node) gpus_per_node=$(value "$@"); shift 2 ;;
    --run-name) run_name=$(value "$@"); shift 2 ;;
    --output-dir) output_dir=$(value "$@"); shift 2 ;;
    --rollout-samples) rollout_samples=$(value "$@"); shift 2 ;;
    --wandb-project | --eval-share | --evals | --checkpoints | --runs-together) launcher_flags+=("$1" "$(value "$@")"); shift 2 ;;
    --cuda-graphs) eager=(); shift ;;
    --resume | --allow-changes | --tensorboard | --reward-server) launcher_flags+=("$1"); shift ;;
    --dry-run) dry_run=1 launcher_flags+=("$1"); shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; passthrough=("$@"); break ;;
    *) die "unknown flag $1 (see --help; OpenRLHF flags go after --)" ;;
  esac
done

[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got '$gpus_per_node'"
gpus=$((nodes * gpus_per_node))

# Each algorithm spends 256 responses a step, and about the same number of steps and responses a run:
# PPO samples once per prompt and sees each question 8 times; GRPO and REINFORCE++-baseline need a group
# of 8 responses per prompt for their baseline, so one pass gives them the same count. They keep the KL
# term as a loss (k3, GRPO's; k2, OpenRLHF's recommendation for REINFORCE++) since no critic shapes it.
case "$algo" in
  ppo) algo_args=(
    --algo.advantage.estimator gae
    --rollout.batch_size 256 --rollout.n_samples_per_prompt 1 --train.num_episodes 8
    --algo.kl.init_coef 1e-3 --algo.kl.estimator k1
    --critic.model_name_or_path "$model" --critic.num_nodes "$nodes" --critic.num_gpus_per_node "$gpus_per_node"
    --critic.adam.lr 9e-6
  ) ;;
  grpo) algo_args=(
    --algo.advantage.estimator group_norm
    --rollout.batch_size 32 --rollout.n_samples_per_prompt 8 --train.num_episodes 1
    --algo.kl.init_coef 1e-3 --algo.kl.use_loss --algo.kl.estimator k3
  ) ;;
  reinforce_baseline) algo_args=(
    --algo.advantage.estimator reinforce_baseline
    --rollout.batch_size 32 --rollout.n_samples_per_prompt 8 --train.num_episodes 1
    --algo.kl.init_coef 1e-3 --algo.kl.use_loss --algo.kl.estimator k2
  ) ;;
  *) die "--algo must be ppo, grpo or reinforce_baseline, got '$algo'" ;;
esac

if [[ -z $run_name ]]; then
  run_name="medrlvr-$algo-$reward_scheme-$format"
  [[ $leak_penalty == 0 ]] || run_name+="-leak$leak_penalty"
  [[ $min_think_words == 0 ]] || run_name+="-think$min_think_words"
  run_name+="-$(date -u +%Y%m%dT%H%M%SZ)"
fi
output_dir=${output_dir:-$HOME/med-rlvr-runs/$run_name}

# A dry run where none of the default data files exists (and none is named) checks the built-in sample in
# their place and plans for the sizes of the prepared MedQA files; once one exists, the run's own files are
# checked, and a missing one stops the dry run as it would stop the run.
if ((dry_run)) && [[ -z $train_data && ! -f data/medqa_train.jsonl ]] &&
  [[ $eval_data == none || -z $eval_data && ! -f data/medqa_dev.jsonl ]]; then
  sample_dir=$(mktemp -d)
  trap 'rm -rf "$sample_dir"' EXIT
  python3 -m med_rlvr_plugin.launcher sample "$sample_dir/sample.jsonl"
  train_data=$sample_dir/sample.jsonl missing=data/medqa_train.jsonl
  [[ -n $eval_data ]] || eval_data=$sample_dir/sample.jsonl missing+=,data/medqa_dev.jsonl
  launcher_flags+=(--builtin-sample "$missing")
fi
train_data=${train_data:-data/medqa_train.jsonl}
eval_data=${eval_data:-data/medqa_dev.jsonl}

# Hybrid engine (OpenRLHF's recommended PPO layout): vLLM, actor, reference and critic share every GPU and
# sleep in turn, one vLLM engine per GPU (a 3B model needs no tensor parallelism). Eager vLLM: sleep mode
# frees only weights and KV cache, not CUDA-graph memory, and OpenRLHF's staged wake-up (weights, then KV
# cache) is where CUDA-graph replay has crashed (docs/launch.md, "Defaults").
openrlhf_args=(
  --actor.model_name_or_path "$model"
  --actor.num_nodes "$nodes" --actor.num_gpus_per_node "$gpus_per_node"
  --ref.num_nodes "$nodes" --ref.num_gpus_per_node "$gpus_per_node"
  --train.colocate_all --vllm.num_engines "$gpus" --vllm.tensor_parallel_size 1
  --vllm.gpu_memory_utilization 0.5 --vllm.enable_sleep --ds.enable_sleep "${eager[@]}"

  --reward.remote_url med_rlvr_plugin/openrlhf_reward.py
  --data.prompt_dataset "$train_data" --data.input_key prompt --data.label_key label
  --rollout.max_new_tokens 1024 --rollout.temperature 1.0
  "${algo_args[@]}"
  --train.batch_size 128 --train.micro_batch_size 4 --rollout.micro_batch_size 8
  --train.max_epochs 1
  --actor.adam.lr 1e-6
  --ds.zero_stage 3 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
  --train.seed 42

  --ckpt.max_num 2 --ckpt.save_hf --ckpt.best_metric_key none
  --logger.logging_steps 1
)
# The launcher adds --data.max_samples (whole rollouts), --eval.steps and --ckpt.save_steps from the
# plan unless the command gives them, and --data.max_len above OpenRLHF's 2048 when a prompt would be cut.
# Best-checkpoint saving is off: OpenRLHF keeps a full DeepSpeed set and a never-deleted Hugging Face copy
# per new best, ranked by mean reward; pick checkpoints on the dev split with
# `python -m med_rlvr_plugin.evaluate` instead.
if [[ $eval_data != none ]]; then
  openrlhf_args+=(--eval.dataset "$eval_data" --eval.temperature 0 --eval.n_samples_per_prompt 1)
fi

# The launcher forwards every MED_RLVR_* variable of its environment to all Ray actors; the reward file
# reads them when it loads.
export MED_RLVR_REWARD_SCHEME=$reward_scheme MED_RLVR_FORMAT=$format MED_RLVR_LEAK_PENALTY=$leak_penalty \
  MED_RLVR_MIN_THINK_WORDS=$min_think_words MED_RLVR_SHORT_THINK_PENALTY=$short_think_penalty
if [[ -n $rollout_samples ]]; then
  export MED_RLVR_ROLLOUT_SAMPLES=$rollout_samples MED_RLVR_ROLLOUT_DIR=$output_dir/rollouts
fi

# The launcher adds the output, logging and resume flags (checkpoints go beside the manifest).
launcher_flags+=(--output-dir "$output_dir" --run-name "$run_name" --launch-command "$launch_command")
python3 -m med_rlvr_plugin.launcher ppo "${launcher_flags[@]}" -- "${openrlhf_args[@]}" "${passthrough[@]}"
