"""The checks of a run's inputs that need no GPU: its data and prompt lengths, reward file (or server), disk."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.data.pipeline import summary_path
from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.plan import gigabytes
from med_rlvr_plugin.openrlhf_reward import rollout_sampling
from med_rlvr_plugin.verifier import ROLLOUT_ENV_VARS, config_from_env, grade_response, parse_label, parse_options

# Forwarded to every Ray actor besides MED_RLVR_*: the wandb logger in OpenRLHF's trainer actor reads it.
FORWARDED_SECRETS = ("WANDB_API_KEY",)


def check_disk(output_dir: Path, plan: dict, dry_run: bool) -> None:
    """Free space where the run writes against the plan's estimate, printed; LaunchError when it does not fit.

    A dry run only warns: the run's disk is the cluster's, which may not be this machine's.
    """
    existing = next(parent for parent in (output_dir, *output_dir.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    needed = (plan["disk_bytes"] or {}).get("total")
    if needed and needed > free:
        error = (
            f"the run needs about {gigabytes(needed)} of disk and {existing} has {gigabytes(free)} free: choose "
            "another --output-dir, fewer --checkpoints, or -- --ckpt.disable_ds (no resume; docs/launch.md, 'Disk')"
        )
        if not dry_run:
            raise LaunchError(error)
        print(f"med-rlvr: warning: {error}")
    else:
        print(f"med-rlvr: disk{' here' if dry_run else ''}: {gigabytes(free)} free in {existing}")


def quiet_strategy(args: SimpleNamespace) -> SimpleNamespace:
    """What OpenRLHF's dataset code asks of its DeepSpeed strategy, without its progress prints."""
    return SimpleNamespace(args=args, print=lambda *_: None, is_rank_0=lambda: False)


def data_paths(files: str) -> list[Path]:
    """The files of an OpenRLHF data flag: comma-separated, each maybe with `@split` (`--data.prompt_dataset`)."""
    return [Path(entry.split("@")[0].strip()) for entry in files.split(",")]


def load_prompt_rows(files: str, args: SimpleNamespace, split: str, probs: str | None = None) -> list:
    """Rows of comma-separated prompt files as OpenRLHF's `blending_datasets` loads them."""
    from openrlhf.datasets.utils import blending_datasets

    for path in data_paths(files):
        if not path.is_file():
            raise LaunchError(
                f"data file {path} not found (working directory {Path.cwd()}). Prepare it with "
                "`python data_prep/prepare.py ...` (docs/data.md); --dry-run uses the built-in sample only when "
                "none of the default data files exists"
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
    """The (datasources, prompts, labels) OpenRLHF's PromptDataset makes of `files`; every label a letter of
    its prompt."""
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


def prompt_limit_flags(args: SimpleNamespace, prompts: list[str], trainer_args: list[str], dry_run: bool) -> list:
    """`--data.max_len` raised so that OpenRLHF cuts no prompt, or [] when none is cut; LaunchError when the
    command sets `--data.max_len` itself and a prompt is over the limit.

    OpenRLHF's rollout (`SingleTurnAgentExecutor.execute`) tokenizes each prompt without special tokens and
    keeps its last `--data.max_len - --rollout.max_new_tokens` tokens, which cuts the instruction and the
    question's start. Counted with the model's tokenizer: a local folder or the hub cache for a dry run (a
    dry run never waits on the network), downloaded if need be for the run, which downloads the model anyway.
    """
    from transformers import AutoTokenizer

    model, max_len = args.actor.model_name_or_path, args.data.max_len
    new_tokens = args.rollout.max_new_tokens or 1  # unset: the response gets what the prompt leaves, 1 at least
    limit = max_len - new_tokens
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True, local_files_only=dry_run)
    except (OSError, ValueError) as error:
        where = "is not in a local folder or the hub cache" if dry_run else "did not load"
        print(f"med-rlvr: prompt lengths not checked: {model}'s tokenizer {where} ({type(error).__name__})")
        return []
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    longest, over = max(lengths), sum(length > limit for length in lengths)
    limits = f"--data.max_len {max_len} - --rollout.max_new_tokens {new_tokens}"
    if not over:
        print(
            f"med-rlvr: prompt lengths: the longest of {len(lengths):,} has {longest:,} tokens of {limit:,} ({limits})"
        )
        return []
    counted = (
        f"{over} of {len(lengths):,} prompts have more than {limit:,} tokens ({limits}; the longest {longest:,}), "
        "and OpenRLHF would cut them from the left, instruction first"
    )
    if "--data.max_len" in trainer_args:
        raise LaunchError(f"{counted}: raise --data.max_len to {longest + new_tokens} or leave it to the launcher")
    print(f"med-rlvr: --data.max_len {longest + new_tokens}: {counted}; the limit is raised so that none is cut")
    return ["--data.max_len", str(longest + new_tokens)]


def check_sft_data(args: SimpleNamespace) -> list:
    """The SFT rows as OpenRLHF's SFT dataset reads them, every target graded a well-formed correct answer
    by the verifier (a wrong or malformed target would teach it)."""
    from openrlhf.datasets.sft_dataset import preprocess_data

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
    return rows


def check_not_test_sets(files: str) -> None:
    """Periodic eval steers a run (its curves, OpenRLHF's best checkpoint), so it must never see a test set.

    A file counts as a test set when its name says `test`, or when the summary prepare.py wrote beside it
    names a test split as its input (MMLU-Pro health is MMLU-Pro's test split).
    """
    for path in data_paths(files):
        # prepare.py's summary of this file, or of a file prepared before each output had its own (NAME.summary.json)
        summary = next((s for s in (summary_path(path), path.with_suffix(".summary.json")) if s.is_file()), None)
        source = json.loads(summary.read_text(encoding="utf-8")).get("input", "") if summary else ""
        if re.search(r"(?<![a-z])test(?![a-z])", f"{path.stem} {source}", re.I):
            raise LaunchError(
                f"--eval-data {path} is a test set ({source or 'by its name'}): periodic eval picks checkpoints and "
                "steers the run, and the paper's table needs untouched test sets. Evaluate on a dev split "
                "(data/medqa_dev.jsonl, docs/data.md) and on the test sets once, at the end (docs/evaluation.md)"
            )


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


def check_reward_server(prompt: str, label: str, rewards: dict[str, float]) -> dict[str, float]:
    """`--reward-server`: the service `run_ppo` starts, here on loopback, grades as the reward file does."""
    server, url = start_reward_server("127.0.0.1")
    try:
        served = check_reward([url], prompt, label)
    finally:
        server.terminate()
        server.wait()
    if served != rewards:
        raise LaunchError(f"the reward server grades the samples {served}, the reward file {rewards}")
    return served


def start_reward_server(host: str) -> tuple[subprocess.Popen, str]:
    """`--reward-server`: the reward service on `host`, a child of this process that exits with it. On the
    Ray job's node address it must be reachable from the other nodes: `--allow-remote`."""
    from med_rlvr_plugin import serve

    try:
        return serve.start(host, [] if serve.is_loopback(host) else ["--allow-remote"])
    except RuntimeError as error:
        raise LaunchError(f"--reward-server: {error}") from None


def reward_env() -> dict[str, str]:
    """The reward configuration: every MED_RLVR_* variable of this process (the scripts export them)."""
    return {name: value for name, value in sorted(os.environ.items()) if name.startswith("MED_RLVR_")}
