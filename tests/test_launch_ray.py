"""The launch scripts on a real local Ray cluster, submitted with the real `ray job submit` (~3 minutes).

The cluster has 2 CPUs and one pretend GPU. vLLM cannot run without CUDA, so the PPO job passes
`-- --vllm.num_engines 0` (through the script's own pass-through) and the trainers import the stand-ins of
conftest.py; everything else is the installed OpenRLHF 0.11.2, Ray, DeepSpeed, datasets and transformers.
"""

import ast
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from med_rlvr_plugin import launcher
from med_rlvr_plugin.launcher import LaunchError
from med_rlvr_plugin.launcher.openrlhf_cli import parse_openrlhf_args
from med_rlvr_plugin.launcher.ray_job import check_cluster
from tests.conftest import clean_env, ray_cli

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
OPENRLHF_ENV = ("NCCL_DEBUG", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "TOKENIZERS_PARALLELISM")
# What the PPO job's flags set, written out independently of the script. The reward scheme comes from the
# job's runtime env instead, with the variables OpenRLHF sets and a wandb key: Ray refuses a ray.init that
# sets any of them again, and every actor must get the job's values.
REWARD_FLAGS = [
    "--format",
    "strict",
    "--leak-penalty",
    "0.25",
    "--min-think-words",
    "3",
    "--short-think-penalty",
    "0.5",
]
# One GPU, no vLLM, and rollouts small enough for the six sample questions (3 whole rollouts of 2).
TINY_RUN = [
    "--",
    "--vllm.num_engines",
    "0",
    "--rollout.batch_size",
    "2",
    "--train.batch_size",
    "2",
    "--rollout.micro_batch_size",
    "1",
    "--train.micro_batch_size",
    "1",
]
JOB_ENV = {
    "WANDB_API_KEY": "med-rlvr-test-key",
    "NCCL_DEBUG": "INFO",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
    "MED_RLVR_REWARD_SCHEME": "penalized",
}
EXPECTED_ENV = {
    "MED_RLVR_FORMAT": "strict",
    "MED_RLVR_LEAK_PENALTY": "0.25",
    "MED_RLVR_MIN_THINK_WORDS": "3",
    "MED_RLVR_REWARD_SCHEME": "penalized",
    "MED_RLVR_SHORT_THINK_PENALTY": "0.5",
}


def job_status(address: str, submission_id: str) -> str:
    status = ray_cli("job", "status", "--address", address, submission_id)
    return (status.stdout + status.stderr).lower()


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def submit_ppo(
    address: str, submission_id: str, *script_args: str, job_env: dict | None = None, timeout: int = 600
) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit [--runtime-env-json] -- bash launch/train_ppo_medqa.sh ARGS` from the repository, run
    to its end: (the submit command's result, the job's log)."""
    runtime_env = ["--runtime-env-json", json.dumps({"env_vars": job_env})] if job_env else []
    submit = ray_cli(
        *("job", "submit", "--address", address, "--working-dir", ".", "--submission-id", submission_id),
        *runtime_env,
        *("--", "bash", "launch/train_ppo_medqa.sh", *script_args),
        timeout=timeout,
    )
    return submit, ray_cli("job", "logs", "--address", address, submission_id).stdout


@pytest.fixture(scope="module")
def ppo_job(ray_cluster: str, tiny_qwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`ray job submit -- bash launch/train_ppo_medqa.sh` with non-default reward flags, run to its end."""
    folder = tmp_path_factory.mktemp("ppo_job")
    rows = launcher.sample_rows()
    # 4 dev prompts are 2 eval rounds of 2: --evals 5 in 24 steps makes an eval every 4 steps of the first 2.
    train, evaluation = write_rows(folder / "train.jsonl", rows), write_rows(folder / "eval.jsonl", rows[:4])
    started = time.monotonic()
    submit, logs = submit_ppo(
        ray_cluster,
        "medrlvr-e2e",
        *("--model", str(tiny_qwen2), "--train-data", str(train), "--eval-data", str(evaluation)),
        *("--nodes", "1", "--gpus-per-node", "1", "--output-dir", str(folder / "run")),
        *REWARD_FLAGS,
        *TINY_RUN,
        job_env=JOB_ENV,
    )
    print(f"PPO job: {time.monotonic() - started:.0f} s")
    return SimpleNamespace(
        returncode=submit.returncode,
        logs=logs,
        run=folder / "run",
        train=train,
        train_rows=len(rows),
        evaluation=evaluation,
    )


def test_ppo_job_reaches_deepspeed_cuda_setup(ppo_job: SimpleNamespace) -> None:
    logs = ppo_job.logs
    # The launcher's checks, then OpenRLHF's: train() prints its arguments once its post-parse checks pass.
    assert "med-rlvr: OpenRLHF accepts the command:" in logs
    assert re.search(r"^namespace\(ref=namespace\(.*remote_url=\['med_rlvr_plugin/openrlhf_reward\.py'\]", logs, re.M)
    # Dataset loading in OpenRLHF's trainer actor: the training and eval files with their row counts.
    assert re.search(rf"\(PPOTrainer pid=\d+\)\S*\s+num_rows: {ppo_job.train_rows}$", logs, re.M), logs[-3000:]
    assert re.search(r"\(PPOTrainer pid=\d+\)\S*\s+num_rows: 2$", logs, re.M)  # the eval subset's
    # Actor scheduling: a model actor was placed on the pretend GPU and ran its init, up to DeepSpeed's CUDA.
    assert re.search(
        r"ray::(PolicyModelActor|ReferenceModelActor|CriticModelActor)\.init_model_from_pretrained\(\)", logs
    )
    assert "in setup_distributed" in logs and "torch.cuda.set_device(local_rank)" in logs
    assert ppo_job.returncode != 0  # and nothing else stopped it earlier:
    assert "Failed to fetch reward" not in logs and "med-rlvr launch: error" not in logs
    # Ray's placement: a CPU for each GPU bundle and one for OpenRLHF's PPOTrainer actor (which got it).
    assert re.search(r"^med-rlvr: cluster: 1 GPUs of 1 \(\S+ 1 GPUs\), 2 CPUs of 2$", logs, re.M)


def test_the_jobs_runtime_env_reaches_every_actor_and_the_key_nowhere(ppo_job: SimpleNamespace) -> None:
    """`ray job submit --runtime-env-json`: the launcher's ray.init leaves these keys to the job, whose values
    every actor gets (the probe prints what it saw), and the wandb key is in no log and no manifest."""
    names = ", ".join(sorted(JOB_ENV))
    assert f"med-rlvr: every actor gets the job's runtime env's {names} (the driver's are the same)" in ppo_job.logs
    seen = ast.literal_eval(re.search(r"\(Probe pid=\d+\)\S* med-rlvr reward probe: env (\{.*?\})", ppo_job.logs)[1])
    assert {name: seen[name] for name in ("NCCL_DEBUG", "TOKENIZERS_PARALLELISM")} == {
        "NCCL_DEBUG": "INFO",
        "TOKENIZERS_PARALLELISM": "false",
    }
    assert JOB_ENV["WANDB_API_KEY"] not in ppo_job.logs + (ppo_job.run / "manifest.json").read_text()


def test_reward_flags_reach_an_actor_of_the_job(ppo_job: SimpleNamespace) -> None:
    """The actor's own environment and its reward function's grades, as the actor printed them."""
    match = re.search(
        r"\(Probe pid=\d+\)\S* med-rlvr reward probe: env (\{.*?\}), rewards (\{.*?\})$", ppo_job.logs, re.M
    )
    assert match, ppo_job.logs[-3000:]
    assert ast.literal_eval(match[1]) == EXPECTED_ENV | {name: JOB_ENV[name] for name in OPENRLHF_ENV}
    # penalized: a well-formed wrong answer earns -1 (neutral would give 0)
    assert ast.literal_eval(match[2]) == {"correct": 1.0, "wrong": -1.0, "malformed": -1.0}
    assert f"med-rlvr: the reward configuration and {ppo_job.run} reached each of 1 node(s)" in ppo_job.logs


def test_ppo_job_writes_its_manifest(ppo_job: SimpleNamespace) -> None:
    manifest, subset = json.loads((ppo_job.run / "manifest.json").read_text()), ppo_job.run / "eval_subset.jsonl"
    assert manifest["reward"]["env"] == EXPECTED_ENV
    assert manifest["reward"]["file"] == "med_rlvr_plugin/openrlhf_reward.py"
    assert all(flag in manifest["launch_command"] for flag in REWARD_FLAGS)
    assert manifest["openrlhf_command"][:3] == ["python3", "-m", "openrlhf.cli.train_ppo_ray"]
    assert manifest["openrlhf_command"][-len(TINY_RUN) - 1 :] == TINY_RUN[1:] + ["--eval.dataset", str(subset)]
    assert manifest["settings"]["data"]["prompt_dataset"] == str(ppo_job.train)
    assert manifest["settings"]["vllm"]["num_engines"] == 0
    assert manifest["settings"]["ckpt"]["path"] == str(ppo_job.run / "ckpt")
    assert manifest["data"]["train"]["rows"] == ppo_job.train_rows
    assert manifest["data"]["train"]["sha256"] == {
        str(ppo_job.train): hashlib.sha256(ppo_job.train.read_bytes()).hexdigest()
    }
    assert manifest["plan"]["steps"] == 3 * 8 and manifest["plan"]["rank_samples"] == {"actor": [2], "critic": [2]}
    assert manifest["versions"]["openrlhf"] == "0.11.2" and manifest["versions"]["ray"] == "2.55.0"
    # The job's copy of the repository has no .git (Ray leaves it out): the commit comes from the
    # checkout the venv's med-rlvr is installed from, which holds the same files.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert manifest["plugin_git"]["commit"] == head and "installed checkout" in manifest["plugin_git"]["commit_source"]
    # Not Ray's temporary folder, which is gone after the job: the uploaded package's content address.
    assert manifest["working_dir"] is None and manifest["ray_job"]["working_dir"].startswith("gcs://_ray_pkg_")
    umask = os.umask(0)
    os.umask(umask)
    assert (ppo_job.run / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask
    # The folder probe left nothing; the periodic eval's fixed subset is the dev file's first 2 prompts.
    assert sorted(path.name for path in ppo_job.run.iterdir()) == ["eval_subset.jsonl", "manifest.json"]
    assert subset.read_text().splitlines() == ppo_job.evaluation.read_text().splitlines()[:2]
    assert manifest["openrlhf_command"][manifest["openrlhf_command"].index("--eval.steps") + 1] == "4"
    assert manifest["settings"]["eval"]["dataset"] == str(subset) and manifest["plan"]["eval"]["evals"] == 6


def test_a_cluster_smaller_than_the_flags_stops_the_job_before_it_claims_the_folder(
    ray_cluster: str, tiny_qwen2: Path, tmp_path: Path
) -> None:
    """OpenRLHF would wait forever for a placement group of 2 GPUs on this 1-GPU cluster."""
    train = write_rows(tmp_path / "train.jsonl", launcher.sample_rows())
    submit, logs = submit_ppo(
        ray_cluster,
        "medrlvr-too-big",
        *("--model", str(tiny_qwen2), "--train-data", str(train), "--eval-data", "none", "--gpus-per-node", "2"),
        *("--output-dir", str(tmp_path / "run"), *TINY_RUN),
        timeout=300,
    )
    assert submit.returncode != 0
    assert "the run places 2 GPUs (--nodes x --gpus-per-node, one bundle each) and the Ray cluster has 1" in logs, (
        logs[-3000:]
    )
    assert not (tmp_path / "run").exists()


def test_ablation_submits_one_job_per_variant(ray_cluster: str, tiny_qwen2: Path, tmp_path: Path) -> None:
    """Real submissions; each job dry-runs (`-- --dry-run`) so that it needs no GPU time."""
    train = write_rows(tmp_path / "train.jsonl", launcher.sample_rows())
    result = subprocess.run(
        [
            "bash",
            "launch/ablate_reward_schemes.sh",
            "--address",
            ray_cluster,
            "--variants",
            "neutral,penalized",
            "--prefix",
            "abl",
            "--output-root",
            str(tmp_path / "runs"),
            "--",
            "--dry-run",
            "--model",
            str(tiny_qwen2),
            "--train-data",
            str(train),
            "--eval-data",
            "none",
            "--gpus-per-node",
            "1",
            *TINY_RUN,
        ],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for variant, wrong_reward in (("neutral", 0.0), ("penalized", -1.0)):
        deadline = time.monotonic() + 300
        while f"job 'abl-{variant}' succeeded" not in (status := job_status(ray_cluster, f"abl-{variant}")):
            assert "failed" not in status and time.monotonic() < deadline, status
            time.sleep(3)
        logs = ray_cli("job", "logs", "--address", ray_cluster, f"abl-{variant}").stdout
        assert f"'MED_RLVR_REWARD_SCHEME': '{variant}'" in logs and f"'wrong': {wrong_reward}" in logs
        assert f"--ckpt.path {tmp_path / 'runs' / f'abl-{variant}' / 'ckpt'}" in logs
    again = ray_cli(
        "job", "submit", "--address", ray_cluster, "--submission-id", "abl-neutral", "--no-wait", "--", "true"
    )
    assert again.returncode != 0  # a run name is a submission id: Ray refuses to reuse it


def test_a_flag_that_contradicts_the_jobs_runtime_env_stops_the_job(ray_cluster: str, tmp_path: Path) -> None:
    """Ray would give every actor the job's MED_RLVR_REWARD_SCHEME, not the flag's: the script refuses."""
    submit, logs = submit_ppo(
        ray_cluster,
        "medrlvr-contradiction",
        *("--reward-scheme", "neutral", "--output-dir", str(tmp_path / "run")),
        job_env={"MED_RLVR_REWARD_SCHEME": "penalized"},
        timeout=300,
    )
    assert submit.returncode != 0
    assert "--reward-scheme neutral contradicts MED_RLVR_REWARD_SCHEME=penalized in the job's environment" in logs
    assert not (tmp_path / "run").exists()


def test_a_cluster_with_a_cpu_per_gpu_only_is_refused() -> None:
    """OpenRLHF's bundles take one CPU per GPU and its PPOTrainer actor needs one more to be placed."""
    import ray

    args = parse_openrlhf_args(
        launcher.PPO_MODULE,
        ["--actor.model_name_or_path", "m", "--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1"]
        + ["--train.colocate_all", "--reward.remote_url", "r.py", "--data.prompt_dataset", "d.jsonl"],
    )
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        nodes = ray.nodes()
        with pytest.raises(LaunchError, match=r"places 2 CPUs \(one per GPU bundle and one for OpenRLHF's PPOTrainer"):
            check_cluster(args, nodes)
    finally:
        ray.shutdown()
