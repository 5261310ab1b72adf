"""The PPO run as a Ray job: the cluster check, the reward probe on every node, then OpenRLHF's CLI."""

from __future__ import annotations

import argparse
import copy
import json
import os
import runpy
import secrets
import sys
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.launcher.checks import (
    FORWARDED_SECRETS,
    check_disk,
    grade_samples,
    reward_env,
    start_reward_server,
)
from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.manifest import build_manifest, write_eval_subset, write_manifest
from med_rlvr_plugin.launcher.openrlhf_cli import PPO_MODULE, openrlhf_ray_env
from med_rlvr_plugin.launcher.plan import trained_models


def check_cluster(args: SimpleNamespace, nodes: list[dict]) -> str:
    """The Ray cluster has the GPUs and CPUs the layout places, free; else LaunchError.

    OpenRLHF reserves a bundle of one GPU and one CPU per GPU with a placement group and waits for it
    without a timeout, then starts its PPOTrainer actor, a plain `@ray.remote` class: Ray places such an
    actor only where one CPU is free (ray/actor.py, DEFAULT_ACTOR_METHOD_CPU_SIMPLE), so a cluster with
    as many CPUs as GPUs hangs the job silently too.
    """
    import ray

    models = trained_models(args)
    needed = models["actor"][0]
    if not args.train.colocate_all:  # separate GPUs for each model and the vLLM engines
        needed += args.vllm.num_engines * args.vllm.tensor_parallel_size
        if "critic" in models:
            needed += models["critic"][0]
        if args.algo.kl.init_coef > 0 and not args.train.colocate_actor_ref:
            needed += args.ref.num_nodes * args.ref.num_gpus_per_node
    total, free = ray.cluster_resources(), ray.available_resources()
    layout = ", ".join(f"{node['NodeManagerAddress']} {node['Resources'].get('GPU', 0):g} GPUs" for node in nodes)
    for resource, count, why in (
        ("GPU", needed, "--nodes x --gpus-per-node, one bundle each"),
        ("CPU", needed + 1, "one per GPU bundle and one for OpenRLHF's PPOTrainer actor"),
    ):
        if total.get(resource, 0) < count:
            raise LaunchError(
                f"the run places {count} {resource}s ({why}) and the Ray cluster has {total.get(resource, 0):g} "
                f"({layout}); OpenRLHF would wait for them forever. Lower --nodes / --gpus-per-node, or add "
                f"nodes or {resource}s (`ray start --num-gpus N --num-cpus M` on each)"
            )
        if free.get(resource, 0) < count:
            raise LaunchError(
                f"the run places {count} {resource}s ({why}) and only {free.get(resource, 0):g} of the "
                f"cluster's {total[resource]:g} are free; other jobs hold the rest (`ray status`, `ray job list`)"
            )
    return f"{needed} GPUs of {total['GPU']:g} ({layout}), {needed + 1} CPUs of {total['CPU']:g}"


def ray_init_env(wanted: dict[str, str]) -> dict[str, str]:
    """The env_vars for this driver's `ray.init`: `wanted` less what the job's own runtime env sets.

    Ray merges a job's runtime env (`ray job submit --runtime-env-json`, handed to the driver in
    RAY_JOB_CONFIG_JSON_ENV_VAR) with the driver's and refuses any env var key set in both
    (`_merge_runtime_env`), so the job's value is the one every actor gets. That is right only when it is
    the value this driver checked, which the job's env normally is (the driver inherits it); the launch
    script refuses a flag that contradicts it, and any other difference is refused here.
    """
    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    job_env = (job_config.get("runtime_env") or {}).get("env_vars") or {}
    for name in sorted(job_env.keys() & wanted.keys()):
        if job_env[name] != wanted[name]:
            shown = f"{name}={job_env[name]!r}, this driver {wanted[name]!r}" if name.startswith("MED_RLVR_") else name
            raise LaunchError(
                f"the job's runtime env (--runtime-env-json) sets {shown}, and Ray would give every actor the "
                "job's value: set it in one place only"
            )
    if kept := sorted(job_env.keys() & wanted.keys()):
        print(f"med-rlvr: every actor gets the job's runtime env's {', '.join(kept)} (the driver's are the same)")
    return {name: value for name, value in wanted.items() if name not in job_env}


def probe_nodes(
    options: argparse.Namespace, checked: SimpleNamespace, nodes: list[dict], reward_url: list[str]
) -> None:
    """An actor per node loads the reward file as OpenRLHF's rollout actors do, grades the samples, and
    looks for a file the driver wrote in the output folder; LaunchError for the first node that differs.

    DeepSpeed writes checkpoint shards from every rank, so on several nodes the folder must be the same
    (shared) one everywhere. A configuration that did not arrive, or a reward file that does not load
    there, stops the job now and not mid-training (OpenRLHF logs a reward function's exceptions at INFO
    level and carries on).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected_env = {**openrlhf_ray_env(), **reward_env()}  # no secrets: the probe prints what it saw

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
    finally:
        token.unlink()
    server = f"; every node must reach the reward server at {reward_url[0]}" if options.reward_server else ""
    for node, report in zip(nodes, reports, strict=True):
        address = node["NodeManagerAddress"]
        if (report["env"], report["rewards"]) != (expected_env, checked.rewards):
            raise LaunchError(
                f"node {address}: an actor saw {report}; expected env {expected_env} and rewards "
                f"{checked.rewards}. Submit from the repository root with `ray job submit --working-dir . -- bash "
                f"...`{server}"
            )
        if not report["output_dir_shared"]:
            raise LaunchError(
                f"node {address} does not see {options.output_dir} as this node does: checkpoint shards would be "
                "split across machines. Use an --output-dir on storage every node mounts at the same path"
            )


def run_ppo(options: argparse.Namespace, checked: SimpleNamespace, manifest_path: Path) -> None:
    """Check the cluster, give every actor the reward configuration and prove it arrived, write the
    manifest, then run OpenRLHF's CLI in this process.

    Variables the job script exports reach this driver but not Ray's actors. `ray.init(runtime_env=...)`
    here gives every actor of this job, on every node, the MED_RLVR_* variables, merged with the job's own
    runtime env. OpenRLHF then skips its own `ray.init`, so the variables it would set are set here too.
    Nothing is left in the output folder when a check fails: the manifest comes last.
    """
    import ray

    forwarded = {name: os.environ[name] for name in FORWARDED_SECRETS if name in os.environ}
    ray.init(runtime_env={"env_vars": ray_init_env({**openrlhf_ray_env(), **reward_env(), **forwarded})})
    nodes = [node for node in ray.nodes() if node["Alive"]]
    print(f"med-rlvr: cluster: {check_cluster(checked.args, nodes)}", flush=True)
    command, reward_url = checked.command, checked.args.reward.remote_url
    if options.reward_server:
        # On this (head) node at its cluster address, for every rollout actor; it ends with this driver,
        # however the job ends. The probe below proves each node reaches it and gets the file's rewards.
        reward_url = [start_reward_server(ray.util.get_node_ip_address())[1]]
        command = [*command, "--reward.remote_url", reward_url[0]]  # the last one wins
        print(f"med-rlvr: reward server {reward_url[0]} replaces the reward file for OpenRLHF", flush=True)

    created = not options.output_dir.exists()
    options.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        probe_nodes(options, checked, nodes, reward_url)
        print(f"med-rlvr: the reward configuration and {options.output_dir} reached each of {len(nodes)} node(s)")
        check_disk(options.output_dir, checked.plan, dry_run=False)
        write_manifest(manifest_path, build_manifest(options, command, checked.args, checked.data, checked.plan))
        if checked.eval_subset:
            write_eval_subset(*checked.eval_subset)
    except BaseException:
        if created and not any(options.output_dir.iterdir()):
            options.output_dir.rmdir()
        raise
    print(f"med-rlvr: manifest {manifest_path}", flush=True)
    sys.argv = command[2:]  # the module and its flags
    runpy.run_module(PPO_MODULE, run_name="__main__", alter_sys=True)


def check_runs_together(checked: SimpleNamespace, runs: int, output_dir: Path) -> str:
    """For `ablate_reward_schemes.sh --parallel`, in a Ray job: the cluster's free GPUs hold `runs` runs of
    this layout at once (`check_cluster` on the layout with every model's nodes times `runs`), and the
    output folder's free disk their checkpoints; else LaunchError."""
    import ray

    try:
        ray.init(address="auto")  # never a new local Ray instance
    except ConnectionError:
        raise LaunchError("--runs-together checks a running Ray cluster: submit it as a Ray job") from None
    args = copy.deepcopy(checked.args)
    for model in (args.actor, args.critic, args.ref):
        model.num_nodes *= runs
    args.vllm.num_engines *= runs
    try:
        cluster = check_cluster(args, [node for node in ray.nodes() if node["Alive"]])
    except LaunchError as error:
        raise LaunchError(f"{runs} runs at once: {error}") from None
    disk = checked.plan["disk_bytes"]
    check_disk(output_dir, {"disk_bytes": disk and {"total": runs * disk["total"]}}, dry_run=False)
    return f"{runs} runs at once: the cluster has the {cluster}, and the disk their checkpoints"
