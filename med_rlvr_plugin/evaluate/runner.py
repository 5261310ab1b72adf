"""Running lm-eval on models (or a training run's checkpoints) x prepared prompt files, and accuracy by step."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from med_rlvr_plugin.defaults import MAX_NEW_TOKENS
from med_rlvr_plugin.evaluate import (
    LOGLIK_TEMPLATE,
    TASK_DIR,
    TEMPLATE,
    EvalError,
    check_choices,
    check_row,
    ood_tasks,
    training_config,
)
from med_rlvr_plugin.evaluate.reports import cell, compare, markdown_table, report, write_comparison
from med_rlvr_plugin.files import png_bytes, read_jsonl, write_together
from med_rlvr_plugin.lm_eval_logs import LOGLIK, SAMPLES_NAME

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


def task_config(name: str, data_file: Path, n_samples: int, temperature: float, max_gen_toks: int) -> dict:
    """The shipped task template for one prepared file, greedy or sampling `n_samples` per question."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(TEMPLATE, resolve_func=True)
    config |= {"task": name, "dataset_kwargs": {"data_files": {"test": str(data_file)}}}
    config["generation_kwargs"] = config["generation_kwargs"] | {"max_gen_toks": max_gen_toks}
    if temperature > 0:
        config["generation_kwargs"] |= {"do_sample": True, "temperature": temperature}
    if n_samples > 1:
        # repeats alone would grade only the first response (lm-eval's default take_first filter)
        config["repeats"] = n_samples
        config["filter_list"] = [{"name": "all", "filter": [{"function": "take_first_k", "k": n_samples}]}]
    return config


def mode_configs(name: str, data_file: Path, mode: str, settings: Mapping) -> list[dict]:
    """The lm-eval tasks of one prepared file in `mode`: the generate task (`task_config`), its
    log-likelihood variant NAME_loglik (the shipped loglik template, every row's options checked), or both."""
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = [] if mode == "loglik" else [task_config(name, data_file, **settings)]
    if mode != "generate":
        for where, row in read_jsonl(data_file, "prepare it with data_prep/prepare.py (docs/data.md)"):
            check_choices(row, where)
        config = load_yaml(LOGLIK_TEMPLATE, resolve_func=True)
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


def model_fingerprint(backend: str, model_args: str, model: str) -> str:
    """Names the response cache: lm-eval keys cached texts by prompt and generation settings, not by model,
    so one cache per backend, model arguments and weights (file names, sizes, times) keeps a retrained or
    overwritten checkpoint from getting another model's responses."""
    path = Path(model).expanduser()
    if path.is_dir():
        files = [
            (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()
        ]
        identity = [str(path.resolve()), sorted(files)]
    else:
        identity = [model]  # a hub id
    return hashlib.sha256(json.dumps([backend, model_args, identity]).encode()).hexdigest()[:16]


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
    backend: str,
    model_args: str,
    settings: Mapping,
    batch_size: str | None,
    device: str | None,
    limit: int | None,
    mode: str = "generate",
) -> None:
    """Run lm-eval on one model and move its results and sample logs into `output`.

    lm-eval's EvaluationTracker writes the files (its own format, which `report` reads) into a temporary
    folder; they are then checked and moved in one by one with os.replace, because the tracker only logs
    a warning when a write fails.
    """
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    output.mkdir(parents=True, exist_ok=True)
    full_args = ",".join(part for part in (f"pretrained={model}", model_args) if part)
    cache = output / f"lm_eval_cache_{model_fingerprint(backend, full_args, model)}"
    # A run applies a chat template to all of its tasks or none, so chat files get their own run.
    for chat in sorted({chat for _, chat in tasks.values()}):
        chosen = [(name, path) for name, (path, is_chat) in tasks.items() if is_chat == chat]
        configs = [config for name, path in chosen for config in mode_configs(name, path, mode, settings)]
        with tempfile.TemporaryDirectory(dir=output, prefix=".lm_eval-") as scratch:
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


def write_steps(output_dir: Path, rows: Sequence[tuple[str, int | None, Mapping]]) -> None:
    """Accuracy against training step: steps.md, steps.json and steps.png in `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = [
        (label, step, {task: entry["metrics"]["accuracy"] for task, entry in summary["tasks"].items()})
        for label, step, summary in rows
    ]
    tasks = sorted({task for _, _, by_task in accuracy for task in by_task})
    table = [
        [label, "final" if step is None else str(step)]
        + [cell(by_task[task], "rate") if task in by_task else "-" for task in tasks]
        for label, step, by_task in accuracy
    ]
    markdown = (
        "Accuracy (lenient, the paper's), percent [95% Wilson interval], by training step.\n\n"
        + markdown_table(["checkpoint", "step", *tasks], table)
        + "\n"
    )
    steps_json = [{"checkpoint": label, "step": step, "accuracy": by_task} for label, step, by_task in accuracy]
    figure, axes = plt.subplots(figsize=(7, 4))
    for index, task in enumerate(tasks):
        points = [(step, by_task[task]) for _, step, by_task in accuracy if step is not None and task in by_task]
        if points:
            values = [100 * entry["value"] for _, entry in points]
            errors = [
                [value - 100 * entry["low"] for value, (_, entry) in zip(values, points, strict=True)],
                [100 * entry["high"] - value for value, (_, entry) in zip(values, points, strict=True)],
            ]
            axes.errorbar(
                [step for step, _ in points], values, yerr=errors, marker="o", capsize=3, color=f"C{index}", label=task
            )
        final = [by_task[task] for _, step, by_task in accuracy if step is None and task in by_task]
        if final:  # the final model records no step: a dashed level across the plot
            axes.axhline(100 * final[0]["value"], linestyle="--", color=f"C{index}", label=f"{task}, final model")
    axes.set_xlabel("training step")
    axes.set_ylabel("accuracy (%)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    write_together(
        {
            output_dir / "steps.md": [markdown],
            output_dir / "steps.json": [json.dumps(steps_json, indent=1) + "\n"],
            output_dir / "steps.png": png_bytes(figure, dpi=120),
        }
    )


def check_flags(
    models: Sequence[str],
    run_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike | None,
    n_samples: int,
    temperature: float | None,
    max_gen_toks: int,
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
    return {"n_samples": n_samples, "temperature": temperature, "max_gen_toks": max_gen_toks}


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
    max_gen_toks: int = MAX_NEW_TOKENS,
    limit: int | None = None,
    batch_size: str | None = None,
    device: str | None = None,
    mode: str = "generate",
) -> Path:
    """Evaluate each model (and each checkpoint of `run_dir`) on each prepared file; write one folder per
    model (lm-eval's files, report.md, summary.json), and comparison.md/.json and, for a run, steps.*.
    `mode`: generate and grade (the paper's), score each option letter's log-likelihood (`loglik`), or both.
    Every input is checked before any model loads. Returns the output folder."""
    settings = check_flags(models, run_dir, output_dir, n_samples, temperature, max_gen_toks, limit, model_args)
    training_config()  # a bad MED_RLVR_* variable fails now, not in lm-eval's grading after generation
    steps = {str(path): step for step, path in checkpoints(Path(run_dir))} if run_dir is not None else {}
    models = [*models, *steps]
    output_dir = Path(run_dir) / "eval" if output_dir is None else Path(output_dir)
    for model in models:
        check_model(model)
    tasks = prompt_tasks(data)

    labels = _labels(models)
    summaries = {}
    for model, label in zip(models, labels, strict=True):
        print(f"med-rlvr evaluate: {model} -> {output_dir / label}", file=sys.stderr)
        evaluate_model(
            model,
            tasks,
            output_dir / label,
            backend=backend,
            model_args=model_args,
            settings=settings,
            batch_size=batch_size,
            device=device,
            limit=limit,
            mode=mode,
        )
        summaries[model] = report(output_dir / label)
        print((output_dir / label / "report.md").read_text(encoding="utf-8"))
    if len(models) > 1:
        table = compare([output_dir / label for label in labels])
        print(table["markdown"])
        write_comparison(table, output_dir / "comparison.md")
    if steps:
        rows = [
            (label, steps[model], summaries[model])
            for model, label in zip(models, labels, strict=True)
            if model in steps
        ]
        write_steps(output_dir, rows)
        print((output_dir / "steps.md").read_text(encoding="utf-8"))
    return output_dir
