"""The paper's accuracy table for any model or checkpoint: lm-evaluation-harness generates, our verifier grades.

    python -m med_rlvr_plugin.evaluate run [MODEL ...] [--run-dir OUTPUT_DIR] [--data FILE ...] --output-dir DIR
    python -m med_rlvr_plugin.evaluate report DIR
    python -m med_rlvr_plugin.evaluate compare DIR1 DIR2 ... [--metric acc] [--output FILE.md]

lm-eval (0.4.13) does everything about generation: backends (hf, vllm), batching, the request cache, sample
logs. This module adds three layers, top to bottom:
- lm-eval task hooks (`process_docs`, `doc_to_text`, `process_results`) for prepared prompt files, named by
  the task YAMLs in `lm_eval_tasks/` and by the tasks `run` builds for any file. `process_results` is
  `grade_texts`: `grade_response` under the training RewardConfig (MED_RLVR_* variables, the paper's by
  default) in lenient format, plus the strict format, the relaxed letter and lengths.
- `report` and `compare` read lm-eval's sample logs and grade them again with the same `grade_texts`, using
  the prompt exactly as sent (after any chat template), so any lm-eval run, ours or the plain CLI's, gets
  the full table: Wilson intervals, subgroups, pass@k, paired tests.
- the statistics, pure functions: `wilson_interval`, `mean_interval`, `pass_at_k`, `mcnemar_p`,
  `paired_bootstrap`.
docs/evaluation.md has the commands, the metric definitions and an example table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

from med_rlvr_plugin.defaults import MAX_NEW_TOKENS
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.verifier import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RewardConfig,
    config_from_env,
    grade_response,
    parse_answer_letter,
    parse_label,
)

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TEMPLATE = TASK_DIR / "_medrlvr_template_yaml"
# Per-question metrics: key, what the report calls it, and kind. A "rate" is a proportion of responses (a
# Wilson interval with one response per question), a "mean" any other average (a t interval).
METRICS = (
    ("acc", "accuracy (lenient, the paper's)", "rate"),
    ("acc_strict", "accuracy (strict format)", "rate"),
    ("well_formed", "well formed (lenient)", "rate"),
    ("relaxed_acc", "relaxed accuracy (last answer block, any format)", "rate"),
    ("answer_leak", "answer leak", "rate"),
    ("preamble", "text before <think>", "rate"),
    ("reward", "mean reward (training config)", "mean"),
    ("think_words", "thinking words", "mean"),
    ("response_words", "response words", "mean"),
)
RATES = tuple(key for key, _, kind in METRICS if kind == "rate")
# Metadata fields whose values split a task into subgroups: MedQA's exam step, MMLU-Pro's source.
SUBGROUP_FIELDS = ("meta_info", "src")
Z95 = 1.959963984540054
_SAMPLES_NAME = re.compile(r"samples_(?P<task>.+)_(?P<stamp>\d{4}-\d\d-\d\dT[\d.-]+)\.jsonl")
_CHECKPOINT_NAME = re.compile(r"(?:best_)?global_step(\d+)_hf")


class EvalError(Exception):
    """Input the evaluation cannot use; the message says where and what to do."""


# ---------------------------------------------------------------- rows and grading (pure)


def check_row(row: object, where: str) -> bool:
    """Raise EvalError unless `row` is a gradable prepared row; return whether its prompt is a chat.

    A chat prompt (`prepare.py --chat`) must be one user message: lm-eval renders a row to one user turn
    and applies the model's chat template itself (`--apply_chat_template`).
    """
    fix = "evaluate files written by data_prep/prepare.py (docs/data.md)"
    if not isinstance(row, dict):
        raise EvalError(f"{where}: not a JSON object; {fix}")
    if "prompt" not in row or "label" not in row:
        missing = " and ".join(repr(field) for field in ("prompt", "label") if field not in row)
        raise EvalError(f"{where}: no field {missing}; {fix}")
    prompt = row["prompt"]
    chat = isinstance(prompt, list)
    if chat and not (
        len(prompt) == 1
        and isinstance(prompt[0], dict)
        and prompt[0].get("role") == "user"
        and isinstance(prompt[0].get("content"), str)
    ):
        raise EvalError(f"{where}: field 'prompt': a chat prompt must be exactly one user message; {fix}")
    if not chat and not (isinstance(prompt, str) and prompt.strip()):
        raise EvalError(f"{where}: field 'prompt' must be non-empty text or a messages list; {fix}")
    try:
        parse_label(row["label"])
    except ValueError as error:
        raise EvalError(f"{where}: field 'label': {error}") from None
    return chat


def doc_to_text(doc: Mapping) -> str:
    """The text lm-eval sends: a base prompt as is, a chat prompt's user message (lm-eval wraps it)."""
    prompt = doc["prompt"]
    return prompt[0]["content"] if isinstance(prompt, list) else prompt


def relaxed_letter(completion: str) -> str | None:
    """The letter the last `<answer>...</answer>` block names, whatever the rest of the response looks like."""
    close = completion.rfind(ANSWER_CLOSE)
    start = completion.rfind(ANSWER_OPEN, 0, close) if close >= 0 else -1
    return parse_answer_letter(completion[start + len(ANSWER_OPEN) : close]) if start >= 0 else None


def grade_texts(prompt: str, texts: Sequence[str], label: object, config: RewardConfig) -> dict[str, float]:
    """Each metric of METRICS for one question, averaged over its responses `texts` to `prompt`.

    Accuracy and well-formedness are `grade_response` in lenient format (the paper's) and accuracy again in
    strict format; the reward is the one `config` (the training run's) gives.
    """
    gold = parse_label(label)
    lenient, strict = _formats(config)
    totals: Counter = Counter()
    for text in texts:
        grade = grade_response(prompt + text, prompt, label, lenient)
        strict_grade = grade_response(prompt + text, prompt, label, strict)
        totals.update(
            {
                "acc": grade.correct,
                "acc_strict": strict_grade.correct,
                "well_formed": grade.well_formed,
                "relaxed_acc": relaxed_letter(grade.completion) == gold,
                "answer_leak": grade.answer_leak,
                "preamble": grade.preamble,
                "reward": (strict_grade if config.format == "strict" else grade).reward,
                "think_words": grade.think_words,
                "response_words": len(grade.completion.split()),
            }
        )
    return {key: totals[key] / len(texts) for key, _, _ in METRICS}


@lru_cache(maxsize=8)
def _formats(config: RewardConfig) -> tuple[RewardConfig, RewardConfig]:
    """`config` in lenient and in strict format; cached, since copying a dataclass costs a tenth of grading."""
    return replace(config, format="lenient"), replace(config, format="strict")


# ---------------------------------------------------------------- lm-eval task hooks


@lru_cache(maxsize=1)
def training_config() -> RewardConfig:
    """The reward configuration of this process's MED_RLVR_* variables, as the reward file reads them."""
    return config_from_env(os.environ)


def process_docs(dataset):
    """lm-eval's hook on the loaded rows: stop before any generation when a row cannot be graded."""
    training_config()
    for index, row in enumerate(dataset):
        check_row(row, f"row {index + 1} of the task's data file")
    return dataset


def process_results(doc: Mapping, results: list) -> dict[str, float]:
    """lm-eval's hook: `results` is [text], or [[text, ...]] with repeats and a take_first_k filter."""
    texts = results[0] if isinstance(results[0], list) else results
    return grade_texts(doc_to_text(doc), texts, doc["label"], training_config())


# ---------------------------------------------------------------- statistics (pure)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (95% by default); n must be positive."""
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bounds at p = 0 and p = 1 are exactly 0 and 1; rounding would leave them a hair inside.
    return (0.0 if successes == 0 else center - half), (1.0 if successes == n else center + half)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """The t interval of a mean: mean +- t(n-1) * sd / sqrt(n); None for fewer than two values."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None, None
    mean = sum(values) / n
    sd = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b and c are the discordant pairs (only one model right)."""
    from scipy import stats

    return stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0


def paired_bootstrap(
    differences: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile 95% interval of the mean paired difference over questions resampled with replacement,
    and the bootstrap two-sided p-value (twice the share of resampled means on the far side of 0)."""
    import numpy as np
    from scipy import stats

    data = np.asarray(differences, dtype=float)
    if np.all(data == data[0]):  # every resample is the same mean; scipy calls this degenerate
        return float(data[0]), float(data[0]), 1.0 if data[0] == 0 else 0.0
    result = stats.bootstrap(
        (data,), np.mean, n_resamples=resamples, method="percentile", batch=1000, rng=np.random.default_rng(seed)
    )
    means = result.bootstrap_distribution
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(result.confidence_interval.low), float(result.confidence_interval.high), p


# ---------------------------------------------------------------- sample logs -> graded questions


def latest_sample_logs(directory: Path) -> dict[str, Path]:
    """Task -> its newest lm-eval sample log in `directory` or one folder below (lm-eval's CLI adds a
    folder per model). Each lm-eval run adds files stamped with its start time; the newest one wins."""
    found = sorted(directory.glob("samples_*.jsonl")) + sorted(directory.glob("*/samples_*.jsonl"))
    folders = sorted({str(path.parent) for path in found})
    if len(folders) > 1:
        raise EvalError(
            f"{directory} holds sample logs of several models ({', '.join(folders)}): report one "
            "folder, or compare them"
        )
    latest: dict[str, tuple[str, Path]] = {}
    for path in found:
        match = _SAMPLES_NAME.fullmatch(path.name)
        if match and match["stamp"] > latest.get(match["task"], ("", path))[0]:
            latest[match["task"]] = (match["stamp"], path)
    if not latest:
        raise EvalError(
            f"{directory}: no lm-eval sample logs (samples_TASK_TIME.jsonl); run `evaluate run`, or "
            "lm_eval with --output_path and --log_samples"
        )
    return {task: path for task, (_, path) in sorted(latest.items())}


def read_questions(path: Path, config: RewardConfig) -> list[dict]:
    """One record per logged question: `key` (for pairing), `subgroup`, `k` (responses) and METRICS."""
    questions, seen = [], Counter()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                sample = json.loads(line)
                doc, texts, request = sample["doc"], sample["resps"][0], sample["arguments"]["gen_args_0"]
                prompt, generation = request["arg_0"], request["arg_1"]
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                raise EvalError(
                    f"{where}: not an lm-eval generate_until sample log line (doc, resps, "
                    "arguments.gen_args_0.arg_0 and arg_1)"
                ) from None
            check_row(doc, f"{where}: doc")
            if any(generation.get("until") or ()):
                raise EvalError(
                    f"{where}: generated with stop strings {generation['until']}, which lm-eval cuts from "
                    "the response, so the verifier would grade cut responses; generate with `until: []`"
                )
            # Rows are paired across models by their prepared `id` (its n-th occurrence, should a file repeat one).
            identity = str(doc.get("id", sample.get("doc_id")))
            seen[identity] += 1
            metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            field = next((name for name in SUBGROUP_FIELDS if name in metadata), None)
            questions.append(
                {
                    "key": f"{identity}#{seen[identity]}",
                    "subgroup": (field, str(metadata[field])) if field else None,
                    "k": len(texts),
                    **grade_texts(prompt, texts, doc["label"], config),
                }
            )
    if not questions:
        raise EvalError(f"{path}: the sample log is empty")
    if len({question["k"] for question in questions}) > 1:
        raise EvalError(f"{path}: questions have different numbers of responses; re-run the task")
    return questions


def summarize(questions: Sequence[Mapping]) -> dict:
    """Each metric's value and 95% interval over questions; pass@k with k responses per question."""
    n, k = len(questions), questions[0]["k"]
    summary: dict = {"n": n, "responses_per_question": k, "metrics": {}}
    for key, _, kind in METRICS:
        values = [question[key] for question in questions]
        value = sum(values) / n
        # One response per question makes a rate a binomial proportion; k > 1 makes it a mean of shares.
        low, high = wilson_interval(sum(values), n) if kind == "rate" and k == 1 else mean_interval(values)
        summary["metrics"][key] = {"value": value, "low": low, "high": high}
    if k > 1:
        values = [pass_at_k(k, round(question["acc"] * k), k) for question in questions]
        low, high = mean_interval(values)
        summary["metrics"][f"pass@{k}"] = {"value": sum(values) / n, "low": low, "high": high}
    return summary


def summarize_task(questions: Sequence[Mapping]) -> dict:
    """`summarize` for the whole task and for each subgroup (MedQA step, MMLU-Pro source)."""
    summary = summarize(questions)
    groups = defaultdict(list)
    for question in questions:
        if question["subgroup"]:
            groups[question["subgroup"]].append(question)
    if groups:
        summary["subgroups"] = {
            "field": next(iter(groups))[0],
            "groups": {value: summarize(members) for (_, value), members in sorted(groups.items())},
        }
    return summary


# ---------------------------------------------------------------- tables


def _cell(entry: Mapping, kind: str, sign: str = "") -> str:
    """`value [low, high]`: rates in percent and means from 10 up with one decimal, smaller means with three."""
    scale, spec = (100, ".1f") if kind == "rate" else (1, ".1f" if abs(entry["value"]) >= 10 else ".3f")
    low, high = ("?" if entry[side] is None else f"{entry[side] * scale:{sign}{spec}}" for side in ("low", "high"))
    return f"{entry['value'] * scale:{sign}{spec}} [{low}, {high}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report_markdown(label: str, tasks: Mapping[str, Mapping]) -> str:
    """One model's table (a column per task) and its subgroup tables."""
    names = list(tasks)
    pass_k = sorted({key for task in tasks.values() for key in task["metrics"] if key.startswith("pass@")})
    metrics = list(METRICS) + [(key, f"{key} (unbiased estimator)", "rate") for key in pass_k]
    rows = [
        [title]
        + [_cell(tasks[name]["metrics"][key], kind) if key in tasks[name]["metrics"] else "-" for name in names]
        for key, title, kind in metrics
    ]
    rows.append(
        ["questions x responses"] + [f"{tasks[name]['n']} x {tasks[name]['responses_per_question']}" for name in names]
    )
    parts = [
        f"## {label}",
        "Percent (rates) or mean, with 95% intervals (Wilson for rates of one response "
        "per question, t otherwise). With k responses per question each rate is their mean: accuracy is "
        "pass@1.",
        _table(["metric", *names], rows),
    ]
    for name in names:
        if "subgroups" in tasks[name]:
            field, groups = tasks[name]["subgroups"]["field"], tasks[name]["subgroups"]["groups"]
            parts.append(f"### {name} by {field}")
            parts.append(
                _table(
                    [field, "n", "accuracy", "accuracy (strict)", "well formed"],
                    (
                        [value, str(group["n"])]
                        + [_cell(group["metrics"][key], "rate") for key in ("acc", "acc_strict", "well_formed")]
                        for value, group in groups.items()
                    ),
                )
            )
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- report and compare


def report(directory: str | os.PathLike, config: RewardConfig | None = None) -> dict:
    """Grade `directory`'s sample logs; write report.md and summary.json there; return the summary."""
    directory, config = Path(directory), config or training_config()
    if not directory.is_dir():
        raise EvalError(f"{directory}: no such folder")
    logs = latest_sample_logs(directory)
    tasks = {task: summarize_task(read_questions(path, config)) for task, path in logs.items()}
    summary = {
        "model": directory.name,
        "reward_config": asdict(config),
        "sample_logs": {task: str(path) for task, path in logs.items()},
        "tasks": tasks,
    }
    write_together(
        {
            directory / "summary.json": [json.dumps(summary, indent=1) + "\n"],
            directory / "report.md": [report_markdown(directory.name, tasks)],
        }
    )
    return summary


def compare(directories: Sequence[str | os.PathLike], metric: str = "acc", config: RewardConfig | None = None) -> dict:
    """The paper-style table: `metric` per model and task, and each model's difference from the first.

    A difference is paired when both models answered the same questions (same prepared ids): McNemar's
    exact test with one response per question, a bootstrap test otherwise, and a paired-bootstrap 95%
    interval. Models that answered different questions get the difference only.
    """
    if metric not in RATES:
        raise EvalError(f"--metric must be one of {', '.join(RATES)}, got {metric!r}")
    config = config or training_config()
    models = {
        Path(directory).name: {
            task: read_questions(path, config) for task, path in latest_sample_logs(Path(directory)).items()
        }
        for directory in directories
    }
    if len(models) < len(directories):
        raise EvalError("compare: two folders have the same name; give each model its own folder name")
    baseline_name, baseline = next(iter(models.items()))
    tasks = sorted({task for questions in models.values() for task in questions})
    table: dict = {"metric": metric, "baseline": baseline_name, "tasks": tasks, "models": {}}
    for name, model in models.items():
        table["models"][name] = entries = {}
        for task in tasks:
            if task not in model:
                continue
            entry = entries[task] = summarize(model[task])["metrics"][metric] | {"n": len(model[task])}
            if name == baseline_name or task not in baseline:
                continue
            ours = {q["key"]: q for q in model[task]}
            theirs = {q["key"]: q for q in baseline[task]}
            entry["difference"] = entry["value"] - summarize(baseline[task])["metrics"][metric]["value"]
            if ours.keys() != theirs.keys():
                entry["paired"] = False
                continue
            pairs = [(ours[key][metric], theirs[key][metric]) for key in theirs]
            low, high, p = paired_bootstrap([a - b for a, b in pairs])
            single = model[task][0]["k"] == baseline[task][0]["k"] == 1
            if single:
                p = mcnemar_p(sum(a > b for a, b in pairs), sum(a < b for a, b in pairs))
            entry |= {
                "paired": True,
                "low_difference": low,
                "high_difference": high,
                "p": p,
                "test": "McNemar exact" if single else "paired bootstrap",
            }
    table["markdown"] = compare_markdown(table)
    return table


def compare_markdown(table: Mapping) -> str:
    header = ["model"]
    for task in table["tasks"]:
        header += [task, "difference", "p"]
    rows = []
    for name, entries in table["models"].items():
        row = [name]
        for task in table["tasks"]:
            entry = entries.get(task)
            if entry is None:
                row += ["-", "", ""]
            elif "difference" not in entry:
                row += [_cell(entry, "rate"), "(baseline)" if name == table["baseline"] else "", ""]
            elif not entry["paired"]:
                row += [_cell(entry, "rate"), f"{entry['difference'] * 100:+.1f} (questions differ, unpaired)", ""]
            else:
                difference = {
                    "value": entry["difference"],
                    "low": entry["low_difference"],
                    "high": entry["high_difference"],
                }
                row += [_cell(entry, "rate"), _cell(difference, "rate", sign="+"), f"{entry['p']:.2g}"]
        rows.append(row)
    title = dict((key, title) for key, title, _ in METRICS)[table["metric"]]
    note = (
        f"{title}, percent [95% interval]; difference from {table['baseline']} in points [paired bootstrap 95% "
        "interval]; p: McNemar's exact test (one response per question) or the paired bootstrap."
    )
    return note + "\n\n" + _table(header, rows) + "\n"


# ---------------------------------------------------------------- run: lm-eval on models x prompt files


def default_tasks() -> dict[str, str]:
    """The shipped tasks: name -> the prepared file it reads (relative to the working directory)."""
    import yaml

    tasks = {}
    for path in sorted(TASK_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        tasks[config["task"]] = config["dataset_kwargs"]["data_files"]["test"]
    return tasks


def read_prompt_file(path: Path) -> bool:
    """Check every row of a prepared file (EvalError naming file, line and field); return whether it is chat."""
    if not path.is_file():
        raise EvalError(f"{path}: no such data file; prepare it with data_prep/prepare.py (docs/data.md)")
    kinds = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvalError(f"{path}:{number}: not JSON ({error.msg})") from None
            kinds.add(check_row(row, f"{path}:{number}"))
    if not kinds:
        raise EvalError(f"{path}: the data file is empty; prepare it with data_prep/prepare.py (docs/data.md)")
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
        configs = [task_config(name, path, **settings) for name, (path, is_chat) in tasks.items() if is_chat == chat]
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
            logged = {match["task"] for path in written if (match := _SAMPLES_NAME.fullmatch(path.name))}
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
        (label, step, {task: entry["metrics"]["acc"] for task, entry in summary["tasks"].items()})
        for label, step, summary in rows
    ]
    tasks = sorted({task for _, _, by_task in accuracy for task in by_task})
    table = [
        [label, "final" if step is None else str(step)]
        + [_cell(by_task[task], "rate") if task in by_task else "-" for task in tasks]
        for label, step, by_task in accuracy
    ]
    markdown = (
        "Accuracy (lenient, the paper's), percent [95% Wilson interval], by training step.\n\n"
        + _table(["checkpoint", "step", *tasks], table)
        + "\n"
    )
    steps_json = [{"checkpoint": label, "step": step, "acc": by_task} for label, step, by_task in accuracy]
    write_together(
        {output_dir / "steps.md": [markdown], output_dir / "steps.json": [json.dumps(steps_json, indent=1) + "\n"]}
    )

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
    temporary = output_dir / f".steps.{os.getpid()}.png"
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, output_dir / "steps.png")


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
) -> Path:
    """Evaluate each model (and each checkpoint of `run_dir`) on each prepared file; write one folder per
    model (lm-eval's files, report.md, summary.json), and comparison.md/.json and, for a run, steps.*.
    Every input is checked before any model loads. Returns the output folder."""
    for name, number in (("--n-samples", n_samples), ("--max-gen-toks", max_gen_toks), ("--limit", limit)):
        if number is not None and number < 1:  # lm-eval would read --limit 0 as no limit
            raise EvalError(f"{name} must be at least 1, got {number}")
    training_config()  # a bad MED_RLVR_* variable fails now, not in lm-eval's grading after generation
    temperature = (0.0 if n_samples == 1 else 1.0) if temperature is None else temperature
    if n_samples > 1 and temperature <= 0:
        raise EvalError("--n-samples > 1 needs --temperature > 0: greedy decoding gives the same response every time")
    if "pretrained=" in model_args:
        raise EvalError("--model-args: give the model as an argument of `run`, not as pretrained=")
    steps: dict[str, int | None] = {}
    models = list(models)
    if run_dir is not None:
        for step, path in checkpoints(Path(run_dir)):
            models.append(str(path))
            steps[str(path)] = step
    if not models:
        raise EvalError("no model: name one or more model folders, or --run-dir OUTPUT_DIR of a training run")
    if output_dir is None:
        if run_dir is None:
            raise EvalError("--output-dir is required without --run-dir")
        output_dir = Path(run_dir) / "eval"
    output_dir = Path(output_dir)
    for model in models:
        check_model(model)
    named = (
        {name: Path(file) for name, file in default_tasks().items()}
        if not data
        else {_task_name(Path(file)): Path(file) for file in data}
    )
    if len(named) < len(data):
        raise EvalError("two data files have the same name; rename one (the task name comes from the file name)")
    tasks = {name: (path, read_prompt_file(path)) for name, path in named.items()}

    settings = {"n_samples": n_samples, "temperature": temperature, "max_gen_toks": max_gen_toks}
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
        )
        summaries[model] = report(output_dir / label)
        print((output_dir / label / "report.md").read_text(encoding="utf-8"))
    if len(models) > 1:
        table = compare([output_dir / label for label in labels])
        print(table["markdown"])
        markdown = table.pop("markdown")
        write_together(
            {
                output_dir / "comparison.md": [markdown],
                output_dir / "comparison.json": [json.dumps(table, indent=1) + "\n"],
            }
        )
    if steps:
        rows = [
            (label, steps[model], summaries[model])
            for model, label in zip(models, labels, strict=True)
            if model in steps
        ]
        write_steps(output_dir, rows)
        print((output_dir / "steps.md").read_text(encoding="utf-8"))
    return output_dir


def _task_name(path: Path) -> str:
    """The shipped task's name for its default file, else medrlvr_ + the file's stem."""
    for name, file in default_tasks().items():
        if path.resolve() == Path(file).resolve():
            return name
    return "medrlvr_" + re.sub(r"\W", "_", path.stem)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m med_rlvr_plugin.evaluate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="generate with lm-eval, grade, write the tables")
    run_parser.add_argument("models", nargs="*", help="model folders or hub ids")
    run_parser.add_argument(
        "--run-dir", help="a training run's OUTPUT_DIR: each ckpt/*global_step*_hf by step, then model/"
    )
    run_parser.add_argument(
        "--data",
        nargs="+",
        default=(),
        metavar="FILE",
        help="prepared prompt files (default: data/medqa_test.jsonl data/mmlu_pro_health.jsonl)",
    )
    run_parser.add_argument("--output-dir", help="where to write (default: RUN_DIR/eval)")
    run_parser.add_argument("--model", dest="backend", choices=("hf", "vllm"), default="hf", help="lm-eval backend")
    run_parser.add_argument(
        "--model-args",
        default="",
        help="lm-eval model arguments besides pretrained, e.g. "
        "dtype=bfloat16 or tensor_parallel_size=2,data_parallel_size=4",
    )
    run_parser.add_argument("--n-samples", type=int, default=1, help="responses per question (pass@1 is their mean)")
    run_parser.add_argument("--temperature", type=float, help="default 0 (greedy) for 1 sample, 1.0 (training's) else")
    run_parser.add_argument(
        "--max-gen-toks",
        type=int,
        default=MAX_NEW_TOKENS,
        help=f"default {MAX_NEW_TOKENS} (training's max_new_tokens)",
    )
    run_parser.add_argument("--limit", type=int, help="only the first N questions of each file")
    run_parser.add_argument("--batch-size", help="lm-eval's batch size (a number or auto)")
    run_parser.add_argument("--device", help="hf backend device, e.g. cuda:0 or cpu")
    report_parser = commands.add_parser("report", help="report.md and summary.json from a folder of sample logs")
    report_parser.add_argument("directory")
    compare_parser = commands.add_parser("compare", help="the paper-style table across models (first: baseline)")
    compare_parser.add_argument("directories", nargs="+")
    compare_parser.add_argument("--metric", default="acc", choices=RATES)
    compare_parser.add_argument("--output", help="also write the table to this .md file, its data beside as .json")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            run(
                args.models,
                args.output_dir,
                run_dir=args.run_dir,
                data=args.data,
                backend=args.backend,
                model_args=args.model_args,
                n_samples=args.n_samples,
                temperature=args.temperature,
                max_gen_toks=args.max_gen_toks,
                limit=args.limit,
                batch_size=args.batch_size,
                device=args.device,
            )
        elif args.command == "report":
            report(args.directory)
            print((Path(args.directory) / "report.md").read_text(encoding="utf-8"))
        else:
            if len(args.directories) < 2:
                raise EvalError("compare needs at least two folders")
            table = compare(args.directories, args.metric)
            print(table["markdown"])
            if args.output:
                output = Path(args.output)
                markdown = table.pop("markdown")
                write_together({output: [markdown], output.with_suffix(".json"): [json.dumps(table, indent=1) + "\n"]})
    except (EvalError, ValueError) as error:
        print(f"med-rlvr evaluate: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
