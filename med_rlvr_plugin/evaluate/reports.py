"""Tables from lm-eval sample logs: each logged question graded again, summarized, reported and compared."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from med_rlvr_plugin.evaluate import (
    METRICS,
    RATES,
    EvalError,
    check_row,
    doc_to_text,
    grade_texts,
    training_config,
)
from med_rlvr_plugin.evaluate.modes import compare_blocks, modes_markdown, read_loglik_questions, split_modes
from med_rlvr_plugin.evaluate.statistics import (
    RESAMPLES,
    bounded_interval,
    count_interval,
    mcnemar_interval,
    mcnemar_p,
    paired_bootstrap,
    pass_at_k,
)
from med_rlvr_plugin.files import read_jsonl, write_together
from med_rlvr_plugin.lm_eval_logs import LOGLIK, SAMPLES_NAME, newest_logs, read_samples
from med_rlvr_plugin.verifier import RewardConfig

# Metadata fields whose values split a task into subgroups: MedQA's exam step, MMLU-Pro's source, MMLU's subject.
SUBGROUP_FIELDS = ("meta_info", "src", "subject")


def latest_sample_logs(directory: Path, notes: list[str] | None = None) -> dict[str, Path]:
    """Task -> its newest lm-eval sample log in `directory` or one folder below (lm-eval's CLI adds a
    folder per model). A task whose rows are not prepared prompt files (another lm-eval task logged beside
    ours) is left out, with a line in `notes`."""
    found = sorted(directory.glob("samples_*.jsonl")) + sorted(directory.glob("*/samples_*.jsonl"))
    found = [path for path in found if not path.parent.name.startswith(".")]  # a killed run's .lm_eval-* scratch
    folders = sorted({str(path.parent) for path in found})
    if len(folders) > 1:
        raise EvalError(
            f"{directory} holds sample logs of several models ({', '.join(folders)}): report one "
            "folder, or compare them"
        )
    logs = newest_logs(Path(folders[0])) if folders else {}
    foreign = {task: reason for task, path in logs.items() if (reason := foreign_log(path))}
    if notes is not None:
        notes += [f"skipped task {task}: {reason}" for task, reason in foreign.items()]
    if not logs.keys() - foreign.keys():
        raise EvalError(
            f"{directory}: no lm-eval sample logs of prepared prompt files (samples_TASK_TIME.jsonl"
            f"{'; ' + ', '.join(foreign) + ' are other tasks' if foreign else ''}); run `evaluate run`, or "
            "lm_eval with --output_path and --log_samples on a medrlvr_ task"
        )
    return {task: path for task, path in logs.items() if task not in foreign}


def foreign_log(path: Path) -> str | None:
    """Why the sample log at `path` is another task's (its first row has no prompt or label), or None."""
    for _, line in read_jsonl(path, "expected an lm-eval sample log"):
        doc = line.get("doc") if isinstance(line, dict) else None
        if isinstance(doc, dict) and "prompt" in doc and "label" in doc:
            return None
        return "its rows have no 'prompt' and 'label' (not a prepared prompt file)"
    return None  # an empty log: read_questions says so


def read_questions(path: Path, config: RewardConfig) -> list[dict]:
    """One record per logged question: `key` (for pairing), `subgroup`, `k` (responses), the row's `label` and
    `prompt`, lm-eval's `generation` settings, and METRICS; a log-likelihood task's (TASK_loglik) records
    hold `accuracy` only (modes.py)."""
    if SAMPLES_NAME.fullmatch(path.name)["task"].endswith(LOGLIK):
        return read_loglik_questions(path)
    questions, seen, generation = [], Counter(), None
    for sample in read_samples(path):
        doc = sample.doc
        check_row(doc, f"{sample.where}: doc")
        # Equal settings share one dict: thousands of live copies would cost the garbage collector time.
        generation = generation if sample.generation == generation else sample.generation
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
                "label": str(doc["label"]),
                "prompt": doc_to_text(doc),
                "generation": generation,
                **grade_texts(sample.prompt, sample.responses, doc["label"], config),
            }
        )
    if not questions:
        raise EvalError(f"{path}: the sample log is empty")
    if len({question["k"] for question in questions}) > 1:
        raise EvalError(f"{path}: questions have different numbers of responses; re-run the task")
    return questions


def summarize(questions: Sequence[Mapping]) -> dict:
    """Each metric's value and 95% interval over questions; pass@k with k responses per question. Rates,
    pass@k and the reward (in [-1, 1]: the verifier clamps it) are bounded means of the questions (Wilson,
    at any k); counts get the log-scale t interval."""
    n, k = len(questions), questions[0]["k"]
    summary: dict = {"n": n, "responses_per_question": k, "metrics": {}}
    for key, _, kind in (metric for metric in METRICS if metric[0] in questions[0]):  # loglik: accuracy only
        values = [question[key] for question in questions]
        bounds = (-1.0, 1.0) if kind == "mean" else (0.0, 1.0)
        low, high = count_interval(values) if kind == "count" else bounded_interval(values, *bounds)
        summary["metrics"][key] = {"value": sum(values) / n, "low": low, "high": high}
    if k > 1:
        values = [pass_at_k(k, round(question["accuracy"] * k), k) for question in questions]
        low, high = bounded_interval(values)
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


def report_markdown(label: str, tasks: Mapping[str, Mapping], notes: Sequence[str] = ()) -> str:
    """One model's table (a column per generate task), its subgroup tables, both measures' table, and a line
    per skipped task."""
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
        "Percent (rates) or mean, with 95% intervals over questions: Wilson for rates, pass@k and the reward "
        "(bounded means), a log-scale t interval for word and character counts. With k responses per "
        "question each rate is their mean: accuracy is pass@1.",
        markdown_table(["metric", *names], rows),
    ][: 3 if names else 1]  # only log-likelihood tasks (--mode loglik): their table below
    parts += [f"Note: {note}." for note in notes]
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


def run_record(sample_log: Path) -> dict:
    """lm-eval's record of the run that wrote `sample_log`: its results_TIME.json (same TIME), or {}."""
    match = SAMPLES_NAME.fullmatch(sample_log.name)
    return load_results(sample_log.parent / f"results_{match['stamp']}.json") if match else {}


def load_results(path: Path) -> dict:
    """An lm-eval results_TIME.json, or {} when it is missing or unreadable (a log copied without it)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def pretrained(record: Mapping) -> str | None:
    """The model lm-eval loaded (`pretrained=` of its model arguments) in a results record."""
    args = record.get("config", {}).get("model_args") or ""
    if isinstance(args, dict):
        return args.get("pretrained")
    return next((part[len("pretrained=") :] for part in args.split(",") if part.startswith("pretrained=")), None)


def provenance(logs: Mapping[str, Path], questions: Mapping[str, Sequence[Mapping]]) -> dict:
    """What summary.json records of the model and each task: model path, backend, model arguments; each
    task's version, data file and its sha256 (when `run` recorded it), generation settings. EvalError when
    the newest logs of two tasks come from different models (two models' logs merged in one folder)."""
    records = {task: run_record(path) for task, path in logs.items()}
    models = {task: pretrained(record) for task, record in records.items() if pretrained(record)}
    if len(set(models.values())) > 1:
        listed = ", ".join(f"{task}: {model}" for task, model in models.items())
        raise EvalError(f"the newest sample logs come from different models ({listed}); give each its own folder")
    first = next((record for record in records.values() if record), {})
    tasks = {}
    for task, record in records.items():
        task_config = record.get("configs", {}).get(task, {})
        data = task_config.get("dataset_kwargs", {}).get("data_files", {}).get("test")
        tasks[task] = {
            "version": record.get("versions", {}).get(task),
            "data_file": data,
            "data_sha256": (task_config.get("metadata") or {}).get("data_sha256"),
            "generation": questions[task][0].get("generation"),  # None for a log-likelihood task
        }
    model = {
        "model_path": next(iter(models.values()), None),
        "backend": first.get("config", {}).get("model"),
        "model_args": first.get("config", {}).get("model_args"),
        "lm_eval_version": first.get("lm_eval_version"),
    }
    return {"model": model, "tasks": tasks}


def report(directory: str | os.PathLike, config: RewardConfig | None = None) -> dict:
    """Grade `directory`'s sample logs; write report.md and summary.json there; return the summary."""
    directory, config = Path(directory), config or training_config()
    if not directory.is_dir():
        raise EvalError(f"{directory}: no such folder")
    notes: list[str] = []
    logs = latest_sample_logs(directory, notes)
    questions = {task: read_questions(path, config) for task, path in logs.items()}
    record = provenance(logs, questions)
    tasks = {task: summarize_task(questions[task]) for task in logs}
    summary = {
        "model": directory.name,
        **record["model"],
        "reward_config": asdict(config),
        "sample_logs": {task: str(path) for task, path in logs.items()},
        "skipped": notes,
        "tasks": {task: record["tasks"][task] | tasks[task] for task in logs},
    }
    for note in notes:
        print(f"med-rlvr evaluate: note: {directory}: {note}", file=sys.stderr)
    write_together(
        {
            directory / "summary.json": [json.dumps(summary, indent=1) + "\n"],
            directory / "report.md": [report_markdown(directory.name, tasks, notes)],
        }
    )
    return summary


MIN_SHARED = 0.5  # pair two models on a task only when they share at least half of each one's questions


def settings(questions: Sequence[Mapping]) -> dict:
    """What a task's responses were generated with: k, temperature (0 for greedy) and max new tokens."""
    generation = questions[0].get("generation") or {}  # a log-likelihood task generates nothing
    temperature = generation.get("temperature", 0.0) if generation.get("do_sample") else 0.0
    return {"k": questions[0]["k"], "temperature": temperature, "max_gen_toks": generation.get("max_gen_toks")}


def check_rows(task: str, names: tuple[str, str], ours: Mapping, theirs: Mapping) -> None:
    """EvalError when a question id shared by two models has another label or prompt in one of them."""
    for key in ours.keys() & theirs.keys():
        for field in ("label", "prompt"):
            if ours[key][field] != theirs[key][field]:
                raise EvalError(
                    f"compare: {task}, question {key.rsplit('#', 1)[0]}: the {field} differs between {names[0]} and "
                    f"{names[1]}; they were evaluated on different data files, which cannot be paired"
                )


def paired_difference(ours: Sequence[Mapping], theirs: Sequence[Mapping], metric: str) -> dict:
    """The difference in `metric` on the questions both models answered, with its 95% interval and test:
    McNemar's exact test and the interval it inverts with one response per question on both sides, the
    paired bootstrap over questions otherwise. Not paired when they share less than MIN_SHARED of either
    model's questions (`reason` says how many)."""
    mine, base = {q["key"]: q for q in ours}, {q["key"]: q for q in theirs}
    shared = [key for key in base if key in mine]
    if len(shared) < MIN_SHARED * max(len(mine), len(base)):
        reason = f"{len(shared)} shared of {len(base)} and {len(mine)} questions"
        return {"paired": False, "n_paired": len(shared), "reason": reason}
    pairs = [(mine[key][metric], base[key][metric]) for key in shared]
    entry = {"paired": True, "n_paired": len(shared), "difference": sum(a - b for a, b in pairs) / len(pairs)}
    if all(q["k"] == 1 for q in (ours[0], theirs[0])):
        wins, losses = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
        low, high = mcnemar_interval(wins, losses, len(pairs))
        return (
            entry
            | {"low_difference": low, "high_difference": high, "p": mcnemar_p(wins, losses)}
            | {"test": "McNemar exact"}
        )
    low, high, p = paired_bootstrap([a - b for a, b in pairs])
    return entry | {"low_difference": low, "high_difference": high, "p": p, "test": "paired bootstrap"}


def compare(
    directories: Sequence[str | os.PathLike], metric: str = "accuracy", config: RewardConfig | None = None
) -> dict:
    """The paper-style table: `metric` per model and task, and each model's difference from the first,
    paired on the questions both answered (`paired_difference`); settings that differ from the first
    model's (k, temperature, max new tokens) are listed with the entry."""
    if metric not in RATES:
        raise EvalError(f"--metric must be one of {', '.join(RATES)}, got {metric!r}")
    config, models = config or training_config(), {}
    for directory in map(Path, directories):
        notes: list[str] = []
        logs = latest_sample_logs(directory, notes)
        models[directory.name] = {task: read_questions(path, config) for task, path in logs.items()}
        for note in notes:
            print(f"med-rlvr evaluate: note: {directory}: {note}", file=sys.stderr)
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
            entry = entries[task] = summarize(model[task])["metrics"][metric]
            entry |= {"n": len(model[task]), "settings": settings(model[task])}
            if name == baseline_name or task not in baseline:
                continue
            check_rows(
                task, (name, baseline_name), *({q["key"]: q for q in side} for side in (model[task], baseline[task]))
            )
            entry |= paired_difference(model[task], baseline[task], metric)
            theirs = settings(baseline[task])
            entry["settings_differ"] = [
                f"{key} {value} vs {theirs[key]}" for key, value in entry["settings"].items() if value != theirs[key]
            ]
    table["markdown"], table["ood"] = compare_blocks(table, compare_markdown)
    return table


def compare_markdown(table: Mapping) -> str:
    """compare's table: a value, difference, p and paired n per task; settings that differ listed below it."""
    header, rows, differ = ["model"], [], []
    for task in table["tasks"]:
        header += [task, "difference", "p", "n"]
    for name, entries in table["models"].items():
        row = [name]
        for task in table["tasks"]:
            row += _compare_cells(name == table["baseline"], entries.get(task))
            if entries.get(task, {}).get("settings_differ"):
                differ.append(f"† {name}, {task}: {', '.join(entries[task]['settings_differ'])} (first model's)")
        rows.append(row)
    title = dict((key, title) for key, title, _ in METRICS)[table["metric"]]
    note = (
        f"{title}, percent [95% Wilson interval over questions]; difference from {table['baseline']} in points "
        "on the questions both answered (n) [95% interval]; p: McNemar's exact test with the interval it "
        "inverts (one response per question), else the paired bootstrap over questions "
        f"({RESAMPLES:,} resamples: p is at least {2 / (RESAMPLES + 1):.1g})."
        + (" † marks generation settings that differ from the first model's." if differ else "")
    )
    return "\n\n".join([note, markdown_table(header, rows), *(["\n".join(differ)] if differ else [])]) + "\n"


def _compare_cells(baseline: bool, entry: Mapping | None) -> list[str]:
    if entry is None:
        return ["-", "", "", ""]
    if baseline or "paired" not in entry:
        return [cell(entry, "rate"), "(baseline)" if baseline else "", "", str(entry["n"])]
    if not entry["paired"]:
        return [cell(entry, "rate"), f"not paired: {entry['reason']}", "", str(entry["n_paired"])]
    difference = {"value": entry["difference"], "low": entry["low_difference"], "high": entry["high_difference"]}
    floor = entry["test"] == "paired bootstrap" and entry["p"] <= 2 / (RESAMPLES + 1)
    mark = " †" if entry.get("settings_differ") else ""
    p = f"≤{entry['p']:.1g}" if floor else f"{entry['p']:.2g}"
    return [cell(entry, "rate"), cell(difference, "rate", sign="+") + mark, p, str(entry["n_paired"])]


def write_comparison(table: Mapping, output: Path) -> None:
    """`compare`'s table as `output` (markdown) and its data beside as .json, together (folders created)."""
    data = {key: value for key, value in table.items() if key != "markdown"}
    write_together({output: [table["markdown"]], output.with_suffix(".json"): [json.dumps(data, indent=1) + "\n"]})
