#!/usr/bin/env bash
# The paper's SFT baseline on OpenRLHF 0.11.2: Qwen2.5-3B (base) fine-tuned on MedQA's gold answers,
# through `deepspeed --module openrlhf.cli.train_sft` on the GPUs of the node it runs on (not through Ray).
#   bash launch/train_sft_medqa.sh [flags]       Without a GPU: add --dry-run   (docs/launch.md)
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash launch/train_sft_medqa.sh [flags] [-- OPENRLHF_FLAGS...]

Checks the OpenRLHF SFT command (OpenRLHF's own parser, DeepSpeed's batch arithmetic; every SFT target
graded a correct answer by the verifier), prints the checkpoint plan, checks this node's GPUs and disk,
writes the run's manifest and starts deepspeed on this node's GPUs.

  --model M                Hugging Face name or path (default Qwen/Qwen2.5-3B, the base model)
  --train-data FILE        SFT file from `data_prep/prepare.py medqa --sft` (default data/medqa_train_sft.jsonl)
  --gpus-per-node N        GPUs of this node to use (default 8)
  --checkpoints N          checkpoints over the run, each with Hugging Face weights (default 10);
                           --resume continues from the last one
  --run-name NAME          (default medrlvr-sft-UTCTIME)
  --output-dir DIR         absolute; checkpoints, final model, manifest (default ~/med-rlvr-runs/NAME).
                           Must not exist yet, unless --resume.
  --resume                 continue the run in --output-dir from its last checkpoint
  --allow-changes          with --resume: resume although the command differs from the run's
                           manifest (model, algorithm, reward, data, batch shape); without it
                           --resume refuses and lists each difference
  --wandb-project P        log to Weights & Biases; the key is read from WANDB_API_KEY
  --tensorboard            log to OUTPUT_DIR/tensorboard
  --dry-run                check everything and print the command; start nothing, write nothing.
                           Uses the built-in sample when the default SFT file is not prepared.
  -h, --help               this text
  -- OPENRLHF_FLAGS...     passed to OpenRLHF unchanged, after the script's own (the last one wins)
EOF
}

die() { echo "med-rlvr train_sft_medqa.sh: error: $*" >&2; exit 2; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"; echo "$2"; }

model=Qwen/Qwen2.5-3B gpus_per_node=8 train_data="" run_name="" output_dir="" dry_run=0
launcher_flags=() passthrough=()
launch_command="bash launch/train_sft_medqa.sh $(printf '%q ' "$@")"
while (($#)); do
  case "$1" in
    --model) model=$(value "$@"); shift 2 ;;
    --train-data) train_data=$(value "$@"); shift 2 ;;
    --gpus-per-node) gpus_per_node=$(value "$@"); shift 2 ;;
    --run-name) run_name=$(value "$@"); shift 2 ;;
    --output-dir) output_dir=$(value "$@"); shift 2 ;;
    --wandb-project | --checkpoints) launcher_flags+=("$1" "$(value "$@")"); shift 2 ;;
    --resume | --allow-changes | --tensorboard) launcher_flags+=("$1"); shift ;;
    --dry-run) dry_run=1 launcher_flags+=("$1"); shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; passthrough=("$@"); break ;;
    *) die "unknown flag $1 (see --help; OpenRLHF flags go after --)" ;;
  esac
done

[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got '$gpus_per_node'"
run_name=${run_name:-medrlvr-sft-$(date -u +%Y%m%dT%H%M%SZ)}
output_dir=${output_dir:-$HOME/med-rlvr-runs/$run_name}

if ((dry_run)) && [[ -z $train_data && ! -f data/medqa_train_sft.jsonl ]]; then
  sample_dir=$(mktemp -d)
  trap 'rm -rf "$sample_dir"' EXIT
  python3 -m med_rlvr_plugin.launcher sample --sft "$sample_dir/sample_sft.jsonl"
  train_data=$sample_dir/sample_sft.jsonl
  launcher_flags+=(--builtin-sample data/medqa_train_sft.jsonl)
fi
train_data=${train_data:-data/medqa_train_sft.jsonl}

# The prompt column already holds the full base-model prompt, so the input template is the identity (the
# SFT trainer's default would wrap it in a second "User: ... Assistant:"). The targets are short
# (answer-only: MedQA has no reference reasoning), so a few epochs at OpenRLHF's SFT learning rate.
# The launcher adds --ckpt.save_steps from --checkpoints (OpenRLHF's SFT saves nothing by default, and
# --resume would have nothing to load), and a --ckpt.max_num that keeps every save: OpenRLHF's SFT rotates
# its Hugging Face copies together with the DeepSpeed states (docs/launch.md, "Disk").
openrlhf_args=(
  --model.model_name_or_path "$model"
  --data.dataset "$train_data" --data.input_key prompt --data.output_key response --data.input_template '{}'
  --data.max_len 2048
  --train.batch_size 64 --train.micro_batch_size 4 --train.max_epochs 3
  --adam.lr 5e-6 --lr_warmup_ratio 0.03
  --ds.zero_stage 2 --ds.param_dtype bf16 --model.gradient_checkpointing_enable
  --train.seed 42
  --ckpt.save_hf
  --logger.logging_steps 1
)

# The launcher adds the output, logging and resume flags (checkpoints go beside the manifest).
launcher_flags+=(--output-dir "$output_dir" --run-name "$run_name" --launch-command "$launch_command"
  --num-gpus "$gpus_per_node")
python3 -m med_rlvr_plugin.launcher sft "${launcher_flags[@]}" -- "${openrlhf_args[@]}" "${passthrough[@]}"
