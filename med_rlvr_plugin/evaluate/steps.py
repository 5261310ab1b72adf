"""Accuracy against training step: steps.md, steps.json and steps.png of a run's checkpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from med_rlvr_plugin.dynamics import Stage
from med_rlvr_plugin.evaluate.reports import cell, markdown_table
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.plots import FIGURE_SIZE, finish_figure, pyplot, step_figure


def read_stages(timeline: Path | None) -> list[Stage]:
    """The stages of the run's dynamics report (analyze's timeline.json) when it has one by training step."""
    if timeline is None or not timeline.is_file():
        return []
    try:
        summary = json.loads(timeline.read_text(encoding="utf-8"))
        if summary.get("axis") != "training step":  # time bins are not steps
            return []
        return [Stage(s["name"], int(s["first"]), int(s["last"]), s["shares"]) for s in summary.get("stages", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def steps_figure(accuracy: Sequence[tuple[str, int | None, Mapping]], stages: Sequence[Stage]):
    """The plot: each task's accuracy with its interval by step (the base model at 0), integer steps, the
    final model a dashed level, under analyze's stage strip when the run has stages. Tasks with equal values
    stay visible: each has its own marker and a small sideways offset, and its final level dashes in the
    others' gaps. Returns (figure, curves)."""
    from matplotlib.ticker import MaxNLocator

    title = "Accuracy by training step (95% Wilson intervals)"
    if stages:
        figure, (axes,) = step_figure(title, stages, "training step", 1)
    else:
        figure, axes = pyplot().subplots(figsize=FIGURE_SIZE)
        figure.suptitle(title)
    tasks = sorted({task for _, _, by_task in accuracy for task in by_task})
    steps = sorted({step for _, step, _ in accuracy if step is not None})
    offset = (max(steps) - min(steps)) * 0.01 if len(steps) > 1 else 0.05
    curves = []
    for index, task in enumerate(tasks):
        points = [(step, by_task[task]) for _, step, by_task in accuracy if step is not None and task in by_task]
        if points:
            values = [100 * entry["value"] for _, entry in points]
            errors = [
                [value - 100 * entry["low"] for value, (_, entry) in zip(values, points, strict=True)],
                [100 * entry["high"] - value for value, (_, entry) in zip(values, points, strict=True)],
            ]
            xs = [step + (index - (len(tasks) - 1) / 2) * offset for step, _ in points]
            marker, name = "osD^v<>"[index % 7], task.removeprefix("medrlvr_")
            curves.append(
                axes.errorbar(xs, values, yerr=errors, marker=marker, capsize=3, color=f"C{index}", label=name)
            )
        final = [by_task[task] for _, step, by_task in accuracy if step is None and task in by_task]
        if final:  # the final model records no step: a dashed level, its dashes in the other tasks' gaps
            dashes = (4 * index, (4, 4 * len(tasks) - 4 or 4))
            label = f"{task.removeprefix('medrlvr_')} (final)"
            curves.append(axes.axhline(100 * final[0]["value"], linestyle=dashes, color=f"C{index}", label=label))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("OpenRLHF global step" + (" (0: the base model)" if 0 in steps else ""))
    axes.set_ylabel("accuracy (%)")
    return figure, curves


def write_steps(
    output_dir: Path, rows: Sequence[tuple[str, int | None, Mapping]], timeline: Path | None = None
) -> None:
    """steps.md, steps.json and steps.png in `output_dir` from (label, step, summary) rows; `timeline` is
    the run's dynamics report (analyze's timeline.json), whose stages the plot shows when it exists."""
    accuracy = [
        (label, step, {task: entry["metrics"]["accuracy"] for task, entry in summary["tasks"].items()})
        for label, step, summary in sorted(rows, key=lambda row: (row[1] is None, row[1] or 0))
    ]
    tasks = sorted({task for _, _, by_task in accuracy for task in by_task})
    table = [
        [label, "final" if step is None else str(step)]
        + [cell(by_task[task], "rate") if task in by_task else "-" for task in tasks]
        for label, step, by_task in accuracy
    ]
    markdown = (
        "Accuracy (lenient, the paper's), percent [95% Wilson interval], by training step (0: the base model).\n\n"
        + markdown_table(["checkpoint", "step", *tasks], table)
        + "\n"
    )
    steps_json = [{"checkpoint": label, "step": step, "accuracy": by_task} for label, step, by_task in accuracy]
    write_together(
        {
            output_dir / "steps.md": [markdown],
            output_dir / "steps.json": [json.dumps(steps_json, indent=1) + "\n"],
            output_dir / "steps.png": finish_figure(*steps_figure(accuracy, read_stages(timeline)), "tasks"),
        }
    )
