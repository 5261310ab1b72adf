"""A PPO or SFT run from the script's flags: every check that needs no GPU, in order, the plan and its flags.

The checks themselves live in `checks`, `plan` and `openrlhf_cli`; this module says in which order they
run, what is printed, and what the command gains. `run_sft` then starts DeepSpeed on this node (a PPO run
goes through `ray_job.run_ppo`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.launcher.checks import (
    check_disk,
    check_not_test_sets,
    check_prompt_data,
    check_reward,
    check_reward_server,
    check_sft_data,
    data_paths,
    prompt_limit_flags,
    reward_env,
)
from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.manifest import build_manifest, write_manifest
from med_rlvr_plugin.launcher.openrlhf_cli import PPO_MODULE, SFT_MODULE, check_train_assertions, parse_openrlhf_args
from med_rlvr_plugin.launcher.plan import (
    README_DEV_ROWS,
    README_TRAIN_ROWS,
    check_batch_sizes,
    model_parameters,
    note_checkpoints,
    planned_flags,
    ppo_plan,
    save_interval,
    sft_plan,
    sft_steps,
)
from med_rlvr_plugin.verifier import parse_label


def run_flags(options: argparse.Namespace) -> list[str]:
    """OpenRLHF flags for where the run writes and logs, put first so the script's `-- ...` can override them.

    Checkpoints and the final model go inside the output folder, beside the manifest. wandb reads its key
    from WANDB_API_KEY, which every actor gets (see `run_ppo`); the flag only switches wandb on, so the
    key never appears in a command line, a log or the manifest.
    """
    flags = ["--ckpt.output_dir", str(options.output_dir / "model"), "--ckpt.path", str(options.output_dir / "ckpt")]
    if options.tensorboard:
        flags += ["--logger.tensorboard_dir", str(options.output_dir / "tensorboard")]
    if options.wandb_project:
        if not os.environ.get("WANDB_API_KEY"):
            raise LaunchError(
                "--wandb-project needs WANDB_API_KEY in the job's environment: ray job submit --runtime-env-json "
                '\'{"env_vars": {"WANDB_API_KEY": "..."}}\' ..., or export it before `ray start` on every node'
            )
        flags += ["--logger.wandb.key", "from-env:WANDB_API_KEY", "--logger.wandb.project", options.wandb_project]
        flags += ["--logger.wandb.run_name", options.run_name]
    if options.resume:
        flags.append("--ckpt.load_enable")
    return flags


def check_ppo_data(args: SimpleNamespace) -> tuple[dict, list[str], list[str], list[str]]:
    """The training and eval files checked and described: (the manifest's data, the training prompts and
    labels, the eval prompts)."""
    files = args.data.prompt_dataset
    _, prompts, labels = check_prompt_data(files, args, args.data.prompt_split, args.data.prompt_probs)
    data = {"train": {"files": files, "rows": len(prompts)}}
    print(f"med-rlvr: training data {files}: {len(prompts)} prompts, every label an option letter")
    if not args.eval.dataset:
        return data, prompts, labels, []
    check_not_test_sets(args.eval.dataset)
    eval_sources, eval_prompts, _ = check_prompt_data(args.eval.dataset, args, args.eval.split)
    counts = {source: eval_sources.count(source) for source in sorted(set(eval_sources))}
    data["eval"] = {"files": args.eval.dataset, "rows_by_datasource": counts}
    curves = ", ".join(f"eval_{source}_pass1 ({count} prompts)" for source, count in counts.items())
    print(f"med-rlvr: eval data {args.eval.dataset}: every label an option letter; curves {curves}")
    return data, prompts, labels, eval_prompts


def check_ppo(trainer_args: list[str], options: argparse.Namespace) -> SimpleNamespace:
    """Every check that needs no GPU, and the run plan; the command gains the plan's flags."""
    args = parse_openrlhf_args(PPO_MODULE, trainer_args)
    check_batch_sizes(args)
    check_train_assertions(PPO_MODULE, args)
    data, prompts, labels, eval_prompts = check_ppo_data(args)
    extra = prompt_limit_flags(args, prompts + eval_prompts, trainer_args, options.dry_run)
    eval_rows = len(eval_prompts)
    prompt, label = prompts[0], parse_label(labels[0])
    rewards = check_reward(args.reward.remote_url, prompt, label)
    reward_file = args.reward.remote_url[0]
    print(f"med-rlvr: reward file {reward_file} with {reward_env() or 'the defaults'}: rewards {rewards}")
    if options.reward_server:
        served = check_reward_server(prompt, label, rewards)
        print(f"med-rlvr: reward server (--reward-server) on this machine: rewards {served}")

    if options.builtin_sample:  # plan for the files the README's commands prepare, not the six questions
        train_rows, eval_rows = README_TRAIN_ROWS, README_DEV_ROWS if eval_rows else 0
        print(
            f"med-rlvr: the plan below is for the prepared MedQA files ({train_rows:,} training, "
            f"{README_DEV_ROWS} dev prompts)"
        )
    else:
        train_rows = len(prompts)
    planned, subset_rows = planned_flags(args, train_rows, eval_rows, options, trainer_args)
    extra, subset = extra + planned, None
    if subset_rows:  # a fixed subset of the dev prompts, written beside the manifest (every node sees it)
        subset = eval_subset(args.eval.dataset, subset_rows, options.output_dir / "eval_subset.jsonl")
        trainer_args = trainer_args + ["--eval.dataset", str(subset[0])]  # last: it replaces the script's
    if extra or subset:
        trainer_args = extra + trainer_args
        args = parse_openrlhf_args(PPO_MODULE, trainer_args)
    if args.data.max_samples < train_rows:
        print(
            f"med-rlvr: --data.max_samples {args.data.max_samples}: {train_rows - args.data.max_samples} prompts "
            "(the file's last) are left out so that every rollout is whole"
        )
    rows, dev_rows = min(train_rows, args.data.max_samples), min(eval_rows, args.data.max_samples)
    parameters = model_parameters(args.actor.model_name_or_path)
    plan = ppo_plan(args, rows, subset_rows or dev_rows, parameters, options.evals)
    note_checkpoints(plan, options.checkpoints, trainer_args)
    if subset:
        plan["eval"]["subset_of"] = dev_rows
        data["eval"]["subset"] = {"file": str(subset[0]), "rows": subset_rows}
    command = ["python3", "-m", PPO_MODULE, *trainer_args]
    return SimpleNamespace(
        args=args,
        command=command,
        data=data,
        plan=plan,
        rewards=rewards,
        prompt=prompt,
        label=label,
        eval_subset=subset,
    )


def eval_subset(files: str, rows: int, path: Path) -> tuple[Path, str]:
    """The first `rows` prompts of the eval files as JSON lines, and where the run keeps them."""
    lines = []
    for file in data_paths(files):
        if file.suffix != ".jsonl":
            raise LaunchError(
                f"periodic eval on a fixed subset of the dev prompts is written as JSON lines, and {file} is not "
                "a .jsonl file: give --eval-data as .jsonl, or set -- --eval.steps N yourself"
            )
        lines += [line for line in file.read_text().splitlines(keepends=True) if line.strip()]
    return path, "".join(lines[:rows])


def check_sft(trainer_args: list[str], options: argparse.Namespace) -> SimpleNamespace:
    """OpenRLHF's SFT parser, DeepSpeed's batch arithmetic, every SFT target graded a well-formed correct
    answer by the verifier, and the checkpoint plan (OpenRLHF's SFT saves nothing unless told when)."""
    args = parse_openrlhf_args(SFT_MODULE, trainer_args)
    check_train_assertions(SFT_MODULE, args)
    rows = check_sft_data(args)
    print(f"med-rlvr: SFT data {args.data.dataset}: {len(rows)} rows, every target graded correct by the verifier")
    rows_planned = README_TRAIN_ROWS if options.builtin_sample else len(rows)
    steps = sft_steps(args, rows_planned, options.num_gpus)
    # OpenRLHF's SFT rotation counts the Hugging Face copies with the DeepSpeed states in one folder, so
    # keeping every copy means keeping every state (`plan.kept_deepspeed_states`).
    given, save_steps = trainer_args, args.ckpt.save_steps
    if "--ckpt.save_steps" not in given:
        save_steps = save_interval(steps, options.checkpoints)
        trainer_args = ["--ckpt.save_steps", str(save_steps)] + trainer_args
    if "--ckpt.max_num" not in given and save_steps > 0:
        kept = 2 * (steps // save_steps) if args.ckpt.save_hf else 2
        trainer_args = ["--ckpt.max_num", str(max(2, kept))] + trainer_args
    args = parse_openrlhf_args(SFT_MODULE, trainer_args)
    plan = sft_plan(args, rows_planned, steps, model_parameters(args.model.model_name_or_path))
    note_checkpoints(plan, options.checkpoints, given)
    return SimpleNamespace(
        args=args,
        command=["deepspeed", "--num_gpus", str(options.num_gpus), "--module", SFT_MODULE, *trainer_args],
        data={"train": {"files": args.data.dataset, "rows": len(rows)}},
        plan=plan,
    )


def run_sft(options: argparse.Namespace, checked: SimpleNamespace, manifest_path: Path) -> None:
    """This node's GPUs and disk, the manifest, then DeepSpeed in place of this process."""
    if local_gpus() < options.num_gpus:
        raise LaunchError(
            f"--gpus-per-node {options.num_gpus} but this node has {local_gpus()} GPUs visible "
            "(CUDA_VISIBLE_DEVICES, nvidia-smi); lower --gpus-per-node or run on a GPU node"
        )
    check_disk(options.output_dir, checked.plan, dry_run=False)
    write_manifest(manifest_path, build_manifest(options, checked.command, checked.args, checked.data, checked.plan))
    print(f"med-rlvr: manifest {manifest_path}", flush=True)
    os.execvp(checked.command[0], checked.command)


def local_gpus() -> int:
    """GPUs visible on this node (the SFT run starts DeepSpeed here, not through Ray)."""
    import torch

    return torch.cuda.device_count()
