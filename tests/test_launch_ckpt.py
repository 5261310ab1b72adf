"""Checkpoints against DeepSpeed's and OpenRLHF's own code: their bytes, their count, their rotation.

A real DeepSpeed engine (a small model, ZeRO on DeepSpeed's CPU accelerator, gloo) saves checkpoints
through OpenRLHF 0.11.2's `SFTTrainer.save_logs_and_checkpoints` and `DeepspeedStrategy.save_ckpt` with the
flags the launcher plans. Only `save_model`, the Hugging Face export of a transformers model, is stood in
for by a folder of its name: the engine's model is not one. Each case runs in a subprocess (~10 s).
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from med_rlvr_plugin import launcher
from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.plan import deepspeed_bytes_per_parameter, eval_schedule, save_interval
from tests.conftest import REPO, free_port
from tests.test_launch import flag_value, printed_command, run_script, write_rows

ENGINE = r"""
import json, os, sys
import deepspeed, torch

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
deepspeed.init_distributed(dist_backend="gloo")


def engine(zero_stage):
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256))
    parameters = sum(parameter.numel() for parameter in model.parameters())  # before ZeRO-3 partitions them
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": 1,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": True},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    }
    model_engine = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)[0]
    model_engine.backward(model_engine(torch.randn(1, 256, dtype=torch.bfloat16)).float().sum())
    model_engine.step()  # Adam's moments exist from the first step on
    return model_engine, parameters
"""

BYTES = r"""
model_engine, parameters = engine(int(sys.argv[2]))
model_engine.save_checkpoint(sys.argv[3], tag="t")
folder = os.path.join(sys.argv[3], "t")
print(json.dumps(sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)) / parameters))
"""

# The SFT save sequence: every optimizer step of the run goes through the trainer's save hook, as `fit`
# calls it. The spy records, before each DeepSpeed write, whether `latest` names a folder that exists: a
# crash during that write would leave exactly that to resume from.
SFT_SAVES = r"""
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.launcher.openrlhf_cli import SFT_MODULE, parse_openrlhf_args
from openrlhf.trainer.sft_trainer import SFTTrainer
from openrlhf.utils.deepspeed.deepspeed import DeepspeedStrategy

torch.cuda.synchronize = lambda *args: None  # save_ckpt's barrier syncs CUDA too; there is none here
args = parse_openrlhf_args(SFT_MODULE, json.loads(sys.argv[2]))
steps, ckpt = int(sys.argv[3]), Path(args.ckpt.path)
strategy = DeepspeedStrategy(zero_stage=args.ds.zero_stage, args=args)
strategy.save_model = lambda model, tokenizer, path: Path(path).mkdir(parents=True)
model_engine = engine(args.ds.zero_stage)[0]
whole, save = [], model_engine.save_checkpoint


def spied_save(save_dir, tag=None, **kwargs):
    latest = Path(save_dir, "latest")
    if latest.exists():
        whole.append((ckpt / latest.read_text().strip()).is_dir())
    return save(save_dir, tag=tag, **kwargs)


model_engine.save_checkpoint = spied_save
trainer = SFTTrainer.__new__(SFTTrainer)
trainer.strategy, trainer.model, trainer.tokenizer = strategy, SimpleNamespace(model=model_engine), None
trainer.disable_ds_ckpt, trainer.save_hf_ckpt = args.ckpt.disable_ds, args.ckpt.save_hf
trainer.eval_dataloader, trainer._wandb, trainer._tensorboard = None, None, None
args.eval.steps = steps  # what `fit` sets for -1; there is no eval data here
for step in range(1, steps + 1):
    trainer.save_logs_and_checkpoints(args, step, None, {}, {"consumed_samples": step})
loaded, states = strategy.load_ckpt(model_engine, str(ckpt))
folders = sorted(path.name for path in ckpt.iterdir() if path.is_dir())
loaded = {"loaded": Path(loaded).parent.name, "consumed": states["consumed_samples"]}
print(json.dumps({"folders": folders, "whole": whole, **loaded}))
"""


def deepspeed_on_cpu(script: str, *args: str, cpu_standins: Path) -> object:
    env = os.environ | {"DS_ACCELERATOR": "cpu", "PYTHONPATH": f"{cpu_standins}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [sys.executable, "-c", ENGINE + script, str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.integration  # DeepSpeed or the launch scripts in subprocesses
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_disk_estimate_is_what_deepspeed_writes(zero_stage: int, cpu_standins: Path, tmp_path: Path) -> None:
    """DeepSpeed's checkpoint of a bf16 model under Adam: 12 bytes a parameter under ZeRO-3 (fp32 master and
    two moments), 14 below it (the bf16 weights too); the few kB of metadata are the rest."""
    measured = deepspeed_on_cpu(BYTES, str(zero_stage), str(tmp_path), cpu_standins=cpu_standins)
    assert deepspeed_bytes_per_parameter(zero_stage) == pytest.approx(measured, rel=0.01)


def sft_dry_run(data_dir: Path, *flags: str):
    """640 SFT rows on 2 GPUs: 80 micro-batches of 4 a rank an epoch, 3 epochs, 8 to an optimizer step of
    64: 30 steps."""
    sft = write_rows(data_dir / "sft.jsonl", (launcher.sample_rows(sft=True) * 107)[:640])
    return run_script(
        "train_sft_medqa.sh",
        "--dry-run",
        "--train-data",
        str(sft),
        "--gpus-per-node",
        "2",
        "--output-dir",
        str(data_dir / "run"),
        *flags,
    )


@pytest.mark.integration  # DeepSpeed or the launch scripts in subprocesses
def test_sft_keeps_every_hf_copy_and_always_a_whole_state(cpu_standins: Path, tmp_path: Path) -> None:
    """The launcher's SFT flags, run through OpenRLHF's save hook and rotation: exactly the 10 checkpoints
    asked for, each with its Hugging Face copy; before every write the state `latest` names exists; a
    resume loads the last one. The script's former --ckpt.max_num 2, run the same way, keeps neither."""
    result = sft_dry_run(tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    argv = printed_command(result.stdout)
    assert flag_value(argv, "--ckpt.save_steps") == "3" and flag_value(argv, "--ckpt.max_num") == "20"
    assert "30 optimizer steps, a checkpoint every 3 = 10" in result.stdout
    command = argv[argv.index(launcher.SFT_MODULE) + 1 :] + ["--ckpt.path", str(tmp_path / "ckpt")]
    saved = deepspeed_on_cpu(SFT_SAVES, json.dumps(command), "30", cpu_standins=cpu_standins)
    tags = [f"global_step{step}" for step in range(3, 31, 3)]
    assert saved["folders"] == sorted(tags + [f"{tag}_hf" for tag in tags])
    assert saved["whole"] == [True] * 9 and saved["loaded"] == "global_step30" and saved["consumed"] == 30

    before = command + ["--ckpt.max_num", "2", "--ckpt.path", str(tmp_path / "before")]
    lost = deepspeed_on_cpu(SFT_SAVES, json.dumps(before), "30", cpu_standins=cpu_standins)
    assert lost["folders"] == ["global_step27_hf", "global_step30", "global_step30_hf"]
    assert False in lost["whole"]


@pytest.mark.integration  # DeepSpeed or the launch scripts in subprocesses
def test_sft_refuses_a_rotation_that_deletes_what_must_stay(tmp_path: Path) -> None:
    refused = sft_dry_run(tmp_path, "--", "--ckpt.max_num", "2")
    assert refused.returncode == 1
    assert "--ckpt.max_num 2 makes OpenRLHF delete the oldest Hugging Face copies" in refused.stderr
    assert "use --ckpt.max_num 19 or more" in refused.stderr


def test_checkpoint_count_is_exact_or_refused() -> None:
    """OpenRLHF saves at every multiple of --ckpt.save_steps (both trainers): the interval gives exactly the
    count asked for, or the launcher names the counts the run can have; unasked, 10 or the most below."""
    for steps in range(1, 400):
        for checkpoints in range(1, 25):
            try:
                interval = save_interval(steps, checkpoints)
            except LaunchError as error:
                assert not any(steps // every == checkpoints for every in range(1, steps + 1)), (steps, checkpoints)
                assert "pass --checkpoints" in str(error)
            else:
                assert sum(step % interval == 0 for step in range(1, steps + 1)) == checkpoints
        saves = steps // save_interval(steps, None)
        possible = {steps // every for every in range(1, steps + 1)}
        assert saves == max(count for count in possible if count <= 10)


def recorded_grpo_run(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A GRPO run's folder holding the manifest the launcher writes for it: the dry run's OpenRLHF command
    and reward configuration, recorded by `build_manifest` as the real launch records them."""
    from med_rlvr_plugin.launcher.manifest import build_manifest, write_manifest
    from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args

    run, train = data_dir / "run", str(data_dir / "train.jsonl")
    dry = run_script("train_ppo_medqa.sh", "--dry-run", "--algo", "grpo", "--train-data", train, "--eval-data", "none")
    assert dry.returncode == 0, dry.stderr
    reward = re.search(r"reward configuration for every Ray actor: (\{.*\})", dry.stdout).group(1)
    for name, value in ast.literal_eval(reward).items():
        monkeypatch.setenv(name, value)
    command = printed_command(dry.stdout)
    args = parse_openrlhf_args(launcher.PPO_MODULE, command[3:])
    options = SimpleNamespace(kind="ppo", run_name="run", resume=False, launch_command="", reward_server=False)
    data = {"train": {"files": train, "rows": 512}}
    run.mkdir()
    write_manifest(run / "manifest.json", build_manifest(options, command, args, data, {}))
    return run


@pytest.mark.integration  # DeepSpeed or the launch scripts in subprocesses
def test_resume_continues_the_same_run_or_lists_each_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GRPO run resumed as PPO with the penalized reward and other data: refused, each difference named;
    --allow-changes resumes and prints them. The same command resumes, from step 0 before the first save,
    from the state DeepSpeed's `latest` names after it, and not at all when that state is gone."""
    data_dir = tmp_path
    write_rows(data_dir / "train.jsonl", (launcher.sample_rows() * 86)[:512])  # 16 GRPO rollouts, 2 PPO ones
    write_rows(data_dir / "other.jsonl", (launcher.sample_rows() * 86)[1:513])
    run = recorded_grpo_run(data_dir, monkeypatch)
    common = ["--dry-run", "--eval-data", "none", "--output-dir", str(run), "--resume"]
    changed = [*common, "--algo", "ppo", "--reward-scheme", "penalized", "--train-data", str(data_dir / "other.jsonl")]
    refused = run_script("train_ppo_medqa.sh", *changed)
    assert refused.returncode == 1, refused.stdout
    assert "--resume: this command is not the run in" in refused.stderr
    for difference in (
        "algorithm: 'group_norm' then, 'gae' now",
        "'MED_RLVR_REWARD_SCHEME': 'neutral'",
        "'MED_RLVR_REWARD_SCHEME': 'penalized'",
        "train data sha256",
        "--rollout.batch_size: 32 then, 256 now",
    ):
        assert difference in refused.stderr
    allowed = run_script("train_ppo_medqa.sh", *changed, "--allow-changes")
    assert allowed.returncode == 0, allowed.stderr
    assert "resuming with a change: algorithm: 'group_norm' then, 'gae' now" in allowed.stdout

    same = [*common, "--algo", "grpo", "--train-data", str(data_dir / "train.jsonl"), "--rollout-samples", "0.1"]
    before_first_save = run_script("train_ppo_medqa.sh", *same)
    assert before_first_save.returncode == 0, before_first_save.stderr
    assert "resuming with a change" not in before_first_save.stdout  # recording rollouts is not the reward
    assert "(the run stopped before its first save): it starts from step 0" in before_first_save.stdout
    states = run / "ckpt" / "_actor"
    states.mkdir(parents=True)
    (states / "latest").write_text("global_step60")
    gone = run_script("train_ppo_medqa.sh", *same)
    assert gone.returncode == 1 and "latest names global_step60, which is not in" in gone.stderr
    (states / "global_step60").mkdir()
    assert f"it resumes from {states / 'global_step60'}" in run_script("train_ppo_medqa.sh", *same).stdout


@pytest.mark.parametrize(
    ("steps", "dev", "prompts", "schedule"),
    [
        (302, 500, 32, (60, 192)),  # GRPO on the prepared files: one eval of all 500 (at step 160) before
        (302, 1272, 32, (60, 192)),  # a larger dev file: none before, with no reason given
        (296, 500, 256, (20, 500)),  # PPO: 2 rounds an eval, every 20 steps is 14 evals of the whole file
        (3, 500, 32, (1, 32)),  # fewer steps than evals: one at every step
    ],
)
def test_group_methods_get_a_dev_curve(steps: int, dev: int, prompts: int, schedule: tuple[int, int]) -> None:
    """At least --evals (5) evals within --eval-share (10%) of training's generation rounds where one round
    a time allows it: a fixed subset of whole rounds when the whole dev file would cost more."""
    every, prompts_each = eval_schedule(steps, dev, prompts, share=0.1, wanted=5)
    assert (every, prompts_each) == schedule
    assert steps // every >= min(5, steps)
    if steps >= 10 * 5:
        assert steps // every * -(-prompts_each // prompts) <= 0.1 * steps + steps // every


def test_ppo_refuses_a_rotation_that_leaves_no_whole_state() -> None:
    """PPO's DeepSpeed states rotate alone (ckpt.path/_actor, _critic): 2 kept is enough, 1 deletes the last
    state before the next is written."""
    from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args
    from med_rlvr_plugin.launcher.plan import ppo_plan

    flags = ["--actor.model_name_or_path", "m", "--reward.remote_url", "r.py", "--rollout.batch_size", "8"]
    flags += ["--train.batch_size", "8", "--rollout.micro_batch_size", "1", "--train.micro_batch_size", "1"]
    flags += ["--ckpt.save_steps", "2"]
    kept = ppo_plan(parse_openrlhf_args(launcher.PPO_MODULE, flags + ["--ckpt.max_num", "2"]), 80, 0, None)
    assert kept["checkpoints"] == {"every": 2, "count": 5, "deepspeed_kept": 2}
    with pytest.raises(LaunchError, match="--ckpt.max_num 1 makes OpenRLHF delete the last whole state"):
        ppo_plan(parse_openrlhf_args(launcher.PPO_MODULE, flags + ["--ckpt.max_num", "1"]), 80, 0, None)
