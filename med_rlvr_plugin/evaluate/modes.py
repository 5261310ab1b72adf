"""The tables' extra blocks: log-likelihood logs graded again, each task's two accuracies side by side, and
compare's paper block followed by its out-of-distribution block (medrlvr_ood, with the macro average).

Two measures of the same knowledge: `generate` is the paper's, a response generated to the training prompt
and graded by the verifier (format-gated: a base model that ignores the tags scores 0); `loglik` scores each
option letter after the same prompt and takes the most likely one, as lm-eval's own multiple-choice tasks
do (no format). A task's log-likelihood variant is TASK_loglik; its records hold `accuracy` only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from med_rlvr_plugin.evaluate import (
    METRICS,
    EvalError,
    check_choices,
    check_row,
    doc_to_choice,
    doc_to_text,
    loglik_accuracy,
    ood_tasks,
)
from med_rlvr_plugin.lm_eval_logs import LOGLIK, read_choice_samples

LOGLIK_TITLE = "accuracy by log-likelihood (the option letter scored highest after the prompt, no format)"


def read_loglik_questions(path: Path) -> list[dict]:
    """One record per logged question of a log-likelihood task: `key` (for pairing, as `read_questions`),
    `subgroup` (None), `k` (1), the row's `label` and `prompt`, and `accuracy`, graded again from the logged
    log-likelihoods."""
    questions, seen = [], Counter()
    for sample in read_choice_samples(path):
        doc = sample.doc
        check_row(doc, f"{sample.where}: doc")
        check_choices(doc, f"{sample.where}: doc")
        if [choice.strip() for choice in sample.choices] != doc_to_choice(doc):
            raise EvalError(
                f"{sample.where}: scored {sample.choices}, not the row's option letters {doc_to_choice(doc)}; "
                "re-run the task with the shipped log-likelihood template"
            )
        identity = str(doc.get("id", sample.doc_id))
        seen[identity] += 1
        accuracy = loglik_accuracy(doc, sample.logliks)
        questions.append(
            {
                "key": f"{identity}#{seen[identity]}",
                "subgroup": None,
                "k": 1,
                "label": str(doc["label"]),  # compare refuses a shared id with another label or prompt
                "prompt": doc_to_text(doc),
                "accuracy": accuracy,
            }
        )
    if not questions:
        raise EvalError(f"{path}: the sample log is empty")
    return questions


def split_modes(tasks: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """(the generate tasks, the log-likelihood tasks) among `tasks`' names, each in order."""
    return [name for name in tasks if not name.endswith(LOGLIK)], [name for name in tasks if name.endswith(LOGLIK)]


def modes_markdown(tasks: Mapping[str, Mapping]) -> str:
    """Report's table of both measures per task: accuracy generated and graded, and by log-likelihood."""
    from med_rlvr_plugin.evaluate.reports import cell, markdown_table  # reports imports this module

    names = list(dict.fromkeys(name.removesuffix(LOGLIK) for name in tasks))
    rows = [
        [name]
        + [
            f"{cell(tasks[task]['metrics']['accuracy'], 'rate')} (n {tasks[task]['n']})" if task in tasks else "-"
            for task in (name, name + LOGLIK)
        ]
        for name in names
    ]
    header = ["task", "generate: accuracy (lenient, the paper's)", "log-likelihood: accuracy"]
    return (
        "### Both measures (`--mode both`)\n\nPercent [95% Wilson interval]. generate: a response to the "
        "training prompt, graded by the verifier (format-gated). log-likelihood: the option letter the model "
        "scores highest after the same prompt (no format).\n\n" + markdown_table(header, rows) + "\n"
    )


def compare_blocks(table: Mapping, render: Callable[[Mapping], str]) -> tuple[str, dict]:
    """compare's markdown and its OOD data: `render` (compare's table) of the paper block (every task outside
    medrlvr_ood, with their log-likelihood variants when --metric is accuracy), then of the OOD block in each
    mode, then the OOD macro averages."""
    loglik = table["metric"] == "accuracy"
    ood = set(ood_tasks()) | {name + LOGLIK for name in ood_tasks()}
    kept = [task for task in table["tasks"] if loglik or not task.endswith(LOGLIK)]
    paper = [task for task in kept if task not in ood]
    parts = [render({**table, "tasks": paper})] if paper else []
    if loglik and any(task.endswith(LOGLIK) for task in paper):
        parts.append(
            "`_loglik` columns: the log-likelihood measure (the option letter the model scores highest after "
            "the same prompt, no format); the others are generated and graded by the verifier.\n"
        )
    present = [task for task in ood_tasks() if task in kept]
    present_loglik = [task + LOGLIK for task in ood_tasks() if task + LOGLIK in kept]
    if not (present or present_loglik):
        return "\n".join(parts), {}
    parts.append(f"## Out of distribution (medrlvr_ood: {', '.join(ood_tasks())})\n")
    title = dict((key, title) for key, title, _ in METRICS)[table["metric"]]
    for mode, tasks in (("generate", present), ("log-likelihood", present_loglik)):
        if tasks:  # compare's note names the metric: here, the log-likelihood measure's accuracy
            rendered = render({**table, "tasks": tasks})
            parts += [f"### {mode}\n", rendered if mode == "generate" else rendered.replace(title, LOGLIK_TITLE, 1)]
    macro = {
        name: {
            mode: macro_average(entries, [task + suffix for task in ood_tasks()])
            for mode, suffix in (("generate", ""), ("loglik", LOGLIK))
        }
        for name, entries in table["models"].items()
    }
    parts.append(macro_markdown(table, macro, loglik))
    return "\n".join(parts), {"tasks": list(ood_tasks()), "macro_average": macro}


def macro_average(entries: Mapping[str, Mapping], tasks: Sequence[str]) -> float | None:
    """The mean of the benchmarks' values, each weighing the same; None unless the model has them all."""
    if not all(task in entries for task in tasks):
        return None
    return sum(entries[task]["value"] for task in tasks) / len(tasks)


def macro_markdown(table: Mapping, macro: Mapping[str, Mapping], loglik: bool) -> str:
    """The macro averages per model and mode, and their differences from the baseline's."""
    from med_rlvr_plugin.evaluate.reports import markdown_table  # reports imports this module

    # a measure's columns when some model has all its benchmarks (the log-likelihood one only for accuracy)
    modes = [
        mode
        for mode in ("generate", "loglik")[: 2 if loglik else 1]
        if any(v[mode] is not None for v in macro.values())
    ]
    modes = modes or ["generate"]
    baseline = macro[table["baseline"]]
    rows = []
    for name, values in macro.items():
        row = [name]
        for mode in modes:
            value, base = values[mode], baseline[mode]
            row.append("-" if value is None else f"{100 * value:.1f}")
            if name == table["baseline"]:
                row.append("(baseline)" if value is not None else "")
            else:
                row.append("" if value is None or base is None else f"{100 * (value - base):+.1f}")
        rows.append(row)
    header = ["model"] + [f"{title}, {mode}" for mode in modes for title in ("macro average", "difference")]
    title = dict((key, title) for key, title, _ in METRICS)[table["metric"]]
    return (
        f"### Macro average\n\nThe mean of the {len(ood_tasks())} benchmarks' percentages, each weighing the same "
        f"({title}{'; by log-likelihood in the loglik columns' if loglik else ''}; '-' unless the model has all "
        "of them), and its difference from the baseline's in points (no test here: the paired tests are per "
        "benchmark above).\n\n" + markdown_table(header, rows) + "\n"
    )
