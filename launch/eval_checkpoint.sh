#!/usr/bin/env bash
# Med-RLVR evaluation on a GPU node: every checkpoint of a training run (or any models) through
# lm-evaluation-harness's vLLM backend, graded by the verifier that trained them (docs/evaluation.md).
# On a Ray cluster, from the repository root (one replica: the job's driver needs the GPUs itself):
#   ray job submit --address http://HEAD:8265 --working-dir . --entrypoint-num-gpus 1 -- \
#     bash launch/eval_checkpoint.sh --run-dir /shared/med-rlvr-runs/NAME
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash launch/eval_checkpoint.sh (--run-dir DIR | --model PATH ...) [flags]

Generates greedily with vLLM (through lm-eval) and grades with the med-rlvr verifier: per model, the
paper's table (report.md, summary.json); across models, comparison.md; for a run, accuracy against
training step (steps.md, steps.json, steps.png). Re-running resumes from lm-eval's response cache.

What to evaluate:
  --run-dir DIR            absolute; a training run's OUTPUT_DIR: each ckpt/*global_step*_hf by step, then model/
  --model PATH             a model folder (absolute) or hub id; repeat for several (the first is the baseline)
  --data FILES             comma-separated prepared prompt files
                           (default data/medqa_test.jsonl,data/mmlu_pro_health.jsonl)
  --output-dir DIR         absolute (default RUN_DIR/eval, beside ckpt/ and model/; required without --run-dir)
Generation:
  --n-samples K            responses per question (default 1); accuracy is then pass@1, their mean, and
                           pass@K is reported too
  --temperature T          (default 0, greedy, for 1 sample; 1.0, training's, for more)
  --max-gen-toks N         (default: the run's max_new_tokens from its manifest.json, else 1024, training's
                           --rollout.max_new_tokens)
  --settings manifest|shell    when this shell's MED_RLVR_* variables or --max-gen-toks contradict the run's
                           manifest.json (refused by default): use the manifest's, or the shell's
  --limit N                only the first N questions of each file
vLLM (lm-eval's model arguments):
  --tensor-parallel N      GPUs per model replica (default 1)
  --data-parallel N        replicas (default 1). Above 1, lm-eval runs each replica as a Ray task with
                           N_tensor GPUs: submit without --entrypoint-num-gpus so the driver holds none
  --gpu-memory-utilization X   (default 0.9)
  --max-model-len N        prompt + response tokens per sequence (default: the model's own)
  --model-args ARGS        more lm-eval/vLLM model arguments, comma-separated k=v (e.g. dtype=bfloat16)
  -h, --help               this text
EOF
}

die() { echo "med-rlvr eval_checkpoint.sh: error: $*" >&2; exit 2; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"; echo "$2"; }

run_dir="" output_dir="" data="" temperature="" limit="" max_model_len="" model_args="" max_gen_toks="" settings=""
n_samples=1 tensor_parallel=1 data_parallel=1 gpu_memory_utilization=0.9
models=()
while (($#)); do
  case "$1" in
    --run-dir) run_dir=$(value "$@"); shift 2 ;;
    --model) models+=("$(value "$@")"); shift 2 ;;
    --data) data=$(value "$@"); shift 2 ;;
    --output-dir) output_dir=$(value "$@"); shift 2 ;;
    --n-samples) n_samples=$(value "$@"); shift 2 ;;
    --temperature) temperature=$(value "$@"); shift 2 ;;
    --max-gen-toks) max_gen_toks=$(value "$@"); shift 2 ;;
    --settings) settings=$(value "$@"); shift 2 ;;
    --limit) limit=$(value "$@"); shift 2 ;;
    --tensor-parallel) tensor_parallel=$(value "$@"); shift 2 ;;
    --data-parallel) data_parallel=$(value "$@"); shift 2 ;;
    --gpu-memory-utilization) gpu_memory_utilization=$(value "$@"); shift 2 ;;
    --max-model-len) max_model_len=$(value "$@"); shift 2 ;;
    --model-args) model_args=$(value "$@"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
done

[[ -n $run_dir || ${#models[@]} -gt 0 ]] || die "give --run-dir DIR or --model PATH (see --help)"
[[ -n $run_dir || -n $output_dir ]] || die "--output-dir is required without --run-dir"
# Under `ray job submit` the working directory is a temporary copy: a relative output would be lost.
for path in "$run_dir" "$output_dir"; do
  [[ -z $path || $path == /* ]] || die "--run-dir and --output-dir must be absolute, got '$path'"
done
for pair in "tensor-parallel:$tensor_parallel" "data-parallel:$data_parallel"; do
  [[ ${pair#*:} =~ ^[1-9][0-9]*$ ]] || die "--${pair%%:*} must be a positive integer, got '${pair#*:}'"
done

vllm_args="tensor_parallel_size=$tensor_parallel,data_parallel_size=$data_parallel"
vllm_args+=",gpu_memory_utilization=$gpu_memory_utilization"
[[ -z $max_model_len ]] || vllm_args+=",max_model_len=$max_model_len"
[[ -z $model_args ]] || vllm_args+=",$model_args"

command=(python3 -m med_rlvr_plugin.evaluate run "${models[@]}" --backend vllm --model-args "$vllm_args"
  --n-samples "$n_samples")
[[ -z $max_gen_toks ]] || command+=(--max-gen-toks "$max_gen_toks")
[[ -z $settings ]] || command+=(--settings "$settings")
[[ -z $run_dir ]] || command+=(--run-dir "$run_dir")
[[ -z $output_dir ]] || command+=(--output-dir "$output_dir")
[[ -z $temperature ]] || command+=(--temperature "$temperature")
[[ -z $limit ]] || command+=(--limit "$limit")
if [[ -n $data ]]; then
  IFS=, read -ra files <<<"$data"
  command+=(--data "${files[@]}")
fi
echo "eval_checkpoint.sh: ${command[*]}" >&2
exec "${command[@]}"
