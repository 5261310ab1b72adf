"""The launch scripts without a cluster: shell hygiene, and every command checked by OpenRLHF's own parser.

Each dry run below goes through the installed OpenRLHF 0.11.2's parser and post-parse checks (recovered
from its source by the launcher), its dataset loader, and its reward-file loader; a run takes ~10 s.
"""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from med_rlvr_plugin import launcher
from med_rlvr_plugin.launcher import LaunchError
from med_rlvr_plugin.launcher.manifest import plugin_files_sha256, write_manifest
from med_rlvr_plugin.launcher.openrlhf_cli import openrlhf_ray_env, parse_openrlhf_args
from med_rlvr_plugin.launcher.plan import check_batch_sizes, model_parameters, ppo_plan, trained_models
from med_rlvr_plugin.launcher.ray_job import ray_init_env
from med_rlvr_plugin.verifier import parse_options
from tests.real_data import MEDQA_TEST, real_file

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "launch").glob("*.sh"))
BIN = Path(sys.executable).parent


def run_script(script: str, *args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("MED_RLVR_", "WANDB_"))}
    environ["PATH"] = f"{BIN}{os.pathsep}{environ['PATH']}"
    return subprocess.run(
        ["bash", str(REPO / "launch" / script), *args],
        cwd=cwd,
        env=environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def printed_command(output: str) -> list[str]:
    """The OpenRLHF command a dry run printed, as argv."""
    text = output.split("OpenRLHF accepts the command:\n", 1)[1].split("\nmed-rlvr:", 1)[0]
    return shlex.split(text.replace("\\\n", " "))


def flag_value(argv: list[str], flag: str) -> str:
    """The last value given to `flag` (argparse's rule)."""
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag][-1]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A checkout-like folder with prepared data: the built-in sample repeated to 512 rows, two whole
    rollouts of PPO's 256 prompts (and 16 of GRPO's 32), so that every --algo's plan accepts it."""
    write_rows(tmp_path / "train.jsonl", (launcher.sample_rows() * 86)[:512])
    return tmp_path


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_are_shellcheck_clean(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = subprocess.run([str(BIN / "shellcheck"), str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help_documents_every_flag(script: Path) -> None:
    patterns = re.findall(r"^\s+((?:-h \| )?--[a-z-]+(?: \| --[a-z-]+)*)\)", script.read_text(), re.M)
    flags = {flag for pattern in patterns for flag in pattern.split(" | ") if flag.startswith("--")}
    result = run_script(script.name, "--help")
    assert result.returncode == 0
    documented = set(re.findall(r"^\s+(?:-h, )?(--[a-z-]+)", result.stdout, re.M))
    assert flags and flags <= documented, flags - documented


@pytest.mark.integration
@pytest.mark.parametrize("module", [launcher.PPO_MODULE, launcher.SFT_MODULE])
def test_recovered_parser_is_the_installed_one(module: str, cpu_standins: Path) -> None:
    """The parser the launcher recovers prints the same --help as the installed CLI itself."""
    env = os.environ | {"PYTHONPATH": str(cpu_standins), "COLUMNS": "120"}
    real = subprocess.run(
        [sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True, timeout=300
    )
    assert real.returncode == 0, real.stderr
    recovered = subprocess.run(
        [
            sys.executable,
            "-c",
            "from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args; "
            f"parse_openrlhf_args({module!r}, ['--help'])",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert recovered.returncode == 0, recovered.stderr
    # DeepSpeed announces its CPU accelerator on stdout when the real CLI imports it.
    real_help = "".join(line for line in real.stdout.splitlines(True) if "Setting accelerator to CPU" not in line)
    assert "--actor.model_name_or_path" in real_help or "--model.model_name_or_path" in real_help
    assert recovered.stdout == real_help


# Every --algo, and every reward option in some combination: each command must pass OpenRLHF's checks,
# and the reward file must grade under the configuration the flags set.
PPO_CASES = {
    "ppo-neutral": (["--algo", "ppo"], "gae", {"MED_RLVR_REWARD_SCHEME": "neutral"}, 0.0),
    "grpo-penalized-strict": (
        ["--algo", "grpo", "--reward-scheme", "penalized", "--format", "strict"],
        "group_norm",
        {"MED_RLVR_REWARD_SCHEME": "penalized", "MED_RLVR_FORMAT": "strict"},
        -1.0,
    ),
    "reinforce-leak-think-logging": (
        [
            "--algo",
            "reinforce_baseline",
            "--leak-penalty",
            "0.5",
            "--min-think-words",
            "40",
            "--short-think-penalty",
            "0.25",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--tensorboard",
            "--wandb-project",
            "medrlvr",
        ],
        "reinforce_baseline",
        {"MED_RLVR_LEAK_PENALTY": "0.5", "MED_RLVR_MIN_THINK_WORDS": "40", "MED_RLVR_SHORT_THINK_PENALTY": "0.25"},
        0.0,
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", PPO_CASES)
def test_ppo_dry_run_passes_openrlhf_checks(case: str, data_dir: Path) -> None:
    flags, estimator, reward_env, wrong_reward = PPO_CASES[case]
    output_dir = data_dir / "run"
    result = run_script(
        "train_ppo_medqa.sh",
        "--dry-run",
        *flags,
        "--train-data",
        str(data_dir / "train.jsonl"),
        "--eval-data",
        str(data_dir / "train.jsonl"),
        "--output-dir",
        str(output_dir),
        env={"WANDB_API_KEY": "secret-key"},
    )
    assert result.returncode == 0, result.stderr + result.stdout
    argv = printed_command(result.stdout)
    assert flag_value(argv, "--algo.advantage.estimator") == estimator
    assert flag_value(argv, "--reward.remote_url") == "med_rlvr_plugin/openrlhf_reward.py"
    assert flag_value(argv, "--data.label_key") == "label"
    # 512 eval prompts, 16 steps: 5 evals of a fixed subset, written to the run's folder when it starts
    assert flag_value(argv, "--eval.dataset") == str(output_dir / "eval_subset.jsonl")
    assert flag_value(argv, "--ckpt.path").startswith(str(output_dir))
    reward_line = next(line for line in result.stdout.splitlines() if line.startswith("med-rlvr: reward file"))
    for name, value in reward_env.items():
        assert f"'{name}': '{value}'" in reward_line
    assert f"'wrong': {wrong_reward}" in reward_line and "'correct': 1.0" in reward_line
    assert "secret-key" not in result.stdout + result.stderr
    if "--nodes" in flags:
        assert flag_value(argv, "--vllm.num_engines") == "8"
        assert flag_value(argv, "--actor.num_nodes") == "2"
        assert flag_value(argv, "--logger.tensorboard_dir") == str(output_dir / "tensorboard")
    assert not output_dir.exists(), "a dry run writes nothing"


def checkout_copy(folder: Path) -> Path:
    """A checkout without data/: the package and the launch scripts."""
    shutil.copytree(REPO / "med_rlvr_plugin", folder / "med_rlvr_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "launch", folder / "launch")
    return folder


@pytest.mark.integration
def test_dry_run_without_data_uses_the_builtin_sample(tmp_path: Path) -> None:
    """The README's main command, run from a folder without data/: the built-in sample stands in, and the
    first and the last line say so."""
    checkout = checkout_copy(tmp_path / "checkout")
    result = run_script("train_ppo_medqa.sh", "--dry-run", cwd=checkout)
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    missing = "data/medqa_train.jsonl, data/medqa_dev.jsonl not found"
    assert lines[0] == f"med-rlvr: dry run on the built-in sample: {missing}; none of your data checked"
    assert lines[-1] == (
        f"med-rlvr: dry run: every check passed for the built-in sample, not your data ({missing}); "
        "nothing was started or written"
    )
    assert f"{len(launcher.SAMPLE_QUESTIONS)} prompts" in result.stdout
    # No tokenizer of the hub model on this machine: the prompt lengths are not checked, and it says so.
    assert (
        "med-rlvr: prompt lengths not checked: Qwen/Qwen2.5-3B's tokenizer is not in a local folder" in result.stdout
    )
    argv = printed_command(result.stdout)
    assert flag_value(argv, "--actor.model_name_or_path") == "Qwen/Qwen2.5-3B"
    assert flag_value(argv, "--vllm.num_engines") == "8"
    sft = run_script("train_sft_medqa.sh", "--dry-run", cwd=checkout)
    assert sft.returncode == 0, sft.stderr + sft.stdout
    assert sft.stdout.splitlines()[0].startswith(
        "med-rlvr: dry run on the built-in sample: data/medqa_train_sft.jsonl"
    )
    assert "for the built-in sample, not your data" in sft.stdout.splitlines()[-1]


@pytest.mark.integration
def test_once_a_data_file_exists_the_dry_run_checks_the_runs_own_files(tmp_path: Path) -> None:
    """Only the training file prepared: the dry run stops as the run would, on the missing dev file; with
    both, it plans for their real sizes and its last line names them."""
    checkout = checkout_copy(tmp_path / "checkout")
    (checkout / "data").mkdir()
    write_rows(checkout / "data" / "medqa_train.jsonl", (launcher.sample_rows() * 129)[:772])
    alone = run_script("train_ppo_medqa.sh", "--dry-run", cwd=checkout)
    assert alone.returncode == 1 and "data file data/medqa_dev.jsonl not found" in alone.stderr, alone.stderr
    assert "built-in sample" not in alone.stdout
    write_rows(checkout / "data" / "medqa_dev.jsonl", launcher.sample_rows())
    both = run_script("train_ppo_medqa.sh", "--dry-run", cwd=checkout)
    assert both.returncode == 0, both.stderr + both.stdout
    assert "built-in sample" not in both.stdout
    assert flag_value(printed_command(both.stdout), "--data.max_samples") == "768"  # 3 rollouts of 256
    assert "eval_builtin_sample_pass1 (6 prompts)" in both.stdout
    assert both.stdout.splitlines()[-1] == (
        "med-rlvr: dry run: every check passed for data/medqa_train.jsonl, data/medqa_dev.jsonl; "
        "nothing was started or written"
    )


@pytest.mark.integration
def test_a_reward_variable_in_the_environment_is_the_default_and_a_contradicting_flag_is_refused(
    data_dir: Path,
) -> None:
    """Ray gives every actor the job's MED_RLVR_* values (--runtime-env-json), whatever the driver passes."""
    base = ["--dry-run", "--train-data", str(data_dir / "train.jsonl"), "--eval-data", "none"]
    penalized = {"MED_RLVR_REWARD_SCHEME": "penalized"}
    contradiction = run_script("train_ppo_medqa.sh", *base, "--reward-scheme", "neutral", env=penalized)
    assert contradiction.returncode == 2
    assert contradiction.stderr == (
        "med-rlvr train_ppo_medqa.sh: error: --reward-scheme neutral contradicts MED_RLVR_REWARD_SCHEME=penalized "
        "in the job's environment (--runtime-env-json, export): set one\n"
    )
    agreed = run_script("train_ppo_medqa.sh", *base, "--reward-scheme", "penalized", env=penalized)
    default = run_script("train_ppo_medqa.sh", *base, env=penalized)
    for result in (agreed, default):
        assert result.returncode == 0, result.stderr
        assert "'MED_RLVR_REWARD_SCHEME': 'penalized'" in result.stdout and "'wrong': -1.0" in result.stdout


@pytest.mark.integration
def test_prompts_over_the_prompt_limit_raise_it_or_stop_the_run(tiny_qwen2: Path, tmp_path: Path) -> None:
    """MedQA's test split through prepare.py, counted with Qwen2.5's tokenizer (the tiny model's): OpenRLHF
    keeps a prompt's last --data.max_len - --rollout.max_new_tokens = 1,024 tokens, and 2 prompts have more."""
    medqa = tmp_path / "medqa_test.jsonl"
    prepare = [sys.executable, str(REPO / "data_prep" / "prepare.py"), "medqa", "--output", str(medqa)]
    subprocess.run([*prepare, "--input", str(real_file(MEDQA_TEST))], check=True, capture_output=True, timeout=300)
    base = ["--dry-run", "--model", str(tiny_qwen2), "--train-data", str(medqa), "--eval-data", "none"]
    raised = run_script("train_ppo_medqa.sh", *base)
    assert raised.returncode == 0, raised.stderr
    assert flag_value(printed_command(raised.stdout), "--data.max_len") == "2059"
    counted = "2 of 1,273 prompts have more than 1,024 tokens (--data.max_len 2048 - --rollout.max_new_tokens 1024; "
    assert f"med-rlvr: --data.max_len 2059: {counted}the longest 1,035)" in raised.stdout
    fixed = run_script("train_ppo_medqa.sh", *base, "--", "--data.max_len", "2048")
    assert fixed.returncode == 1
    assert f"{counted}the longest 1,035), and OpenRLHF would cut them from the left" in fixed.stderr
    assert "raise --data.max_len to 2059 or leave it to the launcher" in fixed.stderr
    short = run_script("train_ppo_medqa.sh", *base, "--", "--data.max_len", "2059")
    assert short.returncode == 0 and "prompt lengths: the longest of 1,273 has 1,035 tokens of 1,035" in short.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algo", "grpo", "--", "--rollout.n_samples_per_prompt", "1"], "requires n_samples_per_prompt > 1"),
        (["--", "--pretrain", "Qwen/Qwen2.5-3B"], "unrecognized arguments: --pretrain"),
        (["--", "--train.micro_batch_size", "48"], "not a multiple of --train.micro_batch_size 48"),
        (["--reward-scheme", "lenient"], "MED_RLVR_REWARD_SCHEME='lenient'"),
        (["--min-think-words", "-3"], "MED_RLVR_MIN_THINK_WORDS"),
        (["--algo", "dpo"], "med-rlvr train_ppo_medqa.sh: error: --algo must be ppo, grpo or reinforce_baseline"),
        (["--output-dir", "relative/run"], "must be absolute"),
        (["--train-data", "/nonexistent/train.jsonl"], "data file /nonexistent/train.jsonl not found"),
        # train()'s own assertion, which OpenRLHF checks only after Ray has placed the GPUs
        (
            ["--", "--vllm.tensor_parallel_size", "2"],
            "must be equal to vllm_num_engines * vllm_tensor_parallel_size, got 8 and 16",
        ),
        # DeepSpeed's arithmetic holds (128 = 4 x 4 x 8), OpenRLHF's split does not: 22 micro-batches on 4 ranks
        (
            ["--gpus-per-node", "4", "--", "--rollout.micro_batch_size", "12"],
            "gives the 4 actor ranks [72, 72, 72, 40] samples",
        ),
        (["--eval-data", "/data/medqa_test.jsonl"], "is a test set"),
    ],
)
def test_dry_run_rejects_bad_commands(flags: list[str], message: str, data_dir: Path) -> None:
    """OpenRLHF's parser and post-parse checks, the reward file and the launcher each stop a bad command."""
    base = ["--dry-run", "--train-data", str(data_dir / "train.jsonl"), "--eval-data", "none"]
    result = run_script("train_ppo_medqa.sh", *base, *flags)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.integration
def test_plan_makes_every_rollout_whole(data_dir: Path) -> None:
    """300 prompts: PPO trains on 256 (one rollout a pass), GRPO on 288 (nine of 32); the rest is left out."""
    train = write_rows(data_dir / "t300.jsonl", (launcher.sample_rows() * 50)[:300])
    for algo, kept in (("ppo", 256), ("grpo", 288)):
        result = run_script(
            "train_ppo_medqa.sh", "--dry-run", "--algo", algo, "--train-data", str(train), "--eval-data", "none"
        )
        assert result.returncode == 0, result.stderr
        assert flag_value(printed_command(result.stdout), "--data.max_samples") == str(kept)
        assert f"{300 - kept} prompts (the file's last) are left out so that every rollout is whole" in result.stdout
    forced = run_script(
        "train_ppo_medqa.sh",
        "--dry-run",
        "--train-data",
        str(train),
        "--eval-data",
        "none",
        "--",
        "--data.max_samples",
        "300",
    )
    assert forced.returncode == 1 and "Pass -- --data.max_samples 256" in forced.stderr


@pytest.mark.integration
def test_plan_sets_eval_and_checkpoint_intervals_per_algo(data_dir: Path) -> None:
    """Eval generates in rounds of the rollout batch, so GRPO's 32-prompt rounds make an eval of 100 dev
    prompts cost 4 rounds and PPO's 1: at the default 10% share, every 40 and every 10 steps. Both runs
    have 16 steps (512 prompts: 2 rollouts x 8 passes, 16 x 1), so with --evals 1 that is PPO's interval;
    GRPO's would make no eval, so it evaluates the first 32 dev prompts (one round, 6% of 16) every 16 steps.
    With the default --evals 5, both evaluate every 3 steps: PPO the whole file, GRPO those 32 prompts.
    --checkpoints 8 is exactly 8 saves: every 2 steps."""
    dev = write_rows(data_dir / "dev.jsonl", (launcher.sample_rows() * 17)[:100])
    subset = str(data_dir / "run" / "eval_subset.jsonl")
    cases = [("ppo", "1", "10", str(dev)), ("grpo", "1", "16", subset), ("ppo", "5", "3", str(dev))]
    for algo, evals, eval_steps, eval_file in cases + [("grpo", "5", "3", subset)]:
        result = run_script(
            "train_ppo_medqa.sh",
            "--dry-run",
            "--algo",
            algo,
            "--train-data",
            str(data_dir / "train.jsonl"),
            "--eval-data",
            str(dev),
            "--output-dir",
            str(data_dir / "run"),
            "--checkpoints",
            "8",
            "--evals",
            evals,
        )
        assert result.returncode == 0, result.stderr
        argv = printed_command(result.stdout)
        assert flag_value(argv, "--eval.steps") == eval_steps and flag_value(argv, "--ckpt.save_steps") == "2"
        assert flag_value(argv, "--eval.dataset") == eval_file
        assert "--data.max_samples" not in argv and flag_value(argv, "--ckpt.best_metric_key") == "none"
        assert "16 steps" in result.stdout and "checkpoints: every 2 steps = 8;" in result.stdout
        assert ("a fixed subset: the first 32 of the 100 dev prompts" in result.stdout) == (eval_file == subset)
    assert not (data_dir / "run").exists()  # the subset is written when the run starts, not by a dry run
    explicit = run_script(
        "train_ppo_medqa.sh",
        "--dry-run",
        "--train-data",
        str(data_dir / "train.jsonl"),
        "--eval-data",
        str(dev),
        "--checkpoints",
        "4",
        "--",
        "--eval.steps",
        "6",
    )
    argv = printed_command(explicit.stdout)
    assert flag_value(argv, "--eval.steps") == "6" and flag_value(argv, "--ckpt.save_steps") == "4"
    assert (
        "= 2 eval(s)" in explicit.stdout
        and "fewer than --evals 5: --eval.steps 6 of the command, in 16 steps" in explicit.stdout
    )
    none = run_script(
        "train_ppo_medqa.sh", "--dry-run", "--train-data", str(data_dir / "train.jsonl"), "--eval-data", "none"
    )
    assert "periodic eval: none (no eval data)" in none.stdout


@pytest.mark.integration
def test_periodic_eval_refuses_a_test_split_named_by_its_summary(data_dir: Path) -> None:
    """MMLU-Pro health is MMLU-Pro's test split whatever the file is called; prepare.py's summary says so."""
    health = write_rows(data_dir / "health.jsonl", launcher.sample_rows())
    (data_dir / "health.summary.json").write_text(json.dumps({"input": "TIGER-Lab/MMLU-Pro[test]"}))
    result = run_script(
        "train_ppo_medqa.sh", "--dry-run", "--train-data", str(data_dir / "train.jsonl"), "--eval-data", str(health)
    )
    assert result.returncode == 1 and "is a test set (TIGER-Lab/MMLU-Pro[test])" in result.stderr


def test_model_parameters_counts_what_the_weights_hold(tiny_qwen2: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    assert model_parameters(str(tiny_qwen2)) == sum(parameter.numel() for parameter in model.parameters())


def test_plan_sizes_checkpoints_from_parameters_and_the_save_schedule() -> None:
    """1B parameters, PPO (actor and critic saved), 40 steps, a save every 10 and an eval every 10:
    4 saves; DeepSpeed keeps 2 sets of 2 x 14 GB; 4 Hugging Face copies of 2 GB; the final model 2 GB.
    With OpenRLHF's best-checkpoint saving on, one more DeepSpeed set and up to 4 more copies."""
    flags = [
        "--actor.model_name_or_path",
        "m",
        "--critic.model_name_or_path",
        "m",
        "--reward.remote_url",
        "r.py",
        "--rollout.batch_size",
        "8",
        "--train.batch_size",
        "8",
        "--rollout.micro_batch_size",
        "1",
        "--train.micro_batch_size",
        "1",
        "--train.num_episodes",
        "4",
        "--eval.dataset",
        "dev.jsonl",
        "--eval.steps",
        "10",
        "--ckpt.save_steps",
        "10",
        "--ckpt.max_num",
        "2",
        "--ckpt.save_hf",
    ]
    args = parse_openrlhf_args(launcher.PPO_MODULE, flags + ["--ckpt.best_metric_key", "none"])
    plan = ppo_plan(args, train_rows=80, eval_rows=50, parameters=10**9)
    assert plan["steps"] == 40 and plan["checkpoints"]["count"] == 4 and plan["eval"]["evals"] == 4
    assert plan["disk_bytes"] == {
        "deepspeed_set": 28 * 10**9,
        "hf_copy": 2 * 10**9,
        "total": (2 * 28 + 4 * 2 + 2) * 10**9,
    }
    assert plan["eval"]["rounds_each"] == 7 and plan["eval"]["share_of_generation"] == 4 * 7 / 40
    best = ppo_plan(parse_openrlhf_args(launcher.PPO_MODULE, flags), 80, 50, 10**9)
    assert best["disk_bytes"]["total"] == (3 * 28 + 8 * 2 + 2) * 10**9


def test_trained_models_count_gpus_and_ranks_once_for_every_check() -> None:
    """PPO's actor and critic, each on its own GPUs; ranks are GPUs / (ring attention x tensor parallel), and a
    GPU count that is not a whole number of ranks is refused (OpenRLHF's device mesh would fail on the GPUs)."""
    flags = ["--actor.model_name_or_path", "m", "--reward.remote_url", "r.py", "--actor.num_nodes", "2"]
    flags += ["--actor.num_gpus_per_node", "4", "--critic.model_name_or_path", "m", "--critic.num_gpus_per_node", "2"]
    args = parse_openrlhf_args(launcher.PPO_MODULE, flags)
    assert trained_models(args) == {"actor": (8, 8), "critic": (2, 2)}
    assert trained_models(args, sft_gpus=3) == {"model": (3, 3)}
    args.ds.tensor_parallel_size = 2
    assert trained_models(args) == {"actor": (8, 4), "critic": (2, 1)}
    with pytest.raises(launcher.LaunchError, match=r"3 GPUs \(model\) are not a whole number of ranks"):
        check_batch_sizes(args, sft_gpus=3)


@pytest.mark.integration
def test_dry_run_rejects_a_label_that_is_not_an_option(data_dir: Path) -> None:
    rows = launcher.sample_rows()
    rows[2]["label"] = "J"
    (data_dir / "bad.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_script(
        "train_ppo_medqa.sh", "--dry-run", "--train-data", str(data_dir / "bad.jsonl"), "--eval-data", "none"
    )
    assert result.returncode == 1
    assert "row 2: label J is not one of the prompt's options" in result.stderr


@pytest.mark.integration
def test_output_folder_is_never_reused_silently(data_dir: Path) -> None:
    run = data_dir / "run"
    run.mkdir()
    (run / "ckpt").mkdir()
    common = [
        "--dry-run",
        "--train-data",
        str(data_dir / "train.jsonl"),
        "--eval-data",
        "none",
        "--output-dir",
        str(run),
    ]
    taken = run_script("train_ppo_medqa.sh", *common)
    assert taken.returncode == 1 and "exists and is not empty" in taken.stderr
    no_manifest = run_script("train_ppo_medqa.sh", *common, "--resume")
    assert no_manifest.returncode == 1 and "manifest.json not found" in no_manifest.stderr
    (run / "manifest.json").write_text("{}")
    resumed = run_script("train_ppo_medqa.sh", *common, "--resume")
    assert resumed.returncode == 1 and "manifest.json is not a manifest the launcher wrote" in resumed.stderr
    assert "--ckpt.load_enable" in printed_command(resumed.stdout)  # tests/test_launch_ckpt.py resumes


def test_errors_follow_the_command_line_convention(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A flag combination refused before any input is read: exit 2 after the usage line; bad input: exit 1.
    Both print one line `med-rlvr launch: error: ...`."""
    from med_rlvr_plugin.launcher.__main__ import main

    with pytest.raises(SystemExit) as usage:
        main(["ppo", "--output-dir", str(tmp_path / "run"), "--run-name", "r", "--checkpoints", "0"])
    assert usage.value.code == 2
    assert "med-rlvr launch: error: --checkpoints must be at least 1" in capsys.readouterr().err
    assert main(["sft", "--output-dir", "relative/run", "--run-name", "r", "--num-gpus", "1"]) == 1
    assert capsys.readouterr().err.startswith("med-rlvr launch: error: --output-dir relative/run must be absolute")
    assert not (tmp_path / "run").exists()


def test_write_manifest_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "run" / "manifest.json"
    write_manifest(path, {"run_name": "first"})
    with pytest.raises(launcher.LaunchError, match="exists"):
        write_manifest(path, {"run_name": "second"})
    assert json.loads(path.read_text()) == {"run_name": "first"}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temporary file left behind


def test_code_hash_covers_every_file_of_the_package(tmp_path: Path) -> None:
    """The manifest's code hash changes with any file of the package, in a sub-package or a data file as
    much as at the top; Python's caches do not change it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "med_rlvr_plugin", checkout / "med_rlvr_plugin", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "launch", checkout / "launch")
    before = plugin_files_sha256(checkout)
    cache = checkout / "med_rlvr_plugin" / "launcher" / "__pycache__"
    cache.mkdir()
    (cache / "plan.cpython-311.pyc").write_bytes(b"compiled")
    assert plugin_files_sha256(checkout) == before
    for name in ("launcher/plan.py", "launcher/sample.jsonl", "lm_eval_tasks/medqa.yaml", "cli.py"):
        path = checkout / "med_rlvr_plugin" / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert plugin_files_sha256(checkout) != before, name
        path.write_bytes(original)
    assert plugin_files_sha256(checkout) == before
    (checkout / "med_rlvr_plugin" / "launcher" / "deeper").mkdir()
    (checkout / "med_rlvr_plugin" / "launcher" / "deeper" / "new.py").write_text("")
    assert plugin_files_sha256(checkout) != before


def test_openrlhf_ray_env_is_what_openrlhf_would_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's ray.init replaces OpenRLHF's; it must carry the same variables, read from its source."""
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    source = Path(importlib.util.find_spec(launcher.PPO_MODULE).origin).read_text()
    env = openrlhf_ray_env()
    assert set(env) == {"TOKENIZERS_PARALLELISM", "NCCL_DEBUG", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"}
    assert all(f'"{name}"' in source for name in env)
    assert env["NCCL_DEBUG"] == "INFO"


def test_ray_init_env_leaves_out_what_the_jobs_runtime_env_sets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Ray's own merge (`_merge_runtime_env`, as `ray.init` calls it in a job's driver) refuses the driver's
    env vars as they were, accepts what the launcher passes, and gives every actor the job's values."""
    from ray.runtime_env.runtime_env import _merge_runtime_env

    job_env = {"WANDB_API_KEY": "secret-key", "NCCL_DEBUG": "INFO", "MED_RLVR_REWARD_SCHEME": "penalized"}
    job = {"runtime_env": {"env_vars": job_env, "working_dir": "gcs://_ray_pkg_0.zip"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    wanted = {**job_env, "TOKENIZERS_PARALLELISM": "true", "MED_RLVR_FORMAT": "strict"}
    assert _merge_runtime_env(job["runtime_env"], {"env_vars": wanted}) is None  # today's ValueError in ray.init
    passed = ray_init_env(wanted)
    assert passed == {"TOKENIZERS_PARALLELISM": "true", "MED_RLVR_FORMAT": "strict"}
    assert _merge_runtime_env(job["runtime_env"], {"env_vars": passed})["env_vars"] == wanted
    assert "job's runtime env's MED_RLVR_REWARD_SCHEME, NCCL_DEBUG, WANDB_API_KEY" in capsys.readouterr().out
    with pytest.raises(LaunchError, match="sets MED_RLVR_REWARD_SCHEME='penalized', this driver 'neutral'"):
        ray_init_env({"MED_RLVR_REWARD_SCHEME": "neutral"})
    with pytest.raises(LaunchError, match="sets WANDB_API_KEY, and Ray would give every actor") as error:
        ray_init_env({"WANDB_API_KEY": "another-key"})
    assert "secret-key" not in str(error.value) and "another-key" not in str(error.value)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")  # not a job (ray.init on a cluster by hand): all of it
    assert ray_init_env(wanted) == wanted


@pytest.mark.integration
def test_sft_dry_run(data_dir: Path) -> None:
    sft = write_rows(data_dir / "sft.jsonl", (launcher.sample_rows(sft=True) * 22)[:128])  # two batches of 64
    result = run_script(
        "train_sft_medqa.sh",
        "--dry-run",
        "--train-data",
        str(sft),
        "--gpus-per-node",
        "4",
        "--tensorboard",
        "--checkpoints",
        "6",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    argv = printed_command(result.stdout)
    assert argv[:5] == ["deepspeed", "--num_gpus", "4", "--module", launcher.SFT_MODULE]
    assert flag_value(argv, "--data.output_key") == "response"
    assert flag_value(argv, "--data.input_template") == "{}"  # the prompts are already rendered
    # 128 rows on 4 GPUs: 8 micro-batches of 4 per rank, 4 per optimizer step of 64 -> 2 steps an epoch, 6
    # in 3 epochs; 6 checkpoints over 6 steps is one every step. Without it OpenRLHF's SFT saves nothing.
    assert flag_value(argv, "--ckpt.save_steps") == "1" and "6 optimizer steps" in result.stdout
    odd = run_script("train_sft_medqa.sh", "--dry-run", "--train-data", str(sft), "--gpus-per-node", "3")
    assert (
        odd.returncode == 1
        and "--train.batch_size 64 is not a multiple of --train.micro_batch_size 4 x 3 GPUs" in odd.stderr
    )

    rows = (launcher.sample_rows(sft=True) * 22)[:128]
    rows[1]["response"] = " <think> thinking </think> <answer>A</answer>"  # question 2's gold is C
    sft.write_text("".join(json.dumps(row) + "\n" for row in rows))
    wrong = run_script("train_sft_medqa.sh", "--dry-run", "--train-data", str(sft))
    assert wrong.returncode == 1 and "row 1: the SFT target is not a well-formed correct answer" in wrong.stderr


@pytest.mark.integration
def test_sft_run_without_gpus_stops_before_writing_anything(data_dir: Path) -> None:
    """Not a dry run, on this CPU machine: the GPU check comes before the manifest and before deepspeed."""
    sft = write_rows(data_dir / "sft.jsonl", (launcher.sample_rows(sft=True) * 22)[:128])
    run = data_dir / "sft-run"
    result = run_script(
        "train_sft_medqa.sh", "--train-data", str(sft), "--gpus-per-node", "2", "--output-dir", str(run)
    )
    assert result.returncode == 1 and "--gpus-per-node 2 but this node has 0 GPUs visible" in result.stderr
    assert not run.exists()


@pytest.mark.integration
def test_cuda_graphs_flag_drops_eager_mode(data_dir: Path) -> None:
    common = ["--dry-run", "--train-data", str(data_dir / "train.jsonl"), "--eval-data", "none"]
    assert "--vllm.enforce_eager" in printed_command(run_script("train_ppo_medqa.sh", *common).stdout)
    assert "--vllm.enforce_eager" not in printed_command(
        run_script("train_ppo_medqa.sh", *common, "--cuda-graphs").stdout
    )


@pytest.mark.integration
def test_ablation_dry_run_gives_each_variant_its_own_run(data_dir: Path) -> None:
    result = run_script(
        "ablate_reward_schemes.sh",
        "--dry-run",
        "--variants",
        "neutral,penalized,strict,leak",
        "--prefix",
        "abl",
        "--output-root",
        str(data_dir / "runs"),
        "--",
        "--algo",
        "grpo",
        "--train-data",
        str(data_dir / "train.jsonl"),
        "--eval-data",
        "none",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    submits = [line for line in result.stdout.splitlines() if line.startswith("ablate_reward_schemes.sh: ")]
    assert len(submits) == 4
    for variant, submit in zip(["neutral", "penalized", "strict", "leak"], submits, strict=True):
        assert f"--submission-id abl-{variant} " in submit
        assert f"--output-dir {data_dir / 'runs' / f'abl-{variant}'} " in submit
    commands = result.stdout.split("OpenRLHF accepts the command:\n")[1:]
    assert len(commands) == 4 and all("--algo.advantage.estimator group_norm" in command for command in commands)
    schemes = re.findall(
        r"reward configuration for every Ray actor: .*'MED_RLVR_REWARD_SCHEME': '(\w+)'", result.stdout
    )
    assert schemes == ["neutral", "penalized", "neutral", "neutral"]
    assert "'MED_RLVR_FORMAT': 'strict'" in commands[2] and "'MED_RLVR_LEAK_PENALTY': '0.5'" in commands[3]


def test_builtin_sample_is_rendered_by_the_data_module() -> None:
    from med_rlvr_plugin.prompts import render_prompt

    for question, row in zip(launcher.SAMPLE_QUESTIONS, launcher.sample_rows(), strict=True):
        assert row["prompt"] == render_prompt(question["question"], list(question["options"].values()))
        assert row["label"] == question["answer_idx"] and row["label"] in parse_options(row["prompt"])
