"""The run plan: whole rollouts, an even split over the ranks, eval and checkpoint intervals, checkpoint disk.

Every number follows OpenRLHF 0.11.2's own rules (docs/launch.md, "Run plan"; tests/test_launch_plan.py
runs OpenRLHF's code to compare), so that a layout or batch size that would hang or fail a GPU run is
refused here, without a GPU.
"""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

from med_rlvr_plugin.defaults import CHECKPOINTS, DEV_SIZE, MEDQA_TRAIN_ROWS
from med_rlvr_plugin.launcher.errors import LaunchError

# Disk per parameter of a bf16 model trained with Adam. DeepSpeed's optimizer files hold the fp32 master
# weights and Adam's two fp32 moments (4 + 4 + 4 = 12 bytes, partitioned over the ranks); below ZeRO-3
# its model-states file adds the bf16 weights (2), while ZeRO-3's holds none (each rank's weights are a
# partition of the fp32 copy). A Hugging Face copy is the bf16 weights. tests/test_launch_ckpt.py measures
# a real DeepSpeed checkpoint.
OPTIMIZER_BYTES_PER_PARAMETER, HF_BYTES_PER_PARAMETER = 12, 2


def deepspeed_bytes_per_parameter(zero_stage: int) -> int:
    """Bytes a parameter in one DeepSpeed checkpoint: 12 + 2 below ZeRO-3, 12 under it."""
    return OPTIMIZER_BYTES_PER_PARAMETER + (HF_BYTES_PER_PARAMETER if zero_stage < 3 else 0)


# The default model's architecture (its config.json), so that a dry run on a machine without the hub can
# size its checkpoints; any other model is sized from its own config (a local folder or the hub cache).
KNOWN_CONFIGS = {
    "Qwen/Qwen2.5-3B": {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    }
}


# What docs/data.md's commands produce: MedQA-USMLE train (10,178 rows) less the 500-row dev slice carved
# out of it. A dry run on the built-in sample plans the run for these sizes.
README_TRAIN_ROWS, README_DEV_ROWS = MEDQA_TRAIN_ROWS - DEV_SIZE, DEV_SIZE


def trained_models(args: SimpleNamespace, sft_gpus: int | None = None) -> dict[str, tuple[int, int]]:
    """Each model the run trains, with its GPUs and data-parallel ranks: PPO's actor and, when there is one,
    critic; with `sft_gpus` (deepspeed --num_gpus), SFT's model.

    Ring attention and DeepSpeed tensor parallelism share one rank's work among their GPUs, so OpenRLHF's
    device mesh needs a whole number of ranks: any other count fails only once the GPUs are taken.
    """
    if sft_gpus is not None:
        gpus_of = {"model": sft_gpus}
    else:
        gpus_of = {"actor": args.actor.num_nodes * args.actor.num_gpus_per_node}
        if args.critic.model_name_or_path:
            gpus_of["critic"] = args.critic.num_nodes * args.critic.num_gpus_per_node
    per_rank = args.ds.ring_attn_size * args.ds.tensor_parallel_size
    for model, gpus in gpus_of.items():
        if gpus % per_rank:
            raise LaunchError(
                f"{gpus} GPUs ({model}) are not a whole number of ranks of --ds.ring_attn_size x "
                f"--ds.tensor_parallel_size = {per_rank} GPUs: change the GPU count or those sizes (docs/launch.md, "
                "'Scaling')"
            )
    return {model: (gpus, gpus // per_rank) for model, gpus in gpus_of.items()}


def check_batch_sizes(args: SimpleNamespace, sft_gpus: int | None = None) -> None:
    """DeepSpeed's gradient accumulation must be a whole number >= 1; otherwise only a GPU run finds out.

    The models are those of `trained_models(args, sft_gpus)`.
    """
    for group, (gpus, ranks) in trained_models(args, sft_gpus).items():
        if args.train.batch_size % (args.train.micro_batch_size * ranks):
            raise LaunchError(
                f"--train.batch_size {args.train.batch_size} is not a multiple of --train.micro_batch_size "
                f"{args.train.micro_batch_size} x {gpus} GPUs ({group}); raise the batch size or lower the micro "
                "batch size (docs/launch.md, 'Scaling')"
            )


def checkpoint_disk(
    args: SimpleNamespace, parameters: int | None, models: int, saves: int, best_saves: int = 0
) -> dict | None:
    """Peak disk of a run's checkpoints under OpenRLHF's save schedule, or None without a parameter count.

    OpenRLHF rotates the DeepSpeed states of the `models` it saves (--ckpt.max_num) but never deletes a
    Hugging Face copy; each best-checkpoint save adds a DeepSpeed set (the old best one is removed) and a
    copy of its own. The final model is one more copy.
    """
    if not parameters:
        return None
    per_parameter = deepspeed_bytes_per_parameter(args.ds.zero_stage)
    deepspeed_set = 0 if args.ckpt.disable_ds else models * per_parameter * parameters
    hf_copy = HF_BYTES_PER_PARAMETER * parameters if args.ckpt.save_hf else 0
    return {
        "deepspeed_set": deepspeed_set,
        "hf_copy": hf_copy,
        "total": deepspeed_set * (min(args.ckpt.max_num, saves) + bool(best_saves))
        + hf_copy * (saves + best_saves)
        + HF_BYTES_PER_PARAMETER * parameters,
    }


def rank_shares(samples: int, micro_batch: int, ranks: int) -> list[int]:
    """The samples each data-parallel rank trains on, from a rollout of `samples`, as OpenRLHF splits it.

    The experience maker cuts the rollout into micro-batches of `--rollout.micro_batch_size`, and
    `RayActorGroup.async_run_method_batch` hands each rank a contiguous chunk of ceil(micro-batches / ranks)
    of them: a rollout that does not divide evenly leaves some ranks less work, or none. Under ZeRO-3 such
    ranks wait on each other's collectives until the NCCL timeout. (tests/test_launch.py runs that code.)
    """
    batches = [min(micro_batch, samples - start) for start in range(0, samples, micro_batch)]
    if len(batches) < ranks:
        raise LaunchError(
            f"a rollout of {samples} samples makes {len(batches)} micro-batches of {micro_batch} for {ranks} "
            "ranks, and OpenRLHF needs one per rank at least ('Insufficient batch size'): raise "
            "--rollout.batch_size or lower --rollout.micro_batch_size (docs/launch.md, 'Scaling')"
        )
    chunk = -(-len(batches) // ranks)
    return [sum(batches[rank * chunk : (rank + 1) * chunk]) for rank in range(ranks)]


def model_parameters(model: str) -> int | None:
    """The parameter count of a causal LM, from its config alone (weights are never read), or None.

    The config comes from a local folder or the hub cache (never the network, so a dry run without the
    hub does not wait on retries), or from KNOWN_CONFIGS; the count is that of the model transformers
    builds from it on the meta device, tied weights counted once.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        if model not in KNOWN_CONFIGS:
            return None
        known = dict(KNOWN_CONFIGS[model])
        config = AutoConfig.for_model(known.pop("model_type"), **known)
    with torch.device("meta"):
        network = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in network.parameters())


def gigabytes(count: float) -> str:
    return f"{count / 1e9:,.1f} GB"


def even_rank_shares(args: SimpleNamespace, samples: int) -> dict[str, list[int]]:
    """The samples each rank of each trained model gets from a rollout of `samples`, checked: every rank
    the same number, a whole number of optimizer steps, or ZeRO-3 hangs. Empty with
    --train.dynamic_batch_enable, where OpenRLHF balances the ranks itself.
    """
    if args.train.dynamic_batch_enable:
        return {}
    shares = {}
    for group, (_, ranks) in trained_models(args).items():
        shares[group] = share = rank_shares(samples, args.rollout.micro_batch_size, ranks)
        window = args.train.batch_size // ranks  # samples a rank trains on per optimizer step
        if len(set(share)) > 1 or share[0] % window:
            raise LaunchError(
                f"a rollout of {samples} samples in micro-batches of {args.rollout.micro_batch_size} gives the "
                f"{ranks} {group} ranks {share} samples: every rank needs the same number, a multiple of "
                f"--train.batch_size {args.train.batch_size} / {ranks} ranks, or ZeRO-3 hangs. Use a GPU count "
                "that divides the rollout, or change --rollout.batch_size / --rollout.micro_batch_size "
                "(docs/launch.md, 'Scaling')"
            )
    return shares


def ppo_plan(
    args: SimpleNamespace, train_rows: int, eval_rows: int, parameters: int | None, evals_wanted: int = 0
) -> dict:
    """The run's arithmetic from OpenRLHF's rules, checked: every rollout whole and split evenly over the
    ranks, steps, responses, eval rounds, checkpoints and their disk. Raises LaunchError with the fix.

    `train_rows` and `eval_rows` are the prompts OpenRLHF will load (after --data.max_samples); with fewer
    evals than `evals_wanted`, the plan says why.
    """
    prompts, per_prompt = args.rollout.batch_size, args.rollout.n_samples_per_prompt
    samples = prompts * per_prompt
    if train_rows < prompts or train_rows % prompts:
        raise LaunchError(
            f"{train_rows} training prompts are not whole rollouts of {prompts}: OpenRLHF trains on the short "
            f"last rollout of every pass ({train_rows % prompts} prompts), which splits unevenly over the ranks "
            f"(a hang under ZeRO-3, or 'Insufficient batch size'). Pass -- --data.max_samples "
            f"{max(prompts, train_rows // prompts * prompts)} or more data"
        )
    shares = even_rank_shares(args, samples)
    steps_per_pass = train_rows // prompts
    steps = steps_per_pass * args.train.num_episodes
    eval_steps = args.eval.steps if args.eval.dataset and args.eval.steps > 0 else math.inf
    evals = int(steps // eval_steps) if math.isfinite(eval_steps) else 0
    eval_rounds = -(-eval_rows // prompts)  # OpenRLHF generates eval prompts in rounds of the rollout batch
    save_steps = args.ckpt.save_steps if args.ckpt.save_steps > 0 else math.inf
    saves = int(steps // save_steps) if math.isfinite(save_steps) else 0
    kept = kept_deepspeed_states(args, saves, beside_hf=False)  # PPO's states go to ckpt.path/_actor, _critic
    best = args.eval.dataset and args.ckpt.best_metric_key != "none"

    # The actor's and the critic's DeepSpeed state (the reference is never saved); at worst every eval
    # is a new best.
    disk = checkpoint_disk(args, parameters, len(trained_models(args)), saves, evals if best else 0)
    return {
        "train_prompts": train_rows,
        "rollout": {"prompts": prompts, "samples_per_prompt": per_prompt, "samples": samples},
        "rank_samples": shares,
        "steps_per_pass": steps_per_pass,
        "passes": args.train.num_episodes,
        "steps": steps,
        "responses": steps * samples,
        "optimizer_steps_per_rollout": samples // args.train.batch_size,
        "eval": {
            "prompts": eval_rows,
            "every": eval_steps,
            "evals": evals,
            "rounds_each": eval_rounds,
            "responses": evals * eval_rows * args.eval.n_samples_per_prompt,
            "share_of_generation": evals * eval_rounds / steps,
            "wanted": evals_wanted,
        },
        "best_checkpoint": args.ckpt.best_metric_key if best else "none",
        "checkpoints": {"every": save_steps, "count": saves, "deepspeed_kept": kept},
        "parameters": parameters,
        "disk_bytes": disk,
    }


def describe_ppo_plan(args: SimpleNamespace, plan: dict) -> str:
    """The PPO plan as the dry run prints it, one line a topic."""
    rollout, evaluation, checkpoints, disk = plan["rollout"], plan["eval"], plan["checkpoints"], plan["disk_bytes"]
    lines = [
        f"{plan['train_prompts']:,} training prompts in rollouts of {rollout['prompts']} x"
        f" {rollout['samples_per_prompt']} = {rollout['samples']} responses: {plan['steps_per_pass']} steps a pass"
        f" x {plan['passes']} pass(es) ="
        f" {plan['steps']} steps, {plan['responses']:,} responses, {plan['optimizer_steps_per_rollout']} optimizer"
        f" steps a rollout",
        "each step's samples per rank: "
        + (
            ", ".join(f"{group} {share[0]} x {len(share)} ranks" for group, share in plan["rank_samples"].items())
            or "balanced by OpenRLHF (--train.dynamic_batch_enable)"
        ),
    ]
    if evaluation["evals"]:
        lines.append(
            f"periodic eval: {evaluation['prompts']:,} prompts every {evaluation['every']} steps ="
            f" {evaluation['evals']} eval(s) x {evaluation['rounds_each']} generation rounds of {rollout['prompts']}"
            f" prompts ({evaluation['share_of_generation']:.0%} on top of the {plan['steps']} training rounds); best"
            f" checkpoint: {'by ' + plan['best_checkpoint'] if plan['best_checkpoint'] != 'none' else 'off'}"
        )
        if subset_of := evaluation.get("subset_of"):
            lines[-1] += f"; a fixed subset: the first {evaluation['prompts']} of the {subset_of:,} dev prompts"
        if evaluation["evals"] < evaluation["wanted"]:
            lines[-1] += f"; fewer than --evals {evaluation['wanted']}: {fewer_evals(plan)}"
    else:
        lines.append(f"periodic eval: none ({fewer_evals(plan)})")
    size = "size unknown (give --model a local folder to size it)"
    if disk:
        size = (
            f"DeepSpeed state {gigabytes(disk['deepspeed_set'])} a checkpoint, the last"
            f" {checkpoints['deepspeed_kept']} kept; Hugging Face weights {gigabytes(disk['hf_copy'])} each, never"
            f" deleted; estimated peak disk {gigabytes(disk['total'])}"
        )
    count = f"{checkpoints['count']}{checkpoints.get('note', '')}"
    lines.append(f"checkpoints: every {checkpoints['every']} steps = {count}; {size}")
    gpus = trained_models(args)["actor"][0]
    return "\n".join(f"med-rlvr: plan ({gpus} GPUs): {line}" for line in lines)


def fewer_evals(plan: dict) -> str:
    """Why a PPO plan has fewer periodic evals than `--evals` asked for."""
    evaluation, steps = plan["eval"], plan["steps"]
    if not evaluation["prompts"] or not math.isfinite(evaluation["every"]):
        return "no eval data" if not evaluation["prompts"] else "no --eval.steps"
    if steps < evaluation["wanted"]:
        return f"the run has {steps} steps"
    return f"--eval.steps {evaluation['every']} of the command, in {steps} steps"


def sft_steps(args: SimpleNamespace, rows: int, gpus: int) -> int:
    """The optimizer steps of an SFT run on `rows` and `gpus`; LaunchError when they make none.

    DeepSpeed: the global batch is micro batch x GPUs x accumulation steps, a whole number >= 1; each
    rank's share of the data (the sampler drops the remainder) must fill one accumulation window.
    """
    micro, batch = args.train.micro_batch_size, args.train.batch_size
    check_batch_sizes(args, sft_gpus=gpus)
    # The trainer carries an unfinished accumulation window over into the next epoch.
    steps = rows // gpus // micro * args.train.max_epochs // (batch // micro // gpus)
    if not steps:
        raise LaunchError(f"{rows} rows on {gpus} GPUs do not fill one batch of {batch}: lower --train.batch_size")
    return steps


def save_interval(steps: int, checkpoints: int | None) -> int:
    """--ckpt.save_steps for exactly `checkpoints` saves in `steps` steps, or LaunchError with the counts
    that can be had; for None (not asked), CHECKPOINTS saves or the most below it the run can have.

    PPO's and SFT's trainers both save at every step that is a multiple of it, so the interval must lie
    in (steps / (checkpoints + 1), steps / checkpoints].
    """
    asked = checkpoints or CHECKPOINTS
    interval = steps // asked
    if interval and steps // interval == asked:
        return interval
    if checkpoints is None:
        return interval + 1
    counts = f"{steps // (interval + 1)} or {steps // interval}" if interval else f"{steps} or fewer"
    raise LaunchError(
        f"--checkpoints {checkpoints}: no interval gives exactly {checkpoints} saves in {steps} steps (OpenRLHF "
        f"saves at every multiple of --ckpt.save_steps); pass --checkpoints {counts}"
    )


def kept_deepspeed_states(args: SimpleNamespace, saves: int, beside_hf: bool) -> int:
    """The DeepSpeed states OpenRLHF's rotation keeps; LaunchError when it would delete what must stay.

    Before each save, `save_ckpt` deletes the oldest folders of its checkpoint folder until --ckpt.max_num
    - 1 remain: with 1, the last whole state is gone while the next is written, and a crash then leaves
    `latest` naming a deleted folder. SFT writes its Hugging Face copies (`beside_hf`) into that same
    folder, so the rotation counts them too and deletes the oldest copies unless it keeps everything.
    """
    if args.ckpt.disable_ds or saves < 2:
        return 0 if args.ckpt.disable_ds else saves
    needed = 2 * saves - 1 if beside_hf else 2
    if args.ckpt.max_num < needed:
        what = "the oldest Hugging Face copies" if beside_hf else "the last whole state before writing the next"
        raise LaunchError(
            f"--ckpt.max_num {args.ckpt.max_num} makes OpenRLHF delete {what} ({saves} saves"
            f"{', each a DeepSpeed folder and a _hf folder in one rotation' if beside_hf else ''}): use "
            f"--ckpt.max_num {needed} or more, or leave it to the launcher (docs/launch.md, 'Disk')"
        )
    return min(args.ckpt.max_num, saves)


def sft_plan(args: SimpleNamespace, rows: int, steps: int, parameters: int | None) -> dict:
    """The SFT run's checkpoints (OpenRLHF's SFT saves one every --ckpt.save_steps) and their disk."""
    saves = steps // args.ckpt.save_steps if args.ckpt.save_steps > 0 else 0
    kept = kept_deepspeed_states(args, saves, beside_hf=args.ckpt.save_hf)
    return {
        "train_rows": rows,
        "steps": steps,
        "checkpoints": {
            "every": args.ckpt.save_steps,
            "count": saves,
            "deepspeed_kept": kept,
            "hf": args.ckpt.save_hf,
        },
        "parameters": parameters,
        "disk_bytes": checkpoint_disk(args, parameters, 1, saves),
    }


def note_checkpoints(plan: dict, checkpoints: int | None, given: list[str]) -> None:
    """Say in the plan why a run whose saves the launcher planned without --checkpoints has fewer than
    CHECKPOINTS (`save_interval`)."""
    count = plan["checkpoints"]["count"]
    if checkpoints is None and "--ckpt.save_steps" not in given and count < CHECKPOINTS:
        plan["checkpoints"]["note"] = (
            f" (not {CHECKPOINTS}: no interval gives exactly {CHECKPOINTS} saves in {plan['steps']} steps)"
        )


def describe_sft_plan(plan: dict) -> str:
    """The SFT plan as the dry run prints it."""
    checkpoints, disk = plan["checkpoints"], plan["disk_bytes"]
    kept = f"the last {checkpoints['deepspeed_kept']} DeepSpeed states kept"
    if checkpoints["hf"]:  # one rotation for both in OpenRLHF's SFT: keeping every copy keeps every state
        kept += " and every Hugging Face copy"
    return (
        f"med-rlvr: plan: {plan['steps']} optimizer steps, a checkpoint every {checkpoints['every']}"
        f" = {checkpoints['count']}{checkpoints.get('note', '')}, {kept}; estimated peak disk"
        f" {gigabytes(disk['total']) if disk else 'unknown'}"
    )


def eval_schedule(steps: int, eval_rows: int, prompts: int, share: float, wanted: int) -> tuple[int, int]:
    """(--eval.steps, dev prompts an eval) for at least `wanted` evals over `steps`.

    Eval generates in rounds of the rollout batch (`prompts`). The whole dev file, as often as `share` of
    training's generation rounds pays for, when that is `wanted` times or more; else `wanted` evals of a
    fixed subset, the file's first prompts in the whole rounds that share pays for (one at least). A run
    of fewer steps than `wanted` evaluates at every step.
    """
    every = math.ceil(-(-eval_rows // prompts) / share)
    if steps // every >= wanted:
        return every, eval_rows
    every = max(1, steps // wanted)
    return every, min(eval_rows, max(1, math.floor(share * every)) * prompts)


def planned_flags(
    args: SimpleNamespace, train_rows: int, eval_rows: int, options: argparse.Namespace, given: list[str]
) -> tuple[list[str], int | None]:
    """OpenRLHF flags the plan sets unless the command gives them itself, and the size of the fixed dev
    subset each eval reads, or None for the whole dev file.

    --data.max_samples: the training prompts rounded down to whole rollouts (OpenRLHF would train on a
    short last rollout, whose uneven split over the ranks hangs ZeRO-3). --eval.steps: `eval_schedule`,
    for `--evals` evals at `--eval-share` of training's generation. --ckpt.save_steps: exactly
    `--checkpoints` saves over the run.
    """
    prompts = args.rollout.batch_size
    rows, flags = min(train_rows, args.data.max_samples), []
    if "--data.max_samples" not in given and rows > prompts and rows % prompts:
        rows = rows // prompts * prompts
        flags += ["--data.max_samples", str(rows)]
    steps = rows // prompts * args.train.num_episodes
    eval_rows, subset = min(eval_rows, rows), None
    if args.eval.dataset and eval_rows and steps and "--eval.steps" not in given:
        every, prompts_each = eval_schedule(steps, eval_rows, prompts, options.eval_share, options.evals)
        flags += ["--eval.steps", str(every)]
        subset = prompts_each if prompts_each < eval_rows else None
    if steps and "--ckpt.save_steps" not in given:
        flags += ["--ckpt.save_steps", str(save_interval(steps, options.checkpoints))]
    return flags, subset
