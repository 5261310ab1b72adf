"""ablate_reward_schemes.sh on a real local Ray cluster (2 CPUs, one pretend GPU), with real submissions.

Each variant's job is a dry run of train_ppo_medqa.sh (`-- --dry-run`), so it needs no GPU time; the
order, the waiting and the all-together check are Ray's and the script's own (~5 minutes).
"""

import subprocess
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from med_rlvr_plugin import launcher
from tests.conftest import clean_env
from tests.test_launch_ray import REPO, TINY_RUN, write_rows

pytestmark = pytest.mark.ray


def ablate(address: str, tiny_qwen2: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    train = write_rows(tmp_path / "train.jsonl", launcher.sample_rows())
    run = ["--dry-run", "--model", str(tiny_qwen2), "--train-data", str(train), "--eval-data", "none"]
    return subprocess.run(
        ["bash", "launch/ablate_reward_schemes.sh", "--address", address, "--output-root", str(tmp_path / "runs")]
        + [*flags, "--", *run, "--gpus-per-node", "1", *TINY_RUN],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def jobs(address: str, prefix: str) -> dict:
    """This prefix's jobs by submission id, each once it has ended (or when a minute has passed)."""
    client, deadline = JobSubmissionClient(address), time.monotonic() + 60
    while True:
        found = {job.submission_id: job for job in client.list_jobs() if job.submission_id.startswith(prefix)}
        if all(job.status.is_terminal() for job in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_variants_run_one_after_another_and_a_failure_stops_the_rest(
    ray_cluster: str, tiny_qwen2: Path, tmp_path: Path
) -> None:
    """A leak penalty the reward refuses fails the leak variant alone: the variant after it is never
    submitted, unless --keep-going, which runs it and still exits 1. Each job starts after the one
    before it has ended."""
    variants = ["--variants", "neutral,leak,penalized", "--leak-penalty", "abc"]
    stopped = ablate(ray_cluster, tiny_qwen2, tmp_path, *variants, "--prefix", "seq")
    assert stopped.returncode == 1, stopped.stderr
    assert "seq-leak did not succeed" in stopped.stderr and "not submitted: penalized" in stopped.stderr
    ran = jobs(ray_cluster, "seq-")
    assert {name: job.status.value for name, job in ran.items()} == {"seq-neutral": "SUCCEEDED", "seq-leak": "FAILED"}

    going = ablate(ray_cluster, tiny_qwen2, tmp_path, *variants, "--prefix", "kg", "--keep-going")
    assert going.returncode == 1 and "did not succeed: kg-leak" in going.stderr
    ran = jobs(ray_cluster, "kg-")
    assert [ran[f"kg-{variant}"].status.value for variant in ("neutral", "leak", "penalized")] == [
        "SUCCEEDED",
        "FAILED",
        "SUCCEEDED",
    ]
    assert ran["kg-neutral"].end_time <= ran["kg-leak"].start_time
    assert ran["kg-leak"].end_time <= ran["kg-penalized"].start_time


def test_parallel_checks_gpus_for_all_runs_together(ray_cluster: str, tiny_qwen2: Path, tmp_path: Path) -> None:
    """Two one-GPU runs at once on a one-GPU cluster: the check job says so and nothing is submitted; one
    run passes the check and is submitted."""
    refused = ablate(
        ray_cluster, tiny_qwen2, tmp_path, "--parallel", "--variants", "neutral,penalized", "--prefix", "par"
    )
    assert refused.returncode == 1 and "cannot hold all 2 runs at once" in refused.stderr
    assert "2 runs at once: the run places 2 GPUs" in refused.stdout
    assert {name: job.status.value for name, job in jobs(ray_cluster, "par-").items()} == {"par-check": "FAILED"}

    single = ablate(ray_cluster, tiny_qwen2, tmp_path, "--parallel", "--variants", "neutral", "--prefix", "one")
    assert single.returncode == 0, single.stderr
    ran = jobs(ray_cluster, "one-")
    assert {name: job.status.value for name, job in ran.items()} == {
        "one-check": "SUCCEEDED",
        "one-neutral": "SUCCEEDED",
    }
