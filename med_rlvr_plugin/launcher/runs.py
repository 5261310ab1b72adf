"""A PPO or SFT run checked end to end: every check that needs no GPU, the plan, and the flags it adds."""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace

from med_rlvr_plugin.launcher.checks import (
    check_not_test_sets,
    check_prompt_data,
    check_reward,
    load_prompt_rows,
    reward_env,
    start_reward_server,
)
from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.openrlhf_cli import PPO_MODULE, SFT_MODULE, check_train_assertions, parse_openrlhf_args
from med_rlvr_plugin.launcher.plan import (
    README_DEV_ROWS,
    README_TRAIN_ROWS,
    check_batch_sizes,
    checkpoint_disk,
    model_parameters,
    planned_flags,
    ppo_plan,
)
from med_rlvr_plugin.verifier import grade_response, parse_label


def check_ppo(trainer_args: list[str], options: argparse.Namespace) -> SimpleNamespace:
    """Every check that needs no GPU, and the run plan; the command gains the plan's flags."""
    args = parse_openrlhf_args(PPO_MODULE, trainer_args)
    check_batch_sizes(args)
    check_train_assertions(PPO_MODULE, args)
    _, prompts, labels = check_prompt_data(
        args.data.prompt_dataset, args, args.data.prompt_split, args.data.prompt_probs
    )
    data = {"train": {"files": args.data.prompt_dataset, "rows": len(prompts)}}
    print(f"med-rlvr: training data {args.data.prompt_dataset}: {len(prompts)} prompts, every label an option letter")
    eval_rows = 0
    if args.eval.dataset:
        check_not_test_sets(args.eval.dataset)
        eval_sources = check_prompt_data(args.eval.dataset, args, args.eval.split)[0]
        counts = {source: eval_sources.count(source) for source in sorted(set(eval_sources))}
        data["eval"] = {"files": args.eval.dataset, "rows_by_datasource": counts}
        eval_rows = len(eval_sources)
        curves = ", ".join(f"eval_{source}_pass1 ({count} prompts)" for source, count in counts.items())
        print(f"med-rlvr: eval data {args.eval.dataset}: every label an option letter; curves {curves}")
    rewards = check_reward(args.reward.remote_url, prompts[0], parse_label(labels[0]))
    print(
        f"med-rlvr: reward file {args.reward.remote_url[0]} with {reward_env() or 'the defaults'}: rewards {rewards}"
    )
    if options.reward_server:  # the service run_ppo starts, here on loopback: the file's rewards, over HTTP
        server, url = start_reward_server("127.0.0.1")
        try:
            served = check_reward([url], prompts[0], parse_label(labels[0]))
        finally:
            server.terminate()
            server.wait()
        if served != rewards:
            raise LaunchError(f"the reward server grades the samples {served}, the reward file {rewards}")
        print(f"med-rlvr: reward server (--reward-server) on this machine: rewards {served}")

    if options.builtin_sample:  # plan for the files the README's commands prepare, not the six questions
        train_rows, eval_rows = README_TRAIN_ROWS, README_DEV_ROWS if eval_rows else 0
        print(
            f"med-rlvr: the plan below is for the prepared MedQA files ({train_rows:,} training, {README_DEV_ROWS} dev prompts)"
        )
    else:
        train_rows = len(prompts)
    if extra := planned_flags(args, train_rows, eval_rows, options, trainer_args):
        trainer_args = extra + trainer_args
        args = parse_openrlhf_args(PPO_MODULE, trainer_args)
    if args.data.max_samples < train_rows:
        print(
            f"med-rlvr: --data.max_samples {args.data.max_samples}: {train_rows - args.data.max_samples} prompts "
            "(the file's last) are left out so that every rollout is whole"
        )
    plan = ppo_plan(
        args,
        min(train_rows, args.data.max_samples),
        min(eval_rows, args.data.max_samples),
        model_parameters(args.actor.model_name_or_path),
    )
    return SimpleNamespace(
        args=args,
        trainer_args=trainer_args,
        data=data,
        plan=plan,
        rewards=rewards,
        prompt=prompts[0],
        label=parse_label(labels[0]),
    )


def check_sft(trainer_args: list[str], options: argparse.Namespace) -> SimpleNamespace:
    """OpenRLHF's SFT parser, DeepSpeed's batch arithmetic, every SFT target graded a well-formed correct
    answer by the verifier, and the checkpoint plan (OpenRLHF's SFT saves nothing unless told when)."""
    from openrlhf.datasets.sft_dataset import preprocess_data

    args = parse_openrlhf_args(SFT_MODULE, trainer_args)
    check_train_assertions(SFT_MODULE, args)
    rows = load_prompt_rows(args.data.dataset, args, args.data.dataset_split, args.data.dataset_probs)
    for index, row in enumerate(rows):
        try:
            prompt, response = preprocess_data(
                row, args.data.input_template, args.data.input_key, args.data.output_key
            )
            grade = grade_response(prompt + response, prompt, row["label"])
        except (KeyError, ValueError) as error:
            raise LaunchError(f"{args.data.dataset}, row {index}: {type(error).__name__}: {error}") from None
        if not grade.correct:
            raise LaunchError(
                f"{args.data.dataset}, row {index}: the SFT target is not a well-formed correct answer "
                f"({grade.error or 'wrong letter'}); prepare the file with `data_prep/prepare.py --sft`"
            )
    print(f"med-rlvr: SFT data {args.data.dataset}: {len(rows)} rows, every target graded correct by the verifier")
    # DeepSpeed: the global batch is micro batch x GPUs x accumulation steps, a whole number >= 1; each
    # rank's share of the data (the sampler drops the remainder) must fill one accumulation window.
    gpus, micro, batch = options.num_gpus, args.train.micro_batch_size, args.train.batch_size
    rows_planned = README_TRAIN_ROWS if options.builtin_sample else len(rows)
    check_batch_sizes(args, {"model": gpus})
    steps = rows_planned // gpus // micro // (batch // micro // gpus) * args.train.max_epochs
    if not steps:
        raise LaunchError(
            f"{rows_planned} rows on {gpus} GPUs do not fill one batch of {batch}: lower --train.batch_size"
        )
    if "--ckpt.save_steps" not in trainer_args:
        trainer_args = ["--ckpt.save_steps", str(-(-steps // options.checkpoints))] + trainer_args
        args = parse_openrlhf_args(SFT_MODULE, trainer_args)
    saves = steps // args.ckpt.save_steps if args.ckpt.save_steps > 0 else 0
    parameters = model_parameters(args.model.model_name_or_path)
    plan = {
        "train_rows": rows_planned,
        "steps": steps,
        "checkpoints": {"every": args.ckpt.save_steps, "count": saves},
        "parameters": parameters,
        "disk_bytes": checkpoint_disk(args, parameters, 1, saves),
    }
    return SimpleNamespace(
        args=args,
        trainer_args=trainer_args,
        data={"train": {"files": args.data.dataset, "rows": len(rows)}},
        plan=plan,
    )


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


def local_gpus() -> int:
    """GPUs visible on this node (the SFT run starts DeepSpeed here, not through Ray)."""
    import torch

    return torch.cuda.device_count()
