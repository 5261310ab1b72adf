"""What the launch scripts run in Python: check a training command, write the run's manifest, start it.

    python3 -m med_rlvr_plugin.launcher ppo --output-dir DIR --run-name NAME [--dry-run] [--resume] -- ARGS
    python3 -m med_rlvr_plugin.launcher sft --output-dir DIR --run-name NAME --num-gpus N [...] -- ARGS
    python3 -m med_rlvr_plugin.launcher sample FILE [--sft]

ARGS are OpenRLHF 0.11.2 flags, built by launch/*.sh. The checks run without a GPU: OpenRLHF's own parser,
post-parse checks and the assertions of its `train()`, recovered from the installed package's source; the
data, loaded by OpenRLHF's own dataset code; the run plan (whole rollouts, an even split over the ranks,
eval cost, checkpoints and their disk size); and, for PPO, the reward file, loaded by OpenRLHF's own loader
under the MED_RLVR_* variables of this process. A PPO run then checks the cluster and passes those variables
to every Ray actor (see `run_ppo`).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import runpy
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.data import SOURCES, format_row
from med_rlvr_plugin.defaults import CHECKPOINTS, DEV_SIZE, EVAL_SHARE, MEDQA_TRAIN_ROWS
from med_rlvr_plugin.openrlhf_reward import rollout_sampling
from med_rlvr_plugin.verifier import ROLLOUT_ENV_VARS, config_from_env, grade_response, parse_label, parse_options

PPO_MODULE = "openrlhf.cli.train_ppo_ray"
SFT_MODULE = "openrlhf.cli.train_sft"
PACKAGES = (
    "med-rlvr",
    "openrlhf",
    "torch",
    "transformers",
    "datasets",
    "ray",
    "deepspeed",
    "vllm",
    "flash-attn",
    "peft",
)
# Forwarded to every Ray actor besides MED_RLVR_*: the wandb logger in OpenRLHF's trainer actor reads it.
FORWARDED_SECRETS = ("WANDB_API_KEY",)
# Disk per parameter: a DeepSpeed checkpoint of a bf16 model trained with Adam holds fp32 master weights
# and two fp32 moments (12 bytes) beside the bf16 weights (2); a Hugging Face copy is the bf16 weights.
DEEPSPEED_BYTES_PER_PARAMETER, HF_BYTES_PER_PARAMETER = 14, 2
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

# The built-in sample: original USMLE-style questions written for this project (from no dataset), in
# MedQA's published row format so that the data module renders them exactly as it renders MedQA.
SAMPLE_QUESTIONS = [
    {
        "question": "A 24-year-old woman has fatigue, heat intolerance, weight loss despite a good appetite and a "
        "fine tremor. Her thyroid is diffusely enlarged and non-tender, and both eyes protrude. Antibodies "
        "against which of the following are most likely responsible?",
        "options": {
            "A": "Thyroid peroxidase",
            "B": "The TSH receptor",
            "C": "Thyroglobulin",
            "D": "The acetylcholine receptor",
        },
        "answer_idx": "B",
    },
    {
        "question": "A 58-year-old man who smokes has had crushing chest pain for 40 minutes. The ECG shows ST "
        "elevation in leads II, III and aVF. Which artery is most likely occluded?",
        "options": {"A": "Left anterior descending", "B": "Left circumflex", "C": "Right coronary", "D": "Left main"},
        "answer_idx": "C",
    },
    {
        "question": "A 7-year-old boy has puffy eyelids and cola-colored urine two weeks after a sore throat. His "
        "blood pressure is raised and his serum C3 is low. What is the most likely diagnosis?",
        "options": {
            "A": "Poststreptococcal glomerulonephritis",
            "B": "Minimal change disease",
            "C": "IgA nephropathy",
            "D": "Membranous nephropathy",
            "E": "Alport syndrome",
        },
        "answer_idx": "A",
    },
    {
        "question": "A 45-year-old woman with rheumatoid arthritis treated with weekly methotrexate develops a "
        "macrocytic anemia. Which supplement would most likely have prevented it?",
        "options": {"A": "Pyridoxine", "B": "Iron", "C": "Ascorbic acid", "D": "Folic acid"},
        "answer_idx": "D",
    },
    {
        "question": "A 67-year-old man has a resting tremor of the right hand, slow movements and cogwheel "
        "rigidity. Loss of neurons in which structure best explains these findings?",
        "options": {
            "A": "Caudate nucleus",
            "B": "Substantia nigra pars compacta",
            "C": "Cerebellar vermis",
            "D": "Nucleus basalis of Meynert",
        },
        "answer_idx": "B",
    },
    {
        "question": "A 26-year-old man is found with pinpoint pupils, 6 breaths per minute and a decreased level of "
        "consciousness. Which drug should be given first?",
        "options": {"A": "Flumazenil", "B": "Atropine", "C": "Naloxone", "D": "Physostigmine"},
        "answer_idx": "C",
    },
]
SAMPLE_SOURCE = dataclasses.replace(SOURCES["medqa"], datasource="builtin_sample", answer_text=None, metadata=())


class LaunchError(Exception):
    """A problem with the command, the data, the reward file or the output folder; the message says what to do."""


def sample_rows(sft: bool = False) -> list[dict]:
    """The built-in sample as prompt-file rows, rendered by the data module like every prepared file."""
    return [format_row(question, SAMPLE_SOURCE, sft=sft) for question in SAMPLE_QUESTIONS]


def _cli_source(module: str) -> tuple[str, ast.Module]:
    """The path and syntax tree of an installed OpenRLHF CLI module, read without importing it."""
    try:
        path = importlib.util.find_spec(module).origin
    except ModuleNotFoundError:
        raise LaunchError(
            f"{module} is not installed in {sys.executable}: run `bash setup.sh` (or `bash setup.sh gpu`) and "
            "`. .venv/bin/activate` first"
        ) from None
    return path, ast.parse(Path(path).read_text(encoding="utf-8"), path)


def parse_openrlhf_args(module: str, argv: list[str]) -> SimpleNamespace:
    """The arguments OpenRLHF's CLI `module` would train with, after its own parser and post-parse checks.

    The parser is built inside the CLI's `if __name__ == "__main__":` block, which ends by calling
    `train(args)`. That block runs here from the installed source with `train` swapped for a function that
    keeps `args`, so no flag list is kept by hand and nothing imports vLLM, flash-attn or CUDA.
    """
    path, tree = _cli_source(module)
    main_blocks = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    stdlib = sys.stdlib_module_names
    stdlib_imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import)
        and all(alias.name.split(".")[0] in stdlib for alias in node.names)
        or isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] in stdlib
    ]
    if len(main_blocks) != 1:
        raise LaunchError(f"{path}: expected one `if __name__ == '__main__':` block; is this OpenRLHF 0.11.2?")
    code = compile(ast.Module(body=stdlib_imports + main_blocks[0].body, type_ignores=[]), path, "exec")

    captured = []
    namespace = {"__name__": "__main__", "train": captured.append}
    saved_argv, sys.argv = sys.argv, [path, *argv]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(code, namespace)
    except SystemExit as stop:  # argparse: --help, or a rejected flag
        if stop.code in (0, None):
            print(output.getvalue(), end="")
            raise
        raise LaunchError(f"OpenRLHF's parser rejects the command:\n{output.getvalue().strip()}") from None
    except AssertionError as error:
        raise LaunchError(f"OpenRLHF's post-parse checks reject the command: {error}") from None
    finally:
        sys.argv = saved_argv
    # OpenRLHF only prints warnings when it changes or doubts an argument; the scripts' commands must not.
    if output.getvalue().strip():
        raise LaunchError(f"OpenRLHF's post-parse checks warn about the command:\n{output.getvalue().strip()}")
    return captured[0]


def check_train_assertions(module: str, args: SimpleNamespace) -> None:
    """Evaluate every `assert` of the CLI's `train()`, under the `if` tests that guard it, against `args`.

    `train()` checks the layout (vLLM engines x tensor parallel size = actor GPUs when colocated, the same
    nodes and GPUs for colocated models) only after Ray has started and placed GPUs, minutes into a job.
    Everything else in `train()` is left out; an `if` that needs more than `args` fails loudly here.
    """
    path, tree = _cli_source(module)
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")

    def assertions(statements: list) -> list:
        kept = []
        for node in statements:
            if isinstance(node, ast.Assert):
                kept.append(node)
            elif isinstance(node, ast.If) and (assertions(node.body) or assertions(node.orelse)):
                kept.append(
                    ast.If(test=node.test, body=assertions(node.body) or [ast.Pass()], orelse=assertions(node.orelse))
                )
        return kept

    code = compile(ast.fix_missing_locations(ast.Module(body=assertions(train.body), type_ignores=[])), path, "exec")
    try:
        exec(code, {"args": args})
    except AssertionError as error:
        raise LaunchError(f"OpenRLHF's train() would stop the run after allocating its GPUs: {error}") from None
    except (NameError, AttributeError) as error:
        raise LaunchError(
            f"{path}: cannot evaluate train()'s assertions ({error}); is this OpenRLHF 0.11.2?"
        ) from None


def check_batch_sizes(args: SimpleNamespace, gpus_of: dict[str, int] | None = None) -> None:
    """DeepSpeed's gradient accumulation must be a whole number >= 1; otherwise only a GPU run finds out.

    `gpus_of` maps each trained model to its GPUs; by default PPO's actor and, when there is one, critic.
    """
    if gpus_of is None:
        gpus_of = {"actor": args.actor.num_nodes * args.actor.num_gpus_per_node}
        if args.critic.model_name_or_path:
            gpus_of["critic"] = args.critic.num_nodes * args.critic.num_gpus_per_node
    for group, gpus in gpus_of.items():
        per_step = args.train.micro_batch_size * gpus // (args.ds.ring_attn_size * args.ds.tensor_parallel_size)
        if args.train.batch_size % per_step:
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
    deepspeed_set = 0 if args.ckpt.disable_ds else models * DEEPSPEED_BYTES_PER_PARAMETER * parameters
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


def _size(count: float) -> str:
    return f"{count / 1e9:,.1f} GB"


def ppo_plan(args: SimpleNamespace, train_rows: int, eval_rows: int, parameters: int | None) -> dict:
    """The run's arithmetic from OpenRLHF's rules, checked: every rollout whole and split evenly over the
    ranks, steps, responses, eval rounds, checkpoints and their disk. Raises LaunchError with the fix.

    `train_rows` and `eval_rows` are the prompts OpenRLHF will load (after --data.max_samples).
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
    ranks_of = {"actor": args.actor.num_nodes * args.actor.num_gpus_per_node}
    if args.critic.model_name_or_path:
        ranks_of["critic"] = args.critic.num_nodes * args.critic.num_gpus_per_node
    shares = {}
    for group, gpus in ranks_of.items():
        ranks = gpus // (args.ds.ring_attn_size * args.ds.tensor_parallel_size)
        if args.train.dynamic_batch_enable:  # OpenRLHF balances the ranks itself in this mode
            continue
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
    steps_per_pass = train_rows // prompts
    steps = steps_per_pass * args.train.num_episodes
    eval_steps = args.eval.steps if args.eval.dataset and args.eval.steps > 0 else math.inf
    evals = int(steps // eval_steps) if math.isfinite(eval_steps) else 0
    eval_rounds = -(-eval_rows // prompts)  # OpenRLHF generates eval prompts in rounds of the rollout batch
    save_steps = args.ckpt.save_steps if args.ckpt.save_steps > 0 else math.inf
    saves = int(steps // save_steps) if math.isfinite(save_steps) else 0
    best = args.eval.dataset and args.ckpt.best_metric_key != "none"

    # The actor's and the critic's DeepSpeed state (the reference is never saved); at worst every eval
    # is a new best.
    disk = checkpoint_disk(args, parameters, len(ranks_of), saves, evals if best else 0)
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
        },
        "best_checkpoint": args.ckpt.best_metric_key if best else "none",
        "checkpoints": {"every": save_steps, "count": saves, "deepspeed_kept": min(args.ckpt.max_num, saves)},
        "parameters": parameters,
        "disk_bytes": disk,
    }


def describe_ppo_plan(plan: dict, gpus: int) -> str:
    """The plan as the dry run prints it."""
    rollout, evaluation, checkpoints, disk = plan["rollout"], plan["eval"], plan["checkpoints"], plan["disk_bytes"]
    lines = [
        f"{plan['train_prompts']:,} training prompts in rollouts of {rollout['prompts']} x {rollout['samples_per_prompt']}"
        f" = {rollout['samples']} responses: {plan['steps_per_pass']} steps a pass x {plan['passes']} pass(es) ="
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
            f"periodic eval: {evaluation['prompts']:,} prompts every {evaluation['every']} steps = {evaluation['evals']}"
            f" eval(s) x {evaluation['rounds_each']} generation rounds of {rollout['prompts']} prompts"
            f" ({evaluation['share_of_generation']:.0%} on top of the {plan['steps']} training rounds); best"
            f" checkpoint: {'by ' + plan['best_checkpoint'] if plan['best_checkpoint'] != 'none' else 'off'}"
        )
    else:
        lines.append("periodic eval: none")
    size = "size unknown (give --model a local folder to size it)"
    if disk:
        size = (
            f"DeepSpeed state {_size(disk['deepspeed_set'])} a checkpoint, the last {checkpoints['deepspeed_kept']}"
            f" kept; Hugging Face weights {_size(disk['hf_copy'])} each, never deleted; estimated peak disk"
            f" {_size(disk['total'])}"
        )
    lines.append(f"checkpoints: every {checkpoints['every']} steps = {checkpoints['count']}; {size}")
    return "\n".join(f"med-rlvr: plan ({gpus} GPUs): {line}" for line in lines)


def check_disk(output_dir: Path, needed: int | None) -> str:
    """Free space where the run writes against the plan's estimate; LaunchError when it does not fit."""
    existing = next(parent for parent in (output_dir, *output_dir.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    if needed and needed > free:
        raise LaunchError(
            f"the run needs about {_size(needed)} of disk and {existing} has {_size(free)} free: choose another "
            "--output-dir, fewer --checkpoints, or -- --ckpt.max_num 1 (docs/launch.md, 'Disk')"
        )
    return f"{_size(free)} free in {existing}"


def quiet_strategy(args: SimpleNamespace) -> SimpleNamespace:
    """What OpenRLHF's dataset code asks of its DeepSpeed strategy, without its progress prints."""
    return SimpleNamespace(args=args, print=lambda *_: None, is_rank_0=lambda: False)


def load_prompt_rows(files: str, args: SimpleNamespace, split: str, probs: str | None = None) -> list:
    """Rows of comma-separated prompt files as OpenRLHF's `blending_datasets` loads them."""
    from openrlhf.datasets.utils import blending_datasets

    for entry in files.split(","):
        path = Path(entry.split("@")[0].strip())
        if not path.is_file():
            raise LaunchError(
                f"data file {path} not found (working directory {Path.cwd()}). Prepare it with "
                "`python data_prep/prepare.py ...` (docs/data.md); --dry-run without data uses the built-in sample"
            )
    import datasets

    datasets.disable_progress_bars()
    try:
        data = blending_datasets(
            files, probs, quiet_strategy(args), args.train.seed, max_count=args.data.max_samples, dataset_split=split
        )
    except Exception as error:  # datasets raises many types; all mean OpenRLHF cannot load these files
        raise LaunchError(f"OpenRLHF cannot load {files}: {type(error).__name__}: {error}") from None
    return data.select(range(min(args.data.max_samples, len(data))))


def check_prompt_data(files: str, args: SimpleNamespace, split: str, probs: str | None = None) -> tuple:
    """The (datasources, prompts, labels) OpenRLHF's PromptDataset makes of `files`; every label a letter of its prompt."""
    from openrlhf.datasets import PromptDataset

    tokenizer = None
    if args.data.apply_chat_template:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.actor.model_name_or_path, trust_remote_code=True)
    try:
        rows = load_prompt_rows(files, args, split, probs)
        dataset = PromptDataset(rows, tokenizer, quiet_strategy(args), args.data.input_template)
    except KeyError as error:
        raise LaunchError(
            f"{files}: a row has no column {error}; check --data.input_key and --data.label_key"
        ) from None
    for index, (prompt, label) in enumerate(zip(dataset.prompts, dataset.labels, strict=True)):
        try:
            letter = parse_label(label)
        except ValueError as error:
            raise LaunchError(f"{files}, row {index}: {error}") from None
        if letter not in parse_options(prompt):
            raise LaunchError(f"{files}, row {index}: label {letter} is not one of the prompt's options")
    return dataset.datasources, dataset.prompts, dataset.labels


def grade_samples(reward_url: list[str], prompt: str, label: str) -> dict[str, float]:
    """Rewards of a correct, a wrong and a malformed response, from the reward file loaded by OpenRLHF's own
    loader as in its rollout actors, or from the reward server by OpenRLHF's own HTTP client. The query is
    what OpenRLHF passes: prompt, response, end-of-text token.
    """
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    # Loaded with rollout sampling off: these made-up responses must not land among the run's samples.
    # An http URL (--reward-server) is graded through OpenRLHF's own HTTP client.
    sampling = {name: os.environ.pop(name) for name in ROLLOUT_ENV_VARS if name in os.environ}
    try:
        executor = SingleTurnAgentExecutor(reward_url)
    finally:
        os.environ.update(sampling)
    reward_func = executor.reward_func or (lambda *lists: asyncio.run(executor._fetch_rewards_via_http(*lists))[0])
    wrong = next(letter for letter in parse_options(prompt) if letter != label)
    # Enough thinking for any --min-think-words, so that only the answer decides the reward.
    repeats = 1 + config_from_env(os.environ).min_think_words // 10
    think = " ".join(["the findings point to one mechanism and rule out the others"] * repeats)
    responses = {
        "correct": f" <think> {think} </think> <answer>{label}</answer><|endoftext|>",
        "wrong": f" <think> {think} </think> <answer>{wrong}</answer><|endoftext|>",
        "malformed": f" The answer is {label}.<|endoftext|>",
    }
    return {
        name: float(reward_func([prompt + text], [prompt], [label])["rewards"]) for name, text in responses.items()
    }


def check_reward(reward_url: list[str], prompt: str, label: str) -> dict[str, float]:
    """Load the reward file under this process's MED_RLVR_* variables and check it grades the samples sanely."""
    try:
        rollout_sampling(os.environ)
        rewards = grade_samples(reward_url, prompt, label)
    except Exception as error:  # the reward file's own message names the bad variable
        raise LaunchError(f"the reward file {reward_url[0]} fails: {type(error).__name__}: {error}") from None
    if not rewards["correct"] == 1.0 > rewards["wrong"] >= rewards["malformed"] == -1.0:
        raise LaunchError(
            f"the reward file grades a correct, a wrong and a malformed response {rewards}; expected 1.0 > "
            "wrong >= malformed = -1.0"
        )
    return rewards


def start_reward_server(host: str) -> tuple[subprocess.Popen, str]:
    """`--reward-server`: the reward service on `host`, a child of this process that exits with it."""
    from med_rlvr_plugin import serve

    try:
        return serve.start(host)
    except RuntimeError as error:
        raise LaunchError(f"--reward-server: {error}") from None


def reward_env() -> dict[str, str]:
    """The reward configuration: every MED_RLVR_* variable of this process (the scripts export them)."""
    return {name: value for name, value in sorted(os.environ.items()) if name.startswith("MED_RLVR_")}


def claim_output_dir(output_dir: Path, resume: bool) -> Path:
    """The manifest path of this launch; refuses to reuse a folder unless resuming the run it holds."""
    if not output_dir.is_absolute():
        raise LaunchError(
            f"--output-dir {output_dir} must be absolute: a relative path would land in Ray's temporary copy "
            "of the working directory and vanish with the job"
        )
    manifest = output_dir / "manifest.json"
    if resume:
        if not manifest.is_file():
            raise LaunchError(f"--resume: {manifest} not found; name the output folder of the run to resume")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return output_dir / f"manifest.resume-{stamp}.json"
    if output_dir.exists() and any(output_dir.iterdir()):
        raise LaunchError(
            f"{output_dir} exists and is not empty: choose another --run-name or --output-dir, or pass --resume "
            "to continue the run it holds"
        )
    return manifest


def write_manifest(path: Path, manifest: dict) -> None:
    """Write atomically and never over an existing file: a hard link to a finished temporary file.

    The file gets the umask's permissions, as any file the user writes (tempfile's 0600 would hide the
    manifest from collaborators on shared storage).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(handle.name, 0o666 & ~umask)
        os.link(handle.name, path)
    except FileExistsError:
        raise LaunchError(f"{path} exists; another launch wrote it first") from None
    finally:
        os.unlink(handle.name)


def _plain(value):
    """`args` as JSON: namespaces to dicts, tuples to lists, inf to a string (JSON has no inf)."""
    if isinstance(value, SimpleNamespace):
        return {key: _plain(item) for key, item in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _plugin_files_sha256(root: Path) -> str:
    """One hash of the plugin's code (the package and the launch scripts) under a checkout `root`."""
    fingerprint = hashlib.sha256()
    for path in sorted([*root.glob("med_rlvr_plugin/*.py"), *root.glob("launch/*.sh")]):
        fingerprint.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return fingerprint.hexdigest()


def _git_state(folder: Path) -> dict | None:
    """The commit and dirty state of the git checkout holding `folder`, or None outside one."""
    try:
        commit, status = [
            subprocess.run(["git", *command], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()
            for command in (["rev-parse", "HEAD"], ["status", "--porcelain"])
        ]
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(status)}


def plugin_provenance() -> dict:
    """Which code runs: the plugin files' hash, and the git commit they come from when it can be known.

    Ray leaves .git out of a job's working_dir, so the job's copy has no history. Each node's venv has
    med-rlvr installed in editable mode from a checkout (setup.sh), whose path its metadata records: when
    that checkout holds the same plugin files, its commit is the job's commit.
    """
    root = Path(__file__).resolve().parent.parent
    files = _plugin_files_sha256(root)
    if state := _git_state(root):
        return {"files_sha256": files, **state, "commit_source": "the working directory's git checkout"}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError, TypeError, ValueError, KeyError):
        url = json.loads(importlib.metadata.distribution("med-rlvr").read_text("direct_url.json"))["url"]
        checkout = Path(url.removeprefix("file://"))
        if _plugin_files_sha256(checkout) == files and (state := _git_state(checkout)):
            return {"files_sha256": files, **state, "commit_source": f"the installed checkout {checkout} (same files)"}
    return {
        "files_sha256": files,
        "commit": None,
        "dirty": None,
        "commit_source": "unknown: no checkout with these files",
    }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(
    options: argparse.Namespace, command: list[str], args: SimpleNamespace, data: dict, plan: dict
) -> dict:
    """What the run was: the exact commands, OpenRLHF's resolved arguments, the plan, reward configuration,
    data file hashes, versions, the code's hash and commit, and the Ray job it ran as."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    reward = None
    if options.kind == "ppo":
        reward_file = args.reward.remote_url[0]
        reward = {
            "file": reward_file,
            "file_sha256": _sha256(reward_file),
            "env": reward_env(),
            "server": options.reward_server,
        }
    for part in data.values():
        part["sha256"] = {
            path: _sha256(path) for path in (entry.split("@")[0].strip() for entry in part["files"].split(","))
        }
    # A Ray job runs in a temporary copy of the submitted folder; what identifies it is the uploaded
    # package's content-addressed URI and the submission's metadata (the job id among them).
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    return {
        "run_name": options.run_name,
        "kind": options.kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": options.resume,
        "host": socket.gethostname(),
        "ray_job": {"working_dir": job.get("runtime_env", {}).get("working_dir"), "metadata": job.get("metadata")}
        if job
        else None,
        "working_dir": None if job else str(Path.cwd()),
        "launch_command": options.launch_command,
        "openrlhf_command": command,
        "reward": reward,
        "forwarded_env": sorted(name for name in FORWARDED_SECRETS if name in os.environ),
        "data": data,
        "plan": _plain(plan),
        "settings": _plain(args),
        "versions": {"python": sys.version.split()[0], **versions},
        "plugin_git": plugin_provenance(),
    }


def check_cluster(args: SimpleNamespace, nodes: list[dict]) -> str:
    """The Ray cluster has the GPUs (and one CPU per GPU bundle) the layout places, free; else LaunchError.

    OpenRLHF reserves them with a placement group and waits for it without a timeout, so a cluster
    smaller than the flags would hang the job silently.
    """
    import ray

    actor = args.actor.num_nodes * args.actor.num_gpus_per_node
    needed = actor
    if not args.train.colocate_all:  # separate GPUs for each model and the vLLM engines
        needed += args.vllm.num_engines * args.vllm.tensor_parallel_size
        if args.critic.model_name_or_path:
            needed += args.critic.num_nodes * args.critic.num_gpus_per_node
        if args.algo.kl.init_coef > 0 and not args.train.colocate_actor_ref:
            needed += args.ref.num_nodes * args.ref.num_gpus_per_node
    total, free = ray.cluster_resources(), ray.available_resources()
    layout = ", ".join(f"{node['NodeManagerAddress']} {node['Resources'].get('GPU', 0):g} GPUs" for node in nodes)
    for resource in ("GPU", "CPU"):
        if total.get(resource, 0) < needed:
            raise LaunchError(
                f"the run places {needed} {resource}s (--nodes x --gpus-per-node, one bundle each) and the Ray "
                f"cluster has {total.get(resource, 0):g} ({layout}); OpenRLHF would wait for them forever. Lower "
                "--nodes / --gpus-per-node, or add nodes (`ray start --num-gpus N` on each)"
            )
        if free.get(resource, 0) < needed:
            raise LaunchError(
                f"the run places {needed} {resource}s and only {free.get(resource, 0):g} of the cluster's "
                f"{total[resource]:g} are free; other jobs hold the rest (`ray status`, `ray job list`)"
            )
    return f"{needed} GPUs of {total['GPU']:g} ({layout})"


def run_ppo(options: argparse.Namespace, checked: SimpleNamespace, command: list[str], manifest_path: Path) -> None:
    """Check the cluster, give every actor the reward configuration and prove it arrived, write the
    manifest, then run OpenRLHF's CLI in this process.

    Variables the job script exports reach this driver but not Ray's actors. `ray.init(runtime_env=...)`
    here gives every actor of this job, on every node, the MED_RLVR_* variables, merged with the job's own
    runtime env. OpenRLHF then skips its own `ray.init`, so the variables it would set are set here too.
    Nothing is left in the output folder when a check fails: the manifest comes last.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected_env = reward_env()
    forwarded = {name: os.environ[name] for name in FORWARDED_SECRETS if name in os.environ}
    ray.init(runtime_env={"env_vars": {**openrlhf_ray_env(), **expected_env, **forwarded}})
    nodes = [node for node in ray.nodes() if node["Alive"]]
    print(f"med-rlvr: cluster: {check_cluster(checked.args, nodes)}", flush=True)
    reward_url = checked.args.reward.remote_url
    if options.reward_server:
        # On this (head) node at its cluster address, for every rollout actor; it ends with this driver,
        # however the job ends. The probe below proves each node reaches it and gets the file's rewards.
        reward_url = [start_reward_server(ray.util.get_node_ip_address())[1]]
        command = [*command, "--reward.remote_url", reward_url[0]]  # the last one wins
        print(f"med-rlvr: reward server {reward_url[0]} replaces the reward file for OpenRLHF", flush=True)

    # An actor per node loads the reward file as OpenRLHF's rollout actors do, grades the samples, and
    # looks for a file the driver wrote in the output folder: DeepSpeed writes checkpoint shards from every
    # rank, so on several nodes the folder must be the same (shared) one everywhere. A configuration that
    # did not arrive, or a reward file that does not load there, stops the job now and not mid-training
    # (OpenRLHF logs a reward function's exceptions at INFO level and carries on).
    @ray.remote(num_cpus=0)
    class Probe:
        def report(self, token: str) -> dict:
            seen = {name: os.environ.get(name) for name in expected_env}
            try:
                graded = grade_samples(reward_url, checked.prompt, checked.label)
            except Exception as error:
                graded = f"{type(error).__name__}: {error}"
            print(f"med-rlvr reward probe: env {seen}, rewards {graded}", flush=True)
            return {"env": seen, "rewards": graded, "output_dir_shared": Path(token).is_file()}

    created = not options.output_dir.exists()
    options.output_dir.mkdir(parents=True, exist_ok=True)
    token = options.output_dir / f".med-rlvr-probe-{secrets.token_hex(8)}"
    token.touch()
    try:
        probes = [
            Probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
            for node in nodes
        ]
        reports = ray.get([probe.report.remote(str(token)) for probe in probes])
        for probe in probes:
            ray.kill(probe)
        for node, report in zip(nodes, reports, strict=True):
            address = node["NodeManagerAddress"]
            if {"env": report["env"], "rewards": report["rewards"]} != {
                "env": expected_env,
                "rewards": checked.rewards,
            }:
                raise LaunchError(
                    f"node {address}: an actor saw {report}; expected env {expected_env} and rewards "
                    f"{checked.rewards}. Submit from the repository root with `ray job submit --working-dir . -- bash ...`"
                    + (
                        f"; every node must reach the reward server at {reward_url[0]}"
                        if options.reward_server
                        else ""
                    )
                )
            if not report["output_dir_shared"]:
                raise LaunchError(
                    f"node {address} does not see {options.output_dir} as this node does: checkpoint shards would "
                    "be split across machines. Use an --output-dir on storage every node mounts at the same path"
                )
        print(f"med-rlvr: the reward configuration and {options.output_dir} reached each of {len(nodes)} node(s)")
        print(f"med-rlvr: disk: {check_disk(options.output_dir, (checked.plan['disk_bytes'] or {}).get('total'))}")
        write_manifest(manifest_path, build_manifest(options, command, checked.args, checked.data, checked.plan))
    except BaseException:
        token.unlink()
        if created and not any(options.output_dir.iterdir()):
            options.output_dir.rmdir()
        raise
    token.unlink()
    print(f"med-rlvr: manifest {manifest_path}", flush=True)
    sys.argv = command[2:]  # the module and its flags
    runpy.run_module(PPO_MODULE, run_name="__main__", alter_sys=True)


def openrlhf_ray_env() -> dict[str, str]:
    """The env_vars OpenRLHF's `train()` passes to `ray.init`, evaluated from the installed source."""
    path, tree = _cli_source(PPO_MODULE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "ray.init":
            runtime_env = next(keyword.value for keyword in node.keywords if keyword.arg == "runtime_env")
            return eval(compile(ast.Expression(runtime_env), path, "eval"), {"os": os})["env_vars"]
    raise LaunchError(f"{path}: no ray.init call found; is this OpenRLHF 0.11.2?")


def check_not_test_sets(files: str) -> None:
    """Periodic eval steers a run (its curves, OpenRLHF's best checkpoint), so it must never see a test set.

    A file counts as a test set when its name says `test`, or when the summary prepare.py wrote beside it
    names a test split as its input (MMLU-Pro health is MMLU-Pro's test split).
    """
    for entry in files.split(","):
        path = Path(entry.split("@")[0].strip())
        summary = path.with_suffix(".summary.json")
        source = json.loads(summary.read_text(encoding="utf-8")).get("input", "") if summary.is_file() else ""
        if re.search(r"(?<![a-z])test(?![a-z])", f"{path.stem} {source}", re.I):
            raise LaunchError(
                f"--eval-data {path} is a test set ({source or 'by its name'}): periodic eval picks checkpoints and "
                "steers the run, and the paper's table needs untouched test sets. Evaluate on a dev split "
                "(data/medqa_dev.jsonl, docs/data.md) and on the test sets once, at the end (docs/evaluation.md)"
            )


def planned_flags(
    args: SimpleNamespace, train_rows: int, eval_rows: int, options: argparse.Namespace, given: list[str]
) -> list[str]:
    """OpenRLHF flags the plan sets unless the command gives them itself.

    --data.max_samples: the training prompts rounded down to whole rollouts (OpenRLHF would train on a
    short last rollout, whose uneven split over the ranks hangs ZeRO-3). --eval.steps: eval generates in
    rounds of the rollout batch, so each --algo evaluates as often as costs `--eval-share` of its training
    generation. --ckpt.save_steps: `--checkpoints` saves spread over the run.
    """
    prompts = args.rollout.batch_size
    rows, flags = min(train_rows, args.data.max_samples), []
    if "--data.max_samples" not in given and rows > prompts and rows % prompts:
        rows = rows // prompts * prompts
        flags += ["--data.max_samples", str(rows)]
    steps = rows // prompts * args.train.num_episodes
    if args.eval.dataset and eval_rows and "--eval.steps" not in given:
        rounds = -(-min(eval_rows, rows) // prompts)
        flags += ["--eval.steps", str(math.ceil(rounds / options.eval_share))]
    if steps and "--ckpt.save_steps" not in given:
        flags += ["--ckpt.save_steps", str(-(-steps // options.checkpoints))]
    return flags


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m med_rlvr_plugin.launcher", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="kind", required=True)
    sample = commands.add_parser("sample", help="write the built-in sample prompt file")
    sample.add_argument("file", type=Path)
    sample.add_argument("--sft", action="store_true", help="with the SFT target column `response`")
    for kind in ("ppo", "sft"):
        command = commands.add_parser(kind, help=f"check, record and start an OpenRLHF {kind.upper()} run")
        command.add_argument("--output-dir", type=Path, required=True, help="the run's folder; holds the manifest")
        command.add_argument("--run-name", required=True)
        command.add_argument("--launch-command", default="", help="the launch script's command line, for the manifest")
        command.add_argument("--dry-run", action="store_true", help="check and print only")
        command.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
        command.add_argument("--wandb-project", help="log to this wandb project; the key comes from WANDB_API_KEY")
        command.add_argument("--tensorboard", action="store_true", help="log to OUTPUT_DIR/tensorboard")
        command.add_argument(
            "--checkpoints", type=int, default=CHECKPOINTS, help="checkpoints over the run (sets --ckpt.save_steps)"
        )
        command.add_argument(
            "--builtin-sample", action="store_true", help="the data is the built-in sample: plan for MedQA's sizes"
        )
        if kind == "ppo":
            command.add_argument(
                "--eval-share",
                type=float,
                default=EVAL_SHARE,
                help="periodic eval's generation, as a share of training's",
            )
            command.add_argument(
                "--reward-server",
                action="store_true",
                help="grade through a reward server (serve.py) on the head node",
            )
        else:
            command.add_argument("--num-gpus", type=int, required=True, help="deepspeed --num_gpus")
        command.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then the OpenRLHF flags")
    options = parser.parse_args(argv)

    if options.kind == "sample":
        options.file.write_text("".join(json.dumps(row) + "\n" for row in sample_rows(options.sft)), encoding="utf-8")
        return 0
    script_args = options.trainer_args[1:] if options.trainer_args[:1] == ["--"] else options.trainer_args
    try:
        if options.checkpoints < 1 or options.kind == "ppo" and not 0 < options.eval_share:
            raise LaunchError("--checkpoints must be at least 1 and --eval-share above 0")
        manifest_path = claim_output_dir(options.output_dir, options.resume)
        checked = (check_ppo if options.kind == "ppo" else check_sft)(run_flags(options) + script_args, options)
        if options.kind == "ppo":
            command = ["python3", "-m", PPO_MODULE, *checked.trainer_args]
        else:
            command = ["deepspeed", "--num_gpus", str(options.num_gpus), "--module", SFT_MODULE, *checked.trainer_args]
        print("med-rlvr: OpenRLHF accepts the command:\n" + shlex.join(command).replace(" --", " \\\n    --"))
        if options.kind == "ppo":
            gpus = checked.args.actor.num_nodes * checked.args.actor.num_gpus_per_node
            print(describe_ppo_plan(checked.plan, gpus))
            print(f"med-rlvr: reward configuration for every Ray actor: {reward_env()}")
        else:
            disk = checked.plan["disk_bytes"]
            print(
                f"med-rlvr: plan: {checked.plan['steps']} optimizer steps, a checkpoint every {checked.plan['checkpoints']['every']}"
                f" = {checked.plan['checkpoints']['count']}; estimated peak disk {_size(disk['total']) if disk else 'unknown'}"
            )
        if options.dry_run:
            # The run's disk is the cluster's, which may not be this machine's: a shortfall here only warns.
            try:
                print(
                    f"med-rlvr: disk here: {check_disk(options.output_dir, (checked.plan['disk_bytes'] or {}).get('total'))}"
                )
            except LaunchError as error:
                print(f"med-rlvr: warning: {error}")
            print("med-rlvr: dry run: every check passed; nothing was started or written")
            return 0
        if options.kind == "ppo":
            run_ppo(options, checked, command, manifest_path)
            return 0
        if local_gpus() < options.num_gpus:
            raise LaunchError(
                f"--gpus-per-node {options.num_gpus} but this node has {local_gpus()} GPUs visible "
                "(CUDA_VISIBLE_DEVICES, nvidia-smi); lower --gpus-per-node or run on a GPU node"
            )
        print(f"med-rlvr: disk: {check_disk(options.output_dir, (checked.plan['disk_bytes'] or {}).get('total'))}")
        write_manifest(manifest_path, build_manifest(options, command, checked.args, checked.data, checked.plan))
        print(f"med-rlvr: manifest {manifest_path}", flush=True)
        os.execvp(command[0], command)
    except LaunchError as error:
        print(f"med-rlvr: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
