"""What an evaluation runs with: a training run's manifest (reward configuration, max new tokens, base
model) weighed against this shell's MED_RLVR_* variables and flags; and the machine (CPU without CUDA,
vLLM installed, a hub model reachable), checked before any model loads."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from med_rlvr_plugin.defaults import MAX_NEW_TOKENS
from med_rlvr_plugin.evaluate import EvalError
from med_rlvr_plugin.verifier import ENV_VARS, RewardConfig, config_from_env

SETTINGS_CHOICES = ("manifest", "shell")


@dataclass(frozen=True)
class RunSettings:
    """The reward configuration that grades, the max new tokens, the run's base model, and where each came from."""

    config: RewardConfig
    max_gen_toks: int
    base_model: str | None
    source: str


def read_manifest(run_dir: Path) -> dict | None:
    """RUN_DIR/manifest.json (the launcher's record of the run), or None when there is none."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalError(f"{path}: not readable JSON ({error}); fix it, or pass --settings shell") from None
    if not isinstance(manifest, dict):
        raise EvalError(f"{path}: not a manifest (a JSON object); fix it, or pass --settings shell")
    return manifest


def _differences(shell: RewardConfig, run: RewardConfig) -> str:
    ours, theirs = asdict(shell), asdict(run)
    return ", ".join(
        f"{key} {ours[key]} (this shell) vs {theirs[key]} (the run)" for key in ours if ours[key] != theirs[key]
    )


def run_settings(
    run_dir: Path | None, max_gen_toks: int | None, choice: str | None, environ: Mapping[str, str] = os.environ
) -> RunSettings:
    """The settings of an evaluation: a run's manifest.json gives the reward configuration (its
    `reward.env`) and max new tokens (`settings.rollout.max_new_tokens`) and names the base model; the shell
    gives them without one. When the shell sets MED_RLVR_* variables or --max-gen-toks that contradict the
    manifest, EvalError names both values unless `choice` ("manifest" or "shell") settles it."""
    shell = config_from_env(environ)
    manifest = read_manifest(run_dir) if run_dir is not None else None
    tokens = max_gen_toks or MAX_NEW_TOKENS
    if manifest is None or choice == "shell":
        why = "--settings shell" if manifest is not None else f"no manifest.json in {run_dir}" if run_dir else "no run"
        return RunSettings(shell, tokens, None, f"this shell's MED_RLVR_* variables and flags ({why})")
    settings = manifest.get("settings") or {}
    env = (manifest.get("reward") or {}).get("env")  # None for SFT, which has no reward
    run = config_from_env({name: value for name, value in env.items() if name in ENV_VARS}) if env else shell
    run_tokens = (settings.get("rollout") or {}).get("max_new_tokens")
    conflicts = []
    if choice is None and env is not None and any(name in environ for name in ENV_VARS) and shell != run:
        conflicts.append(f"reward {_differences(shell, run)}")
    if choice is None and max_gen_toks is not None and run_tokens is not None and max_gen_toks != run_tokens:
        conflicts.append(f"--max-gen-toks {max_gen_toks} vs the run's max_new_tokens {run_tokens}")
    if conflicts:
        raise EvalError(
            f"{run_dir / 'manifest.json'}: {'; '.join(conflicts)}; pass --settings manifest (the run's) or "
            "--settings shell (this shell's and the flags')"
        )
    base = next((part["model_name_or_path"] for part in (settings.get("actor"), settings.get("model")) if part), None)
    source = f"{run_dir / 'manifest.json'}" + ("" if env else " (no reward recorded: this shell's reward)")
    return RunSettings(run, run_tokens or tokens, base, source)


def describe(settings: RunSettings) -> str:
    """One line saying what grades and generates, and where it comes from."""
    reward = ", ".join(f"{key}={value}" for key, value in asdict(settings.config).items())
    return f"reward {reward}; up to {settings.max_gen_toks} new tokens; from {settings.source}"


def resolve_device(backend: str, device: str | None) -> str | None:
    """The hf backend's device: as given, else the CPU (with a note) on a machine without CUDA, where
    lm-eval's default, cuda, fails after loading ("Torch not compiled with CUDA enabled")."""
    if backend != "hf" or device is not None:
        return device
    import torch

    if torch.cuda.is_available():
        return None
    print(
        "med-rlvr evaluate: note: no CUDA GPU on this machine; generating on the CPU (--device cpu)", file=sys.stderr
    )
    return "cpu"


def check_backend(backend: str) -> None:
    """EvalError for --backend vllm without vLLM installed."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EvalError(
            "--backend vllm: vLLM is not installed here; on a GPU node install the gpu extra "
            "(pip install -e '.[gpu,eval]'), or use --backend hf"
        )


def check_hub_model(model: str) -> None:
    """EvalError for a hub id whose configuration cannot be had (offline, no network, no such model): found
    now, not after lm-eval has started."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model)
    except OSError as error:  # not ValueError: a model needing trust_remote_code is lm-eval's to load
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalError(
            f"model {model}: not a local folder, and the Hugging Face hub cannot give it ({reason[:200]}); "
            f"download it first (huggingface-cli download {model}) or give its folder"
        ) from None
