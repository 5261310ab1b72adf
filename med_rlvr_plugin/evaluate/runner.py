"""Running lm-eval on models (or a training run's checkpoints) x prepared prompt files, and accuracy by step."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from med_rlvr_plugin.evaluate import (
    LOGLIK_TEMPLATE,
    TASK_DIR,
    TEMPLATE,
    EvalError,
    check_choices,
    check_row,
    ood_tasks,
    process_results,
)
from med_rlvr_plugin.evaluate.reports import compare, load_results, pretrained, report, write_comparison
from med_rlvr_plugin.evaluate.settings import (
    check_backend,
    check_hub_model,
    describe,
    resolve_device,
    run_settings,
)
from med_rlvr_plugin.evaluate.steps import write_steps
from med_rlvr_plugin.files import read_jsonl
from med_rlvr_plugin.lm_eval_logs import LOGLIK, SAMPLES_NAME
from med_rlvr_plugin.verifier import RewardConfig

_CHECKPOINT_NAME = re.compile(r"(?:best_)?global_step(\d+)_hf")
# generate: a response graded by the verifier (the paper's); loglik: each option letter's log-likelihood.
MODES = ("generate", "loglik", "both")


def default_tasks() -> dict[str, str]:
    """The shipped generate tasks: name -> the prepared file it reads (relative to the working directory);
    not their log-likelihood variants (TASK_loglik, the same file) nor the groups."""
    import yaml

    tasks = {}
    for path in sorted(TASK_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "group" not in config and not config["task"].endswith(LOGLIK):
            tasks[config["task"]] = config["dataset_kwargs"]["data_files"]["test"]
    return tasks


def read_prompt_file(path: Path) -> bool:
    """Check every row of a prepared file (EvalError naming file, line and field); return whether it is chat."""
    fix = "prepare it with data_prep/prepare.py (docs/data.md)"
    if not path.is_file():
        raise EvalError(f"{path}: no such data file; {fix}")
    kinds = {check_row(row, where) for where, row in read_jsonl(path, fix)}
    if not kinds:
        raise EvalError(f"{path}: the data file is empty; {fix}")
    if len(kinds) > 1:
        raise EvalError(f"{path}: mixes chat and base prompts; prepare one file of each")
    return kinds.pop()


# Training samples through vLLM with no top-k and no top-p (OpenRLHF's SamplingParams: top_k -1, top_p 1.0).
# transformers would add its generation defaults (top_k 50, or the model's generation_config.json), so
# sampling states both: "no top-k" is 0 for transformers and -1 for vLLM.
NO_TOP_K = {"hf": 0, "vllm": -1}


def task_config(
    name: str,
    data_file: Path,
    *,
    n_samples: int,
    temperature: float,
    max_gen_toks: int,
    backend: str = "hf",
    config: RewardConfig | None = None,
) -> dict:
    """The shipped task template for one prepared file, greedy or sampling `n_samples` per question as
    training does, graded with `config` (default: this shell's), the file's sha256 in its metadata."""
    from lm_eval.tasks._yaml_loader import load_yaml

    task = load_yaml(TEMPLATE, resolve_func=True)
    task |= {"task": name, "dataset_kwargs": {"data_files": {"test": str(data_file)}}}
    task["metadata"] = task.get("metadata", {}) | {"data_sha256": file_sha256(data_file)}
    if config is not None:
        task["process_results"] = partial(process_results, config=config)
    task["generation_kwargs"] = task["generation_kwargs"] | {"max_gen_toks": max_gen_toks}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": NO_TOP_K[backend], "top_p": 1.0}
        task["generation_kwargs"] |= sampling
    if n_samples > 1:
        # repeats alone would grade only the first response (lm-eval's default take_first filter)
        task["repeats"] = n_samples
        task["filter_list"] = [{"name": "all", "filter": [{"function": "take_first_k", "k": n_samples}]}]
    return task


def file_sha256(path: Path) -> str:
    """The sha256 of a data file, recorded in each task's metadata (summary.json's `data_sha256`)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_configs(name: str, data_file: Path, mode: str, settings: Mapping) -> list[dict]:
    """The lm-eval tasks of one prepared file in `mode`: the generate task (`task_config`), its
    log-likelihood variant NAME_loglik (the shipped loglik template, every row's options checked), or both."""
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = [] if mode == "loglik" else [task_config(name, data_file, **settings)]
    if mode != "generate":
        for where, row in read_jsonl(data_file, "prepare it with data_prep/prepare.py (docs/data.md)"):
            check_choices(row, where)
        config = load_yaml(LOGLIK_TEMPLATE, resolve_func=True)
        config["metadata"] = config.get("metadata", {}) | {"data_sha256": file_sha256(data_file)}
        configs.append(config | {"task": name + LOGLIK, "dataset_kwargs": {"data_files": {"test": str(data_file)}}})
    return configs


def checkpoints(run_dir: Path) -> list[tuple[int | None, Path]]:
    """(step, folder) for each Hugging Face checkpoint of an OpenRLHF run, by step, then (None, the final model).

    OpenRLHF 0.11.2 (trainer/ray/ppo_actor.py `save_checkpoint`, with --ckpt.save_hf) writes
    `CKPT_PATH/global_step{N}_hf`, and `best_global_step{N}_hf` for its best eval score (the same weights as
    step N's regular copy when both exist); `cli/train_ppo_ray.py` saves the final model to
    --ckpt.output_dir, which the launcher sets to OUTPUT_DIR/model. The final model records no step.
    """
    if not run_dir.is_dir():
        raise EvalError(f"--run-dir {run_dir}: no such folder")
    by_step: dict[int, Path] = {}
    for path in sorted((run_dir / "ckpt").glob("*global_step*_hf"), key=lambda p: p.name.startswith("best_")):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            by_step.setdefault(int(match[1]), path)
    found: list[tuple[int | None, Path]] = sorted(by_step.items())
    if (run_dir / "model").is_dir():
        found.append((None, run_dir / "model"))
    if not found:
        raise EvalError(
            f"--run-dir {run_dir}: no ckpt/global_step*_hf folder and no model/ folder; Hugging Face "
            "checkpoints need --ckpt.save_hf (the launch scripts pass it)"
        )
    return found


def check_model(model: str) -> None:
    """EvalError for a model path that does not exist. `org/name` with no such local folder is a hub id."""
    if "," in model or "=" in model:
        raise EvalError(f"model {model}: lm-eval's model arguments cannot hold ',' or '='; link the folder elsewhere")
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise EvalError(
                f"model {model}: no config.json; give a Hugging Face model folder (ckpt/global_stepN_hf, "
                "the run's model/) or a hub id"
            )
        return
    looks_local = model.startswith(("/", ".", "~")) or model.count("/") != 1 or Path(model.split("/")[0]).exists()
    if looks_local:
        raise EvalError(f"model {model}: no such folder")
    check_hub_model(model)


def model_path(model: str) -> str:
    """What identifies a model: its folder's resolved path (`m`, `./m` and /abs/m are one model), or a hub id."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_fingerprint(backend: str, model_args: str, model: str) -> str:
    """Names the response cache: lm-eval keys cached texts by prompt and generation settings, not by model,
    so one cache per backend, model arguments (besides pretrained) and model: its resolved path and its
    files (names, sizes, times), so that `m` and `./m` share a cache and a retrained or overwritten
    checkpoint never gets another model's responses."""
    path = Path(model_path(model))
    identity: list = [str(path)]
    if path.is_dir():
        files = [
            (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()
        ]
        identity.append(sorted(files))
    return hashlib.sha256(json.dumps([backend, model_args, identity]).encode()).hexdigest()[:16]


def check_owner(folder: Path, model: str) -> None:
    """EvalError when `folder` holds another model's lm-eval runs (two models of one name, e.g. runs/sft/model
    and runs/ppo/model, evaluated into one --output-dir in separate calls): never merge them."""
    for path in sorted(folder.glob("results_*.json")):
        loaded = pretrained(load_results(path))
        if loaded and model_path(loaded) != model_path(model):
            raise EvalError(
                f"{folder} holds the evaluation of another model, {loaded} ({path.name}); evaluate {model} "
                "into another --output-dir"
            )


def remove_stale_scratch(folder: Path) -> None:
    """Remove the scratch folders (.lm_eval-PID-*) that a killed run left in `folder`, with a note each."""
    for scratch in sorted(folder.glob(".lm_eval-*")):
        pid = scratch.name.split("-")[1]
        if pid.isdigit() and _running(int(pid)):
            continue
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"med-rlvr evaluate: note: removed {scratch}, left by an interrupted run", file=sys.stderr)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _labels(models: Sequence[str]) -> list[str]:
    """A folder name per model: its own name, with its parent's in front when two share a name."""
    names = [Path(model).name for model in models]
    labels = [
        f"{Path(model).parent.name}-{name}" if names.count(name) > 1 else name
        for model, name in zip(models, names, strict=True)
    ]
    if len(set(labels)) < len(labels):
        raise EvalError(f"two models would share an output folder ({', '.join(labels)}); evaluate them separately")
    return labels


def evaluate_model(
    model: str,
    tasks: Mapping[str, tuple[Path, bool]],
    output: Path,
    *,
    model_args: str,
    settings: Mapping,
    batch_size: str | None,
    device: str | None,
    limit: int | None,
    mode: str = "generate",
) -> None:
    """Run lm-eval on one model and move its results and sample logs into `output`; a folder this call
    created is removed again when the run fails.

    lm-eval's EvaluationTracker writes the files (its own format, which `report` reads) into a scratch
    folder named by this process; they are then checked and moved in one by one with os.replace, because
    the tracker only logs a warning when a write fails.
    """
    created = next((folder for folder in [*reversed(output.parents), output] if not folder.exists()), None)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(output)
    try:
        _evaluate(model, tasks, output, model_args, settings, batch_size, device, limit, mode)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _evaluate(model, tasks, output, model_args, settings, batch_size, device, limit, mode) -> None:
    """evaluate_model's lm-eval runs, one for base prompts and one for chat prompts."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    backend = settings["backend"]
    full_args = ",".join(part for part in (f"pretrained={model_path(model)}", model_args) if part)
    cache = output / f"lm_eval_cache_{model_fingerprint(backend, model_args, model)}"
    # A run applies a chat template to all of its tasks or none, so chat files get their own run.
    for chat in sorted({chat for _, chat in tasks.values()}):
        chosen = [(name, path) for name, (path, is_chat) in tasks.items() if is_chat == chat]
        configs = [config for name, path in chosen for config in mode_configs(name, path, mode, settings)]
        with tempfile.TemporaryDirectory(dir=output, prefix=f".lm_eval-{os.getpid()}-") as scratch:
            tracker = EvaluationTracker(output_path=scratch)
            results = simple_evaluate(
                model=backend,
                model_args=full_args,
                tasks=configs,
                task_manager=TaskManager(include_defaults=False),
                batch_size=batch_size,
                device=device,
                use_cache=str(cache),
                limit=limit,
                log_samples=True,
                apply_chat_template=chat,
                evaluation_tracker=tracker,
            )
            samples = results.pop("samples")
            tracker.save_results_aggregated(results=results, samples=samples)
            for name in samples:
                tracker.save_results_samples(task_name=name, samples=samples[name])
            written = [path for path in Path(scratch).rglob("*") if path.is_file()]
            logged = {match["task"] for path in written if (match := SAMPLES_NAME.fullmatch(path.name))}
            if logged != set(samples) or not any(path.name.startswith("results_") for path in written):
                raise EvalError(
                    f"lm-eval did not write all its results and sample logs for {model} (see its warnings)"
                )
            for path in written:
                os.replace(path, output / path.name)


def check_flags(
    models: Sequence[str],
    run_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike | None,
    n_samples: int,
    temperature: float | None,
    max_gen_toks: int | None,
    limit: int | None,
    model_args: str,
) -> dict:
    """lm-eval's generation settings from `run`'s flags; EvalError for a flag or combination it refuses.
    Nothing is read: the command line calls this first, so that these are usage errors (exit 2)."""
    for name, number in (("--n-samples", n_samples), ("--max-gen-toks", max_gen_toks), ("--limit", limit)):
        if number is not None and number < 1:  # lm-eval would read --limit 0 as no limit
            raise EvalError(f"{name} must be at least 1, got {number}")
    temperature = (0.0 if n_samples == 1 else 1.0) if temperature is None else temperature
    if n_samples > 1 and temperature <= 0:
        raise EvalError("--n-samples > 1 needs --temperature > 0: greedy decoding gives the same response every time")
    if "pretrained=" in model_args:
        raise EvalError("--model-args: give the model as an argument of `run`, not as pretrained=")
    if not models and run_dir is None:
        raise EvalError("no model: name one or more model folders, or --run-dir OUTPUT_DIR of a training run")
    if output_dir is None and run_dir is None:
        raise EvalError("--output-dir is required without --run-dir")
    return {"n_samples": n_samples, "temperature": temperature}


def plan_models(
    models: Sequence[str], run_dir: Path | None, output_dir: Path, base_model: str | None
) -> tuple[list[str], list[str], dict[str, int | None]]:
    """The models to evaluate (those named, then the run's checkpoints), their output folders' names, and
    the step of each run model: a checkpoint's, None for the final model, 0 for a named model that is the
    run's base model. EvalError for a model that is not there or whose folder holds another model."""
    steps = {str(path): step for step, path in checkpoints(run_dir)} if run_dir is not None else {}
    steps |= {model: 0 for model in models if base_model and model_path(model) == model_path(base_model)}
    models = [*models, *(model for model in steps if model not in models)]
    for model in models:
        check_model(model)
    labels = _labels(models)
    for model, label in zip(models, labels, strict=True):
        check_owner(output_dir / label, model)
    return models, labels, steps


def prompt_tasks(data: Sequence[str | os.PathLike]) -> dict[str, tuple[Path, bool]]:
    """Task name -> (prepared file, whether its prompts are chats), every row checked: the paper's shipped
    tasks without `data` (not medrlvr_ood's); else a task per file, named as the shipped task that reads it
    or medrlvr_ + its stem."""
    shipped = {name: Path(file) for name, file in default_tasks().items()}
    if not data:
        named = {name: file for name, file in shipped.items() if name not in ood_tasks()}
    else:
        shipped_name = {file.resolve(): name for name, file in reversed(shipped.items())}  # the first one wins
        named = {
            shipped_name.get(Path(file).resolve(), "medrlvr_" + re.sub(r"\W", "_", Path(file).stem)): Path(file)
            for file in data
        }
    if len(named) < len(data):
        raise EvalError("two data files have the same name; rename one (the task name comes from the file name)")
    return {name: (path, read_prompt_file(path)) for name, path in named.items()}


def run(
    models: Sequence[str],
    output_dir: str | os.PathLike | None,
    *,
    run_dir: str | os.PathLike | None = None,
    data: Sequence[str | os.PathLike] = (),
    backend: str = "hf",
    model_args: str = "",
    n_samples: int = 1,
    temperature: float | None = None,
    max_gen_toks: int | None = None,
    limit: int | None = None,
    batch_size: str | None = None,
    device: str | None = None,
    settings_from: str | None = None,
    mode: str = "generate",
) -> Path:
    """Evaluate each model (and each checkpoint of `run_dir`) on each prepared file; write one folder per
    model (lm-eval's files, report.md, summary.json), and comparison.md/.json and, for a run, steps.*,
    graded and generated as the run's manifest says (`settings.run_settings`). `mode`: generate and grade
    (the paper's), score each option letter's log-likelihood (`loglik`), or both. Every input is checked
    before any model loads. Returns the output folder."""
    flags = check_flags(models, run_dir, output_dir, n_samples, temperature, max_gen_toks, limit, model_args)
    check_backend(backend)
    run_dir = Path(run_dir) if run_dir is not None else None
    chosen = run_settings(run_dir, max_gen_toks, settings_from)
    output_dir = run_dir / "eval" if output_dir is None else Path(output_dir)
    models, labels, steps = plan_models(models, run_dir, output_dir, chosen.base_model)
    tasks = prompt_tasks(data)
    device = resolve_device(backend, device)
    print(f"med-rlvr evaluate: settings: {describe(chosen)}", file=sys.stderr)
    task_settings = flags | {"max_gen_toks": chosen.max_gen_toks, "backend": backend, "config": chosen.config}
    summaries = {}
    for model, label in zip(models, labels, strict=True):
        print(f"med-rlvr evaluate: {model} -> {output_dir / label}", file=sys.stderr)
        evaluate_model(
            model,
            tasks,
            output_dir / label,
            model_args=model_args,
            settings=task_settings,
            batch_size=batch_size,
            device=device,
            limit=limit,
            mode=mode,
        )
        summaries[model] = report(output_dir / label, chosen.config)
        print((output_dir / label / "report.md").read_text(encoding="utf-8"))
    if len(models) > 1:
        table = compare([output_dir / label for label in labels], config=chosen.config)
        print(table["markdown"])
        write_comparison(table, output_dir / "comparison.md")
    if run_dir is not None:
        timeline = run_dir / "analysis" / "timeline.json"  # analyze's, as the README runs it
        pairs = zip(models, labels, strict=True)
        write_steps(
            output_dir, [(label, steps[model], summaries[model]) for model, label in pairs if model in steps], timeline
        )
        print((output_dir / "steps.md").read_text(encoding="utf-8"))
    return output_dir
