"""Tables from lm-eval sample logs: each logged question graded again, summarized, reported and compared."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from med_rlvr_plugin.evaluate import METRICS, RATES, EvalError, check_row, grade_texts, training_config
from med_rlvr_plugin.evaluate.modes import compare_blocks, modes_markdown, read_loglik_questions, split_modes
from med_rlvr_plugin.evaluate.statistics import mcnemar_p, mean_interval, paired_bootstrap, pass_at_k, wilson_interval
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.lm_eval_logs import LOGLIK, SAMPLES_NAME, newest_logs, read_samples
from med_rlvr_plugin.verifier import RewardConfig

# Metadata fields whose values split a task into subgroups: MedQA's exam step, MMLU-Pro's source, MMLU's subject.
SUBGROUP_FIELDS = ("meta_info", "src", "subject")


def latest_sample_logs(directory: Path) -> dict[str, Path]:
    """Task -> its newest lm-eval sample log in `directory` or one folder below (lm-eval's CLI adds a
    folder per model)."""
    found = sorted(directory.glob("samples_*.jsonl")) + sorted(directory.glob("*/samples_*.jsonl"))
    folders = sorted({str(path.parent) for path in found})
    if len(folders) > 1:
        raise EvalError(
            f"{directory} holds sample logs of several models ({', '.join(folders)}): report one "
            "folder, or compare them"
        )
    logs = newest_logs(Path(folders[0])) if folders else {}
    if not logs:
        raise EvalError(
            f"{directory}: no lm-eval sample logs (samples_TASK_TIME.jsonl); run `evaluate run`, or "
            "lm_eval with --output_path and --log_samples"
        )
    return logs


def read_questions(path: Path, config: RewardConfig) -> list[dict]:
    """One record per logged question: `key` (for pairing), `subgroup`, `k` (responses) and METRICS; a
    log-likelihood task's (TASK_loglik) records hold `accuracy` only (modes.py)."""
    if SAMPLES_NAME.fullmatch(path.name)["task"].endswith(LOGLIK):
        return read_loglik_questions(path)
    questions, seen = [], Counter()
    for sample in read_samples(path):
        doc = sample.doc
        check_row(doc, f"{sample.where}: doc")
        # Rows are paired across models by their prepared `id` (its n-th occurrence, should a file repeat one).
        identity = str(doc.get("id", sample.doc_id))
        seen[identity] += 1
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        field = next((name for name in SUBGROUP_FIELDS if name in metadata), None)
        questions.append(
            {
                "key": f"{identity}#{seen[identity]}",
                "subgroup": (field, str(metadata[field])) if field else None,
                "k": len(sample.responses),
                **grade_texts(sample.prompt, sample.responses, doc["label"], config),
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
    for key, _, kind in (metric for metric in METRICS if metric[0] in questions[0]):  # loglik: accuracy only
        values = [question[key] for question in questions]
        value = sum(values) / n
        # One response per question makes a rate a binomial proportion; k > 1 makes it a mean of shares.
        low, high = wilson_interval(sum(values), n) if kind == "rate" and k == 1 else mean_interval(values)
        summary["metrics"][key] = {"value": value, "low": low, "high": high}
    if k > 1:
        values = [pass_at_k(k, round(question["accuracy"] * k), k) for question in questions]
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


def cell(entry: Mapping, kind: str, sign: str = "") -> str:
    """`value [low, high]`: rates in percent and means from 10 up with one decimal, smaller means with three."""
    scale, spec = (100, ".1f") if kind == "rate" else (1, ".1f" if abs(entry["value"]) >= 10 else ".3f")
    low, high = ("?" if entry[side] is None else f"{entry[side] * scale:{sign}{spec}}" for side in ("low", "high"))
    return f"{entry['value'] * scale:{sign}{spec}} [{low}, {high}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table (no trailing newline); analyze's report uses it too."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report_markdown(label: str, tasks: Mapping[str, Mapping]) -> str:
    """One model's table (a column per generate task), its subgroup tables, and both measures' table."""
    names, loglik = split_modes(tasks)
    pass_k = sorted({key for task in tasks.values() for key in task["metrics"] if key.startswith("pass@")})
    metrics = list(METRICS) + [(key, f"{key} (unbiased estimator)", "rate") for key in pass_k]
    rows = [
        [title] + [cell(tasks[name]["metrics"][key], kind) if key in tasks[name]["metrics"] else "-" for name in names]
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
        markdown_table(["metric", *names], rows),
    ][: 3 if names else 1]  # only log-likelihood tasks (--mode loglik): their table below
    for name in names:
        if "subgroups" in tasks[name]:
            field, groups = tasks[name]["subgroups"]["field"], tasks[name]["subgroups"]["groups"]
            parts.append(f"### {name} by {field}")
            parts.append(
                markdown_table(
                    [field, "n", "accuracy", "accuracy (strict)", "well formed"],
                    (
                        [value, str(group["n"])]
                        + [
                            cell(group["metrics"][key], "rate")
                            for key in ("accuracy", "accuracy_strict", "well_formed")
                        ]
                        for value, group in groups.items()
                    ),
                )
            )
    if loglik:
        parts.append(modes_markdown(tasks).rstrip("\n"))
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


def compare(
    directories: Sequence[str | os.PathLike], metric: str = "accuracy", config: RewardConfig | None = None
) -> dict:
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
            if task not in model or metric not in model[task][0]:  # a loglik task has accuracy only
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
    table["markdown"], table["ood"] = compare_blocks(table, compare_markdown)
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
                row += [cell(entry, "rate"), "(baseline)" if name == table["baseline"] else "", ""]
            elif not entry["paired"]:
                row += [cell(entry, "rate"), f"{entry['difference'] * 100:+.1f} (questions differ, unpaired)", ""]
            else:
                difference = {
                    "value": entry["difference"],
                    "low": entry["low_difference"],
                    "high": entry["high_difference"],
                }
                row += [cell(entry, "rate"), cell(difference, "rate", sign="+"), f"{entry['p']:.2g}"]
        rows.append(row)
    title = dict((key, title) for key, title, _ in METRICS)[table["metric"]]
    note = (
        f"{title}, percent [95% interval]; difference from {table['baseline']} in points [paired bootstrap 95% "
        "interval]; p: McNemar's exact test (one response per question) or the paired bootstrap."
    )
    return note + "\n\n" + markdown_table(header, rows) + "\n"


def write_comparison(table: Mapping, output: Path) -> None:
    """`compare`'s table as `output` (markdown) and its data beside as .json, together."""
    data = {key: value for key, value in table.items() if key != "markdown"}
    write_together({output: [table["markdown"]], output.with_suffix(".json"): [json.dumps(data, indent=1) + "\n"]})
