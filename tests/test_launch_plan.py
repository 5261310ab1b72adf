"""The run plan against OpenRLHF's own code: its batch splitter, its advantage estimators, the install order.

The launcher predicts what OpenRLHF 0.11.2 will do with a rollout (docs/launch.md, "Run plan"); these tests
run the installed OpenRLHF code that does it and compare.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from med_rlvr_plugin import launcher
from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args
from med_rlvr_plugin.launcher.plan import check_batch_sizes, model_parameters, ppo_plan, rank_shares

pytestmark = pytest.mark.integration  # OpenRLHF's splitter and advantages run on Ray in a subprocess

REPO = Path(__file__).resolve().parent.parent
# The script's rollout per --algo: (prompts, samples per prompt); tests/test_launch.py checks the script
# prints these. Its micro batches: rollout 8, train 4; its train batch 128. The tests also try a rollout
# micro batch that does not divide the rollout, and a train batch that does not divide a rank's share.
ALGOS = {"ppo": (256, 1), "grpo": (32, 8), "reinforce_baseline": (32, 8)}
GPU_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
ROLLOUT_MICRO_BATCHES, TRAIN_BATCHES = (8, 12), (128, 96)


def script_args(algo: str, gpus: int, rollout_micro: int = 8, train_batch: int = 128) -> list[str]:
    """The PPO script's batch flags for `algo` on one node of `gpus` GPUs, as OpenRLHF arguments."""
    prompts, per_prompt = ALGOS[algo]
    critic = (
        ["--critic.model_name_or_path", "critic", "--critic.num_gpus_per_node", str(gpus)] if algo == "ppo" else []
    )
    return [
        "--actor.model_name_or_path",
        "model",
        "--actor.num_gpus_per_node",
        str(gpus),
        "--ref.num_gpus_per_node",
        str(gpus),
        "--rollout.batch_size",
        str(prompts),
        "--rollout.n_samples_per_prompt",
        str(per_prompt),
        "--rollout.micro_batch_size",
        str(rollout_micro),
        "--train.batch_size",
        str(train_batch),
        "--train.micro_batch_size",
        "4",
        "--reward.remote_url",
        "reward.py",
        *critic,
    ] + (["--algo.advantage.estimator", "group_norm"] if algo != "ppo" else [])


SPLITTER = r"""
import json, sys, ray
from openrlhf.trainer.ray.launcher import RayActorGroup

class Recorder:  # stands for a model actor: the splitter only slices the batch and hands each rank a chunk
    def __init__(self, received):
        self.execute_batch, self.received = self, received

    def remote(self, method_name, chunk_ref, start, end):
        self.received.append(sum(ray.get(chunk_ref)["experience"][start:end]))

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
results = []
for micro_batches, ranks in json.loads(sys.argv[1]):
    received = []
    group = object.__new__(RayActorGroup)
    group._actor_handlers, group.duplicate_actors = [Recorder(received) for _ in range(ranks)], 1
    try:
        group.async_run_method_batch(method_name="append", experience=micro_batches)
        results.append(received)
    except ValueError as error:
        results.append(str(error))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def openrlhf_splits(cpu_standins: Path) -> dict:
    """OpenRLHF's `RayActorGroup.async_run_method_batch` on a real local Ray, for every algo's rollout (as
    micro-batches of 8 samples) and cluster size, plus the pass-end rollouts the plan prevents. The value is
    the samples each rank receives, or OpenRLHF's error."""
    samples = {prompts * per_prompt for prompts, per_prompt in ALGOS.values()}
    cases = [
        ([min(micro, total - start) for start in range(0, total, micro)], gpus)
        for total in samples
        for micro in ROLLOUT_MICRO_BATCHES
        for gpus in GPU_COUNTS
    ]
    cases += [([8] * 24 + [2], 8), ([8, 8], 8)]  # 194 of 256 prompts; GRPO's 2 prompts x 8, on 8 GPUs
    result = subprocess.run(
        [sys.executable, "-c", SPLITTER, json.dumps(cases)],
        env=os.environ | {"PYTHONPATH": f"{cpu_standins}{os.pathsep}{REPO}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    splits = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        (sum(micro_batches), len(micro_batches), gpus): split
        for (micro_batches, gpus), split in zip(cases, splits, strict=True)
    }


@pytest.mark.parametrize("algo", ALGOS)
def test_plan_accepts_exactly_the_even_splits_of_openrlhf(algo: str, openrlhf_splits: dict) -> None:
    """For every cluster size and batch shape: the plan accepts a layout only if OpenRLHF's splitter gives
    every rank the same whole number of optimizer steps, and its predicted shares are the splitter's."""
    prompts, per_prompt = ALGOS[algo]
    samples = prompts * per_prompt
    accepted = set()
    for gpus in GPU_COUNTS:
        for micro in ROLLOUT_MICRO_BATCHES:
            real = openrlhf_splits[samples, -(-samples // micro), gpus]  # a list, or "Insufficient batch size"
            for train_batch in TRAIN_BATCHES:
                try:
                    args = parse_openrlhf_args(launcher.PPO_MODULE, script_args(algo, gpus, micro, train_batch))
                    check_batch_sizes(args)
                    plan = ppo_plan(args, train_rows=prompts * 10, eval_rows=0, parameters=None)
                except launcher.LaunchError:
                    plan = None
                # Samples a rank trains per optimizer step: DeepSpeed needs whole micro-batches of 4 in it.
                window = train_batch / gpus
                whole_steps = (
                    isinstance(real, list) and len(set(real)) == 1 and window % 4 == 0 and real[0] % window == 0
                )
                assert (plan is not None) == whole_steps, (gpus, micro, train_batch, real)
                if plan:
                    accepted.add((gpus, micro, train_batch))
                    assert plan["rank_samples"]["actor"] == real
    # The layouts docs/launch.md promises with the script's batches: 1 to 4 nodes of 8 GPUs for every --algo.
    assert {(8, 8, 128), (16, 8, 128), (32, 8, 128)} <= accepted
    # Batch arithmetic alone would accept these; only the split or the optimizer window rules them out.
    assert (8, 12, 128) not in accepted and (8, 8, 96) not in accepted


def test_rank_shares_of_a_short_rollout_are_uneven_like_openrlhf(openrlhf_splits: dict) -> None:
    """The pass-end rollouts the plan now prevents: PPO's 194 of 256 prompts, GRPO's 2 of 32, on 8 GPUs."""
    assert rank_shares(194, 8, 8) == openrlhf_splits[194, 25, 8] == [32, 32, 32, 32, 32, 32, 2, 0]
    assert "Insufficient batch size" in openrlhf_splits[16, 2, 8]
    with pytest.raises(launcher.LaunchError, match="Insufficient batch size"):
        rank_shares(16, 8, 8)


ADVANTAGES = r"""
import json, sys, torch
from med_rlvr_plugin.launcher import PPO_MODULE
from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

results = []
for flags, rewards, values, kl, kl_coef in json.loads(sys.argv[1]):
    args = parse_openrlhf_args(PPO_MODULE, ["--actor.model_name_or_path", "m", "--reward.remote_url", "r.py", *flags])
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args = type("S", (), {"args": args})(), args
    maker.advantage_estimator = args.algo.advantage.estimator
    maker.kl_ctl = FixedKLController(kl_coef)
    experiences = [
        Experience(rewards=torch.tensor([reward]), index=[i], kl=torch.tensor([kl[i]]),
                   values=torch.tensor([values[i]]), action_mask=torch.ones(1, len(kl[i]), dtype=torch.bool), info={})
        for i, reward in enumerate(rewards)
    ]
    advantages = maker.compute_advantages_and_returns(experiences)
    results.append([value for exp in advantages for value in exp.advantages[0].tolist()])
print(json.dumps(results))
"""


def penalized(neutral: list[float]) -> list[float]:
    """The penalized scheme's reward for the neutral one (+1 right, 0 wrong, -1 malformed)."""
    return [-1.0 if reward <= 0 else 1.0 for reward in neutral]


# Two prompts x 4 responses, 3 tokens each; per-token KL and critic values.
KL = [[0.02 * (i % 3), 0.01, 0.03 * (i % 2)] for i in range(8)]
NO_KL = [[0.0] * 3] * 8  # GRPO and REINFORCE++-baseline keep the KL as a loss term, out of the reward
VALUES = [[0.1 * (i % 4), 0.2, 0.3] for i in range(8)]
PENALIZED_VALUES = [[2 * value - 1 for value in row] for row in VALUES]  # a critic that learned the same transform
WELL_FORMED = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
WITH_MALFORMED = [1.0, 0.0, -1.0, 1.0, 0.0, 1.0, -1.0, 1.0]
GROUP_FLAGS = {
    "grpo": [
        "--algo.advantage.estimator",
        "group_norm",
        "--rollout.n_samples_per_prompt",
        "4",
        "--algo.kl.use_loss",
        "--algo.kl.estimator",
        "k3",
    ],
    "reinforce_baseline": [
        "--algo.advantage.estimator",
        "reinforce_baseline",
        "--rollout.n_samples_per_prompt",
        "4",
        "--algo.kl.use_loss",
        "--algo.kl.estimator",
        "k2",
    ],
}
GAE_FLAGS = ["--algo.advantage.estimator", "gae", "--algo.advantage.gamma", "1.0", "--algo.advantage.lambd", "0.95"]
ADVANTAGE_CASES = {
    **{
        (algo, scheme, batch): (flags, rewards if scheme == "neutral" else penalized(rewards), VALUES, NO_KL, 1e-3)
        for algo, flags in GROUP_FLAGS.items()
        for batch, rewards in (("well_formed", WELL_FORMED), ("with_malformed", WITH_MALFORMED))
        for scheme in ("neutral", "penalized")
    },
    ("ppo", "neutral", "half_kl"): (GAE_FLAGS, WELL_FORMED, VALUES, KL, 0.5e-3),
    ("ppo", "neutral", "full_kl"): (GAE_FLAGS, WELL_FORMED, VALUES, KL, 1e-3),
    ("ppo", "penalized", "full_kl"): (GAE_FLAGS, penalized(WELL_FORMED), PENALIZED_VALUES, KL, 1e-3),
}


@pytest.fixture(scope="module")
def advantages(cpu_standins: Path) -> dict:
    """OpenRLHF's own `compute_advantages_and_returns` on handmade one-token-per-step experiences, for each
    of ADVANTAGE_CASES (one process: importing OpenRLHF's trainer takes seconds)."""
    result = subprocess.run(
        [sys.executable, "-c", ADVANTAGES, json.dumps(list(ADVANTAGE_CASES.values()))],
        env=os.environ | {"PYTHONPATH": f"{cpu_standins}{os.pathsep}{REPO}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(zip(ADVANTAGE_CASES, json.loads(result.stdout.strip().splitlines()[-1]), strict=True))


@pytest.mark.parametrize("algo", GROUP_FLAGS)
def test_penalized_equals_neutral_for_group_baselines_unless_a_response_is_malformed(
    algo: str, advantages: dict
) -> None:
    """docs/launch.md's claim, on OpenRLHF's code: without malformed responses penalized = 2 x neutral - 1,
    and the group baseline and normalization make the advantages identical."""
    assert advantages[algo, "neutral", "well_formed"] == pytest.approx(
        advantages[algo, "penalized", "well_formed"], abs=1e-5
    )
    assert advantages[algo, "neutral", "with_malformed"] != pytest.approx(
        advantages[algo, "penalized", "with_malformed"], abs=1e-3
    )


def test_penalized_under_ppo_is_neutral_with_half_the_kl_weight(advantages: dict) -> None:
    """GAE with the KL in the reward, then whitening: penalized rewards (and a critic that learned the same
    transform of the values) give the advantages of neutral rewards with half the KL coefficient."""
    penalized_full_kl = advantages["ppo", "penalized", "full_kl"]
    assert penalized_full_kl == pytest.approx(advantages["ppo", "neutral", "half_kl"], abs=1e-5)
    assert penalized_full_kl != pytest.approx(advantages["ppo", "neutral", "full_kl"], abs=1e-5)


def test_parameter_count_of_the_default_model_without_the_hub() -> None:
    """Qwen2.5-3B by hand from its config: 36 layers of attention (q and o 2048x2048, k and v 2048x256, with
    q, k, v biases), MLP 3 x 2048 x 11008 and two norms, plus tied 151936 x 2048 embeddings and a norm."""
    layer = (2048 * 2048 + 2048) + 2 * (2048 * 256 + 256) + 2048 * 2048 + 3 * 2048 * 11008 + 2 * 2048
    expected = 36 * layer + 151936 * 2048 + 2048
    assert expected == 3_085_938_688  # "3.09B", as Qwen's model card says
    assert model_parameters("Qwen/Qwen2.5-3B") == expected
    assert model_parameters("no-such-org/no-such-model") is None


def test_setup_gpu_installs_torch_then_flash_attn_without_isolation_then_openrlhf() -> None:
    """`bash setup.sh gpu --print`: the order that works in a fresh venv, with the versions OpenRLHF pins."""
    from importlib.metadata import requires

    printed = subprocess.run(
        ["bash", "setup.sh", "gpu", "--print"], cwd=REPO, capture_output=True, text=True, check=True
    )
    commands = [shlex.split(line) for line in printed.stdout.splitlines()]
    installs = [" ".join(command[command.index("install") + 1 :]) for command in commands if "install" in command]
    torch_at = next(i for i, line in enumerate(installs) if "torch==" in line)
    flash_at = next(i for i, line in enumerate(installs) if "flash-attn==" in line)
    openrlhf_at = next(i for i, line in enumerate(installs) if ".[gpu" in line)
    assert torch_at < flash_at < openrlhf_at
    assert "--no-build-isolation" in installs[flash_at]
    pinned = {requirement.split(";")[0].strip() for requirement in requires("openrlhf")}
    assert installs[flash_at].split()[-1] in pinned  # flash-attn==2.8.3
    setup_cfg = (REPO / "setup.cfg").read_text()
    assert "openrlhf[vllm]==0.11.2" in setup_cfg and installs[torch_at].split()[-1] in setup_cfg  # torch==2.13.0
    # What flash-attn's setup.py imports at build time is installed before it, in the venv being built.
    assert {"packaging", "wheel", "setuptools", "psutil"} <= set(" ".join(installs[:flash_at]).split())
    cpu = subprocess.run(["bash", "setup.sh", "--print"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "flash-attn" not in cpu and "--no-deps openrlhf==0.11.2" in cpu
