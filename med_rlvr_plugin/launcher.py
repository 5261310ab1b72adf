"""What the launch scripts run in Python: check a training command, write the run's manifest, start it.

    python3 -m med_rlvr_plugin.launcher ppo --output-dir DIR --run-name NAME [--dry-run] [--resume] -- ARGS
    python3 -m med_rlvr_plugin.launcher sft --output-dir DIR --run-name NAME --num-gpus N [...] -- ARGS
    python3 -m med_rlvr_plugin.launcher sample FILE [--sft]

ARGS are OpenRLHF 0.11.2 flags, built by launch/*.sh. The checks run without a GPU: OpenRLHF's own parser
and post-parse checks, recovered from the installed package's source; the data, loaded by OpenRLHF's own
dataset code; and, for PPO, the reward file, loaded by OpenRLHF's own loader under the MED_RLVR_*
variables of this process. A PPO run then passes those variables to every Ray actor (see `run_ppo`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import runpy
import shlex
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.data import SOURCES, format_row
from med_rlvr_plugin.verifier import config_from_env, grade_response, parse_label, parse_options

PPO_MODULE = "openrlhf.cli.train_ppo_ray"
SFT_MODULE = "openrlhf.cli.train_sft"
PACKAGES = ("med-rlvr", "openrlhf", "torch", "transformers", "datasets", "ray", "deepspeed", "vllm", "flash-attn", "peft")
# Forwarded to every Ray actor besides MED_RLVR_*: the wandb logger in OpenRLHF's trainer actor reads it.
FORWARDED_SECRETS = ("WANDB_API_KEY",)

# The built-in sample: original USMLE-style questions written for this project (from no dataset), in
# MedQA's published row format so that the data module renders them exactly as it renders MedQA.
SAMPLE_QUESTIONS = [
    {
        "question": "A 24-year-old woman has fatigue, heat intolerance, weight loss despite a good appetite and a "
        "fine tremor. Her thyroid is diffusely enlarged and non-tender, and both eyes protrude. Antibodies "
        "against which of the following are most likely responsible?",
        "options": {"A": "Thyroid peroxidase", "B": "The TSH receptor", "C": "Thyroglobulin", "D": "The acetylcholine receptor"},
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


def parse_openrlhf_args(module: str, argv: list[str]) -> SimpleNamespace:
    """The arguments OpenRLHF's CLI `module` would train with, after its own parser and post-parse checks.

    The parser is built inside the CLI's `if __name__ == "__main__":` block, which ends by calling
    `train(args)`. That block runs here from the installed source with `train` swapped for a function that
    keeps `args`, so no flag list is kept by hand and nothing imports vLLM, flash-attn or CUDA.
    """
    path = importlib.util.find_spec(module).origin
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    main_blocks = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    stdlib = sys.stdlib_module_names
    stdlib_imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import) and all(alias.name.split(".")[0] in stdlib for alias in node.names)
        or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in stdlib
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


def check_batch_sizes(args: SimpleNamespace) -> None:
    """DeepSpeed's gradient accumulation must be a whole number >= 1; otherwise only a GPU run finds out."""
    for group in ("actor", "critic"):
        if group == "critic" and not args.critic.model_name_or_path:
            continue
        gpus = getattr(args, group).num_nodes * getattr(args, group).num_gpus_per_node
        per_step = args.train.micro_batch_size * gpus // (args.ds.ring_attn_size * args.ds.tensor_parallel_size)
        if args.train.batch_size % per_step:
            raise LaunchError(
                f"--train.batch_size {args.train.batch_size} is not a multiple of --train.micro_batch_size "
                f"{args.train.micro_batch_size} x {gpus} {group} GPUs; raise the batch size or lower the micro "
                "batch size (docs/launch.md, 'Scaling')"
            )


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
        raise LaunchError(f"{files}: a row has no column {error}; check --data.input_key and --data.label_key") from None
    for index, (prompt, label) in enumerate(zip(dataset.prompts, dataset.labels)):
        try:
            letter = parse_label(label)
        except ValueError as error:
            raise LaunchError(f"{files}, row {index}: {error}") from None
        if letter not in parse_options(prompt):
            raise LaunchError(f"{files}, row {index}: label {letter} is not one of the prompt's options")
    return dataset.datasources, dataset.prompts, dataset.labels


def grade_samples(reward_url: list[str], prompt: str, label: str) -> dict[str, float]:
    """Rewards of a correct, a wrong and a malformed response, from the reward file loaded by OpenRLHF's own
    loader as in its rollout actors. The query is what OpenRLHF passes: prompt, response, end-of-text token.
    """
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    reward_func = SingleTurnAgentExecutor(reward_url).reward_func
    wrong = next(letter for letter in parse_options(prompt) if letter != label)
    # Enough thinking for any --min-think-words, so that only the answer decides the reward.
    repeats = 1 + config_from_env(os.environ).min_think_words // 10
    think = " ".join(["the findings point to one mechanism and rule out the others"] * repeats)
    responses = {
        "correct": f" <think> {think} </think> <answer>{label}</answer><|endoftext|>",
        "wrong": f" <think> {think} </think> <answer>{wrong}</answer><|endoftext|>",
        "malformed": f" The answer is {label}.<|endoftext|>",
    }
    return {name: float(reward_func([prompt + text], [prompt], [label])["rewards"]) for name, text in responses.items()}


def check_reward(reward_url: list[str], prompt: str, label: str) -> dict[str, float]:
    """Load the reward file under this process's MED_RLVR_* variables and check it grades the samples sanely."""
    try:
        rewards = grade_samples(reward_url, prompt, label)
    except Exception as error:  # the reward file's own message names the bad variable
        raise LaunchError(f"the reward file {reward_url[0]} fails: {type(error).__name__}: {error}") from None
    if not rewards["correct"] == 1.0 > rewards["wrong"] >= rewards["malformed"] == -1.0:
        raise LaunchError(
            f"the reward file grades a correct, a wrong and a malformed response {rewards}; expected 1.0 > "
            "wrong >= malformed = -1.0"
        )
    return rewards


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
    """Write atomically and never over an existing file: a hard link to a finished temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    try:
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


def build_manifest(options: argparse.Namespace, command: list[str], args: SimpleNamespace, data: dict) -> dict:
    """What the run was: the exact commands, OpenRLHF's resolved arguments, reward configuration, versions, commit."""
    # Ray leaves .git out of a job's working_dir unless RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES says
    # otherwise (docs/launch.md), so the commit may be unknown here; the hash of the plugin's files always is.
    root = Path(__file__).resolve().parent.parent
    fingerprint = hashlib.sha256()
    for path in sorted([*root.glob("med_rlvr_plugin/*.py"), *root.glob("launch/*.sh")]):
        fingerprint.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    git = {"commit": None, "dirty": None, "files_sha256": fingerprint.hexdigest()}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for key, git_args in (("commit", ["rev-parse", "HEAD"]), ("dirty", ["status", "--porcelain"])):
            output = subprocess.run(
                ["git", *git_args], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
            ).stdout.strip()
            git[key] = output if key == "commit" else bool(output)
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    reward = None
    if options.kind == "ppo":
        reward_file = Path(args.reward.remote_url[0])
        reward = {"file": str(reward_file), "file_sha256": hashlib.sha256(reward_file.read_bytes()).hexdigest(), "env": reward_env()}
    return {
        "run_name": options.run_name,
        "kind": options.kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": options.resume,
        "host": socket.gethostname(),
        "working_dir": str(Path.cwd()),
        "launch_command": options.launch_command,
        "openrlhf_command": command,
        "reward": reward,
        "forwarded_env": sorted(name for name in FORWARDED_SECRETS if name in os.environ),
        "data": data,
        "settings": _plain(args),
        "versions": {"python": sys.version.split()[0], **versions},
        "plugin_git": git,
    }


def run_ppo(trainer_args: list[str], reward_url: list[str], prompt: str, label: str, rewards: dict[str, float]) -> None:
    """Start Ray with the reward configuration for every actor, prove it arrived, then run OpenRLHF's CLI.

    Variables the job script exports reach this driver but not Ray's actors. `ray.init(runtime_env=...)`
    here gives every actor of this job, on every node, the MED_RLVR_* variables, merged with the job's own
    runtime env. OpenRLHF then skips its own `ray.init`, so the variables it would set are set here too.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected_env = reward_env()
    secrets = {name: os.environ[name] for name in FORWARDED_SECRETS if name in os.environ}
    ray.init(runtime_env={"env_vars": {**openrlhf_ray_env(), **expected_env, **secrets}})

    # An actor per node loads the reward file as OpenRLHF's rollout actors do and grades the samples. A
    # configuration that did not arrive, or a reward file that does not load there, stops the job now and
    # not mid-training (OpenRLHF logs a reward function's exceptions at INFO level and carries on). Ray
    # runs remote code in actors, which are classes; this one is used here only.
    @ray.remote(num_cpus=0)
    class RewardProbe:
        def report(self) -> dict:
            seen = {name: os.environ.get(name) for name in expected_env}
            try:
                graded = grade_samples(reward_url, prompt, label)
            except Exception as error:
                graded = f"{type(error).__name__}: {error}"
            print(f"med-rlvr reward probe: env {seen}, rewards {graded}", flush=True)
            return {"env": seen, "rewards": graded}

    nodes = [node for node in ray.nodes() if node["Alive"]]
    probes = [
        RewardProbe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
        for node in nodes
    ]
    reports = ray.get([probe.report.remote() for probe in probes])
    for probe in probes:
        ray.kill(probe)
    for node, report in zip(nodes, reports):
        if report != {"env": expected_env, "rewards": rewards}:
            raise LaunchError(
                f"node {node['NodeManagerAddress']}: an actor saw {report}; expected env {expected_env} and rewards "
                f"{rewards}. Submit from the repository root with `ray job submit --working-dir . -- bash ...`"
            )
    print(f"med-rlvr: the reward configuration reached an actor on each of {len(nodes)} node(s)", flush=True)

    sys.argv = [PPO_MODULE, *trainer_args]
    runpy.run_module(PPO_MODULE, run_name="__main__", alter_sys=True)


def openrlhf_ray_env() -> dict[str, str]:
    """The env_vars OpenRLHF's `train()` passes to `ray.init`, evaluated from the installed source."""
    path = importlib.util.find_spec(PPO_MODULE).origin
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "ray.init":
            runtime_env = next(keyword.value for keyword in node.keywords if keyword.arg == "runtime_env")
            return eval(compile(ast.Expression(runtime_env), path, "eval"), {"os": os})["env_vars"]
    raise LaunchError(f"{path}: no ray.init call found; is this OpenRLHF 0.11.2?")


def check_ppo(trainer_args: list[str]) -> tuple[SimpleNamespace, dict, dict[str, float], str, str]:
    args = parse_openrlhf_args(PPO_MODULE, trainer_args)
    check_batch_sizes(args)
    datasources, prompts, labels = check_prompt_data(args.data.prompt_dataset, args, args.data.prompt_split, args.data.prompt_probs)
    data = {"train": {"files": args.data.prompt_dataset, "rows": len(prompts)}}
    print(f"med-rlvr: training data {args.data.prompt_dataset}: {len(prompts)} prompts, every label an option letter")
    if args.eval.dataset:
        eval_sources = check_prompt_data(args.eval.dataset, args, args.eval.split)[0]
        counts = {source: eval_sources.count(source) for source in sorted(set(eval_sources))}
        data["eval"] = {"files": args.eval.dataset, "rows_by_datasource": counts}
        curves = ", ".join(f"eval_{source}_pass1 ({count} prompts)" for source, count in counts.items())
        print(f"med-rlvr: eval data {args.eval.dataset}: every label an option letter; curves {curves}")
    rewards = check_reward(args.reward.remote_url, prompts[0], parse_label(labels[0]))
    print(f"med-rlvr: reward file {args.reward.remote_url[0]} with {reward_env() or 'the defaults'}: rewards {rewards}")
    return args, data, rewards, prompts[0], parse_label(labels[0])


def check_sft(trainer_args: list[str]) -> tuple[SimpleNamespace, dict]:
    """OpenRLHF's SFT parser, and every SFT target graded a well-formed correct answer by the verifier."""
    from openrlhf.datasets.sft_dataset import preprocess_data

    args = parse_openrlhf_args(SFT_MODULE, trainer_args)
    rows = load_prompt_rows(args.data.dataset, args, args.data.dataset_split, args.data.dataset_probs)
    for index, row in enumerate(rows):
        try:
            prompt, response = preprocess_data(row, args.data.input_template, args.data.input_key, args.data.output_key)
            grade = grade_response(prompt + response, prompt, row["label"])
        except (KeyError, ValueError) as error:
            raise LaunchError(f"{args.data.dataset}, row {index}: {type(error).__name__}: {error}") from None
        if not grade.correct:
            raise LaunchError(
                f"{args.data.dataset}, row {index}: the SFT target is not a well-formed correct answer "
                f"({grade.error or 'wrong letter'}); prepare the file with `data_prep/prepare.py --sft`"
            )
    print(f"med-rlvr: SFT data {args.data.dataset}: {len(rows)} rows, every target graded correct by the verifier")
    return args, {"train": {"files": args.data.dataset, "rows": len(rows)}}


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
                "'{\"env_vars\": {\"WANDB_API_KEY\": \"...\"}}' ..., or export it before `ray start` on every node"
            )
        flags += ["--logger.wandb.key", "from-env:WANDB_API_KEY", "--logger.wandb.project", options.wandb_project]
        flags += ["--logger.wandb.run_name", options.run_name]
    if options.resume:
        flags.append("--ckpt.load_enable")
    return flags


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
        if kind == "sft":
            command.add_argument("--num-gpus", type=int, required=True, help="deepspeed --num_gpus")
        command.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then the OpenRLHF flags")
    options = parser.parse_args(argv)

    if options.kind == "sample":
        options.file.write_text("".join(json.dumps(row) + "\n" for row in sample_rows(options.sft)), encoding="utf-8")
        return 0
    script_args = options.trainer_args[1:] if options.trainer_args[:1] == ["--"] else options.trainer_args
    try:
        trainer_args = run_flags(options) + script_args
    except LaunchError as error:
        print(f"med-rlvr: error: {error}", file=sys.stderr)
        return 1
    if options.kind == "ppo":
        command = ["python3", "-m", PPO_MODULE, *trainer_args]
    else:
        command = ["deepspeed", "--num_gpus", str(options.num_gpus), "--module", SFT_MODULE, *trainer_args]
    try:
        manifest_path = claim_output_dir(options.output_dir, options.resume)
        if options.kind == "ppo":
            args, data, rewards, prompt, label = check_ppo(trainer_args)
        else:
            args, data = check_sft(trainer_args)
        print("med-rlvr: OpenRLHF accepts the command:\n" + shlex.join(command).replace(" --", " \\\n    --"))
        if options.kind == "ppo":
            print(f"med-rlvr: reward configuration for every Ray actor: {reward_env()}")
        if options.dry_run:
            print("med-rlvr: dry run: every check passed; nothing was started or written")
            return 0
        write_manifest(manifest_path, build_manifest(options, command, args, data))
        print(f"med-rlvr: manifest {manifest_path}", flush=True)
        if options.kind == "sft":
            os.execvp(command[0], command)
        run_ppo(trainer_args, args.reward.remote_url, prompt, label, rewards)
    except LaunchError as error:
        print(f"med-rlvr: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
