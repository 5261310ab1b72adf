"""The run's output folder and its manifest: what ran, with which code, data, settings and plan."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.files import write_new
from med_rlvr_plugin.launcher.checks import FORWARDED_SECRETS, data_paths, reward_env
from med_rlvr_plugin.launcher.errors import LaunchError

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
    """Write atomically and never over an existing file (`files.write_new`), with the umask's permissions so
    that collaborators on shared storage can read it; LaunchError when another launch wrote it first."""
    try:
        write_new(path, json.dumps(manifest, indent=2) + "\n")
    except FileExistsError:
        raise LaunchError(f"{path} exists; another launch wrote it first") from None


def write_eval_subset(path: Path, text: str) -> None:
    """The run's fixed dev subset for periodic eval, written once: a resume finds the same one there."""
    if not path.exists():
        write_new(path, text)
    elif path.read_text() != text:
        raise LaunchError(
            f"{path} holds another dev subset than this command's (the dev file changed?): move it away to "
            "evaluate on the new one, or resume with the dev file the run began with"
        )


def _plain(value):
    """`args` as JSON: namespaces to dicts, tuples to lists, inf to a string (JSON has no inf)."""
    if isinstance(value, SimpleNamespace):
        return {key: _plain(item) for key, item in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def plugin_files_sha256(root: Path) -> str:
    """One hash of the plugin under a checkout `root`: every file of the package at any depth (code, the
    lm-eval tasks, the built-in sample; not Python's __pycache__) and the launch scripts."""
    package = [
        path
        for path in root.glob("med_rlvr_plugin/**/*")
        if path.is_file() and "__pycache__" not in path.relative_to(root).parts
    ]
    fingerprint = hashlib.sha256()
    for path in sorted([*package, *root.glob("launch/*.sh")]):
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
    root = Path(__file__).resolve().parents[2]
    files = plugin_files_sha256(root)
    if state := _git_state(root):
        return {"files_sha256": files, **state, "commit_source": "the working directory's git checkout"}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError, TypeError, ValueError, KeyError):
        url = json.loads(importlib.metadata.distribution("med-rlvr").read_text("direct_url.json"))["url"]
        checkout = Path(url.removeprefix("file://"))
        if plugin_files_sha256(checkout) == files and (state := _git_state(checkout)):
            return {"files_sha256": files, **state, "commit_source": f"the installed checkout {checkout} (same files)"}
    return {
        "files_sha256": files,
        "commit": None,
        "dirty": None,
        "commit_source": "unknown: no checkout with these files",
    }


def _sha256(path: str | Path) -> str:
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
        part["sha256"] = {str(path): _sha256(path) for path in data_paths(part["files"])}
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


def run_identity(manifest: dict) -> dict[str, object]:
    """What a resumed run must share with the run it continues, read from a manifest: the kind, model,
    algorithm, reward configuration and file, the data files' contents (their sha256, wherever they are
    now) and the batch shape, GPUs included (a ZeRO state is split over the data-parallel ranks)."""
    settings, kind = manifest["settings"], manifest["kind"]
    ppo = kind == "ppo"
    command = manifest["openrlhf_command"]
    identity = {
        "kind": kind,
        "model": settings["actor" if ppo else "model"]["model_name_or_path"],
        "GPUs": settings["actor"]["num_nodes"] * settings["actor"]["num_gpus_per_node"]
        if ppo
        else int(command[command.index("--num_gpus") + 1]),
    }
    if ppo:
        identity["algorithm"] = settings["algo"]["advantage"]["estimator"]
        # The rollout-sample recording (MED_RLVR_ROLLOUT_*) is not the reward: a resume may change it.
        env = manifest["reward"]["env"]
        identity["reward configuration"] = {key: env[key] for key in env if not key.startswith("MED_RLVR_ROLLOUT_")}
        identity["reward file sha256"] = manifest["reward"]["file_sha256"]
    for part, entry in manifest["data"].items():
        identity[f"{part} data sha256"] = sorted(entry["sha256"].values())
    batch = ["train.batch_size", "train.micro_batch_size"]
    if ppo:
        batch += ["rollout.batch_size", "rollout.n_samples_per_prompt", "rollout.micro_batch_size"]
    for flag in batch:
        group, name = flag.split(".")
        identity[f"--{flag}"] = settings[group][name]
    return identity


def check_resume(run: Path, manifest: dict, allow_changes: bool) -> list[str]:
    """The differences between the run in `run` (its manifest.json) and this launch's `manifest`, one
    line each; LaunchError listing them all unless `allow_changes`."""
    try:
        before = run_identity(json.loads((run / "manifest.json").read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise LaunchError(
            f"--resume: {run / 'manifest.json'} is not a manifest the launcher wrote ({error!r}), so this command "
            "cannot be compared with the run: restore it, or start a new run"
        ) from None
    now = run_identity(manifest)
    differences = [
        f"{key}: {before.get(key)!r} then, {now.get(key)!r} now"
        for key in dict.fromkeys([*before, *now])
        if before.get(key) != now.get(key)
    ]
    if differences and not allow_changes:
        raise LaunchError(
            f"--resume: this command is not the run in {run} ({'; '.join(differences)}): repeat the run's own "
            "command (manifest.json, launch_command), or pass --allow-changes to resume with these changes"
        )
    return differences


def resume_point(ckpt_dir: Path) -> str:
    """Where a resume starts, from DeepSpeed's `latest` file in `ckpt_dir`; LaunchError when it names a
    folder that is not there, which DeepSpeed's loader would fail on."""
    latest = ckpt_dir / "latest"
    if not latest.is_file():
        return f"no checkpoint in {ckpt_dir} yet (the run stopped before its first save): it starts from step 0"
    tag = latest.read_text().strip()
    if not (ckpt_dir / tag).is_dir():
        raise LaunchError(
            f"--resume: {latest} names {tag}, which is not in {ckpt_dir}; write the name of the newest whole "
            "checkpoint folder there (DeepSpeed's loader reads it) and resume again"
        )
    return f"it resumes from {ckpt_dir / tag}"
