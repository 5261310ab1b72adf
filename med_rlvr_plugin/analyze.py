"""A run's training dynamics, after the fact: `python -m med_rlvr_plugin.analyze RUN_DIR --output DIR`.

Reads what a run left in RUN_DIR (the launcher's OUTPUT_DIR), each where present:
  - rollouts/*.jsonl, the reward file's rollout samples (launch flag --rollout-samples);
  - tensorboard/**/events.out.tfevents.*, OpenRLHF's train/* scalars (launch flag --tensorboard);
  - eval/**/samples_TASK_TIME.jsonl, lm-eval sample logs (`python -m med_rlvr_plugin.evaluate run --run-dir`),
    and those of any --eval folder.
Writes into DIR: behaviour.png (class shares, stacked, with the stage timeline), rates.png (accuracy,
well-formed, leak and preamble rates), lengths.png (thinking words, response characters), eval.png (class
shares per checkpoint, with eval logs), report.md (the timeline, two example responses per stage, the eval
table) and timeline.json (the same numbers). docs/dynamics.md says how steps are found.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from med_rlvr_plugin.cli import ToolError, fail, tool_parser
from med_rlvr_plugin.dynamics import CLASSES, STAGES, Stage, stage_timeline
from med_rlvr_plugin.evaluate.reports import markdown_table
from med_rlvr_plugin.files import png_bytes, read_jsonl, write_together
from med_rlvr_plugin.lm_eval_logs import LOGLIK, newest_logs, read_samples
from med_rlvr_plugin.reward import score_grade, score_sample
from med_rlvr_plugin.verifier import Grade

# Per-step quantities, named as in reward.METRICS: the reward file logs them as extra_logs, OpenRLHF as train/<key>.
RATES = ("accuracy", "well_formed", "answer_leak", "preamble")
LENGTHS = ("think_words", "response_chars")
KEYS = (*RATES, *LENGTHS, *(f"behaviour_{name}" for name in CLASSES))
GRADE_FIELDS = tuple(Grade.__dataclass_fields__)
_STEP_IN_NAME = re.compile(r"global_step(\d+)")
FIGURE_SIZE, DPI = (10, 5), 100  # every PNG is 1000 x 500 pixels
CLASS_COLORS = ("#9e9e9e", "#8e44ad", "#e74c3c", "#f39c12", "#27ae60")  # in CLASSES order
STAGE_COLORS = ("#e0e0e0", "#fdd9a0", "#c7e9c0", "#f6b2a8", "#d7bde2", "#aed6f1")  # in STAGES order
EXAMPLE_CHARS = 1500


class AnalyzeError(ToolError):
    """Input that cannot be analysed; the message says which file and what to do."""


def read_rollouts(folder: Path) -> tuple[list[dict], list[str]]:
    """The rollout samples of every *.jsonl in `folder`, by time, each with its class and logs; and a note
    per file whose last line is cut off (skipped: its process stopped mid-write)."""
    fix = (
        f"each line holds time, prompt, label and the verdict fields {', '.join(GRADE_FIELDS)}. Move other files "
        f"out of {folder}"
    )
    records, notes = [], []
    for path in sorted(folder.glob("*.jsonl")):
        cut: list[str] = []
        for where, record in read_jsonl(path, fix, on_cut=cut.append):
            try:
                grade = Grade(**{name: record[name] for name in GRADE_FIELDS})
                prompt, when = record["prompt"], float(record["time"])
            except (KeyError, TypeError, ValueError) as error:
                raise AnalyzeError(f"{where}: not a rollout sample ({type(error).__name__}: {error}); {fix}") from None
            score = score_grade(grade, prompt)
            records.append(
                {**record, "time": when, "file": path.name, "class": score.behaviour, "logs": score.metrics}
            )
        notes += [f"{path.name}: the last line is cut off and was skipped" for _ in cut]
    return sorted(records, key=lambda record: record["time"]), notes


def read_scalars(folder: Path) -> dict[str, list[tuple[float, int, float]]]:
    """tag -> (wall time, step, value) of every scalar event in the TensorBoard files under `folder`, by time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = defaultdict(list)
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars[tag] += [(event.wall_time, event.step, event.value) for event in events.Scalars(tag)]
    return {tag: sorted(points) for tag, points in scalars.items()}


def read_eval_logs(folders: Iterable[Path]) -> dict[tuple[str, str], list[dict[str, float]]]:
    """(checkpoint, task) -> the logs of each response in the newest lm-eval sample log of that task in each
    folder holding some; the checkpoint is the folder's name (evaluate writes one folder per checkpoint).

    Each response is graded again by `score_sample` in lenient format (the paper's; the class rules read
    text before `<think>` themselves), on the prompt as lm-eval sent it.
    """
    logs = {}
    for folder in sorted({path.parent for eval_dir in folders for path in eval_dir.rglob("samples_*.jsonl")}):
        for task, path in newest_logs(folder).items():
            if task.endswith(LOGLIK):  # evaluate --mode loglik: option letters scored, no responses
                continue
            logs[(folder.name, task)] = []
            for sample in read_samples(path):
                label = sample.doc.get("label")
                try:
                    logs[(folder.name, task)] += [
                        score_sample(sample.prompt + text, sample.prompt, label).metrics for text in sample.responses
                    ]
                except ValueError as error:  # a label that names no option letter
                    raise AnalyzeError(f"{sample.where}: field doc.label: {error}") from None
    return logs


def _mean_logs(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {key: sum(float(row[key]) for row in rows) / len(rows) for key in KEYS}


def place_samples(records: list[dict], scalars: Mapping[str, Sequence[tuple[float, int, float]]], bins: int) -> str:
    """Give each record an `x`: its training step, from the TensorBoard log times when there are any, else
    its time bin. Returns the axis name.

    OpenRLHF logs step N after generating and training on its rollouts, so a response belongs to the first
    step logged at or after its time; one after the last log belongs to the step after the last one. Every
    log counts, also of steps a resumed run did again, so a sample of an abandoned step keeps its step.
    Without events, the span from the first to the last sample is cut into `bins` equal times (fewer when
    there are under 20 samples a bin), numbered from 1.
    """
    logged = sorted(
        {(time, step) for tag, points in scalars.items() if tag.startswith("train/") for time, step, _ in points}
    )
    if logged:
        times = [time for time, _ in logged]
        for record in records:
            at = bisect.bisect_left(times, record["time"])
            record["x"] = logged[at][1] if at < len(logged) else max(step for _, step in logged) + 1
        return "training step"
    count = max(1, min(bins, len(records) // 20))
    start, span = records[0]["time"], (records[-1]["time"] - records[0]["time"]) or 1.0
    for record in records:
        record["x"] = 1 + min(count - 1, int((record["time"] - start) / span * count))
    return "time bin"


def step_series(
    records: Sequence[dict], scalars: Mapping[str, Sequence[tuple[float, int, float]]]
) -> tuple[list, str]:
    """[(x, {key: value})] per step, and where it came from: TensorBoard when it has the behaviour curves
    (every response of each step), else the placed rollout samples. A step logged twice (a resumed run
    does the steps after its checkpoint again) has its later value."""
    if f"train/behaviour_{CLASSES[0]}" in scalars:
        by_step = defaultdict(dict)
        for key in KEYS:
            for _, step, value in scalars.get(f"train/{key}", ()):  # by time: the later value stays
                by_step[step][key] = value
        source = f"TensorBoard train/* scalars ({len(by_step)} logged steps, every response of each step)"
        return sorted(by_step.items()), source
    by_x = defaultdict(list)
    for record in records:
        by_x[record["x"]].append(record["logs"])
    return [(x, _mean_logs(rows)) for x, rows in sorted(by_x.items())], f"{len(records)} rollout samples"


def class_shares(values: Mapping[str, float]) -> dict[str, float]:
    return {name: values.get(f"behaviour_{name}", 0.0) for name in CLASSES}


def examples(stage: Stage, records: Sequence[dict], count: int = 2) -> list[dict]:
    """`count` rollout samples of the stage's steps, of its leading class when it has enough, spread evenly."""
    inside = [record for record in records if stage.first_step <= record["x"] <= stage.last_step]
    leading = max(stage.shares, key=stage.shares.get)
    pool = [record for record in inside if record["class"] == leading]
    pool = pool if len(pool) >= count else inside
    return [pool[(2 * index + 1) * len(pool) // (2 * count)] for index in range(min(count, len(pool)))]


def _fenced(text: str) -> str:
    cut = len(text) - EXAMPLE_CHARS
    shown = f"{text[:EXAMPLE_CHARS]}\n... ({cut} more characters)" if cut > 0 else text
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", shown)), default=0))
    return f"{fence}text\n{shown}\n{fence}"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def checkpoint_order(name: str) -> tuple:
    """global_stepN folders by N, then the final model (`model`), then any other name."""
    match = _STEP_IN_NAME.search(name)
    return (0, int(match[1]), name) if match else (1 if name == "model" else 2, 0, name)


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_behaviour(series: Sequence, stages: Sequence[Stage], axis: str) -> bytes:
    """Class shares as a stacked area, under a strip with the stages numbered as in STAGES."""
    plt = _pyplot()
    figure, (strip, axes) = plt.subplots(2, 1, figsize=FIGURE_SIZE, sharex=True, gridspec_kw={"height_ratios": [1, 7]})
    xs = [x for x, _ in series]
    axes.stackplot(
        xs,
        *([class_shares(values)[name] for _, values in series] for name in CLASSES),
        labels=[name.replace("_", " ") for name in CLASSES],
        colors=CLASS_COLORS,
    )
    for stage in stages:
        number = STAGES.index(stage.name) + 1
        left, right = stage.first_step - 0.5, stage.last_step + 0.5
        strip.axvspan(left, right, color=STAGE_COLORS[number - 1])
        strip.text((left + right) / 2, 0.5, str(number), ha="center", va="center", fontweight="bold")
        axes.axvline(left, color="black", linewidth=0.8)
    strip.set_yticks([])
    strip.set_title("stages: " + ", ".join(f"{STAGES.index(s.name) + 1} {s.name}" for s in stages), fontsize="small")
    axes.set_ylim(0, 1)
    axes.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    axes.set_xlabel(axis)
    axes.set_ylabel("share of responses")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    return png_bytes(figure, DPI)


def plot_lines(series: Sequence, groups: Sequence[Sequence[str]], axis: str) -> bytes:
    """One panel per group of keys, one line per key present."""
    plt = _pyplot()
    figure, panels = plt.subplots(len(groups), 1, figsize=FIGURE_SIZE, sharex=True, squeeze=False)
    for panel, keys in zip(panels[:, 0], groups, strict=True):
        for key in keys:
            points = [(x, values[key]) for x, values in series if key in values]
            if points:
                panel.plot(*zip(*points, strict=True), marker=".", label=key.replace("_", " "))
        if panel.lines:
            panel.legend(fontsize="small")
    panels[-1, 0].set_xlabel(axis)
    figure.tight_layout()
    return png_bytes(figure, DPI)


def plot_eval(evals: Sequence[Mapping]) -> bytes:
    """Per task, class shares per checkpoint (in `evals`' order) as stacked bars, and accuracy as black dots."""
    plt = _pyplot()
    tasks = sorted({entry["task"] for entry in evals})
    figure, panels = plt.subplots(1, len(tasks), figsize=FIGURE_SIZE, squeeze=False, sharey=True)
    for panel, task in zip(panels[0], tasks, strict=True):
        entries = [entry for entry in evals if entry["task"] == task]
        names, bottom = [entry["checkpoint"] for entry in entries], [0.0] * len(entries)
        for kind, color in zip(CLASSES, CLASS_COLORS, strict=True):
            heights = [entry[f"behaviour_{kind}"] for entry in entries]
            panel.bar(names, heights, bottom=bottom, color=color, label=kind.replace("_", " "))
            bottom = [low + height for low, height in zip(bottom, heights, strict=True)]
        panel.plot(names, [entry["accuracy"] for entry in entries], "ko", label="accuracy")
        panel.set_title(task, fontsize="small")
        panel.tick_params(axis="x", rotation=45, labelsize="small")
    panels[0, 0].set_ylabel("share of responses")
    panels[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    return png_bytes(figure, DPI)


# ---------------------------------------------------------------- the command


def eval_timeline(eval_logs: Mapping[tuple[str, str], list]) -> tuple[list[dict], dict[str, list[dict]]]:
    """The eval rows, (checkpoint, task) by checkpoint order with their response count and mean logs, and per
    task the stages across its checkpoints."""
    evals = [
        {"checkpoint": name, "task": task, "responses": len(rows), **_mean_logs(rows)}
        for (name, task), rows in sorted(eval_logs.items(), key=lambda item: checkpoint_order(item[0][0]))
        if rows
    ]
    # Checkpoints are few and far apart: each is its own step, unsmoothed.
    eval_stages = {}
    for task in sorted({entry["task"] for entry in evals}):
        entries = [entry for entry in evals if entry["task"] == task]
        timeline = stage_timeline([(index, class_shares(entry)) for index, entry in enumerate(entries)], 1, 1)
        eval_stages[task] = [
            {
                "name": stage.name,
                "first": entries[stage.first_step]["checkpoint"],
                "last": entries[stage.last_step]["checkpoint"],
            }
            for stage in timeline
        ]
    return evals, eval_stages


def check_flags(bins: int, window: int, min_steps: int) -> None:
    """AnalyzeError unless each is at least 1. Nothing is read: the command line calls this first, so that
    these are usage errors (exit 2)."""
    if bins < 1 or window < 1 or min_steps < 1:
        raise AnalyzeError(f"--bins, --window and --min-steps must be at least 1, got {bins}, {window}, {min_steps}")


def analyze(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    eval_dirs: Sequence[str | os.PathLike] = (),
    bins: int = 50,
    window: int = 5,
    min_steps: int = 3,
) -> dict:
    """Read the run, write the plots, report.md and timeline.json into `output`; returns timeline.json's content."""
    run_dir, output = Path(run_dir), Path(output)
    if not run_dir.is_dir():
        raise AnalyzeError(f"{run_dir}: no such folder; give a run's OUTPUT_DIR")
    check_flags(bins, window, min_steps)
    for folder in eval_dirs:
        if not Path(folder).is_dir():
            raise AnalyzeError(f"--eval {folder}: no such folder")
    records, notes = read_rollouts(run_dir / "rollouts") if (run_dir / "rollouts").is_dir() else ([], [])
    scalars = read_scalars(run_dir / "tensorboard") if (run_dir / "tensorboard").is_dir() else {}
    eval_logs = read_eval_logs(Path(folder) for folder in eval_dirs or [run_dir / "eval"] if Path(folder).is_dir())
    axis = place_samples(records, scalars, bins) if records else "training step"
    series, source = step_series(records, scalars)
    if not series and not eval_logs:
        raise AnalyzeError(
            f"{run_dir}: nothing to analyse: no rollouts/*.jsonl, no TensorBoard train/behaviour_* scalars under "
            "tensorboard/, no lm-eval sample logs under eval/. Launch with --rollout-samples F and --tensorboard, or "
            "pass --eval FOLDER"
        )
    stages = stage_timeline([(x, class_shares(values)) for x, values in series], window, min_steps)
    evals, eval_stages = eval_timeline(eval_logs)
    summary = {
        "run_dir": str(run_dir),
        "source": source,
        "axis": axis,
        "rollout_samples": len(records),
        "rollout_samples_per_x": dict(sorted(Counter(record["x"] for record in records).items())),
        "stages": [{"name": s.name, "first": s.first_step, "last": s.last_step, "shares": s.shares} for s in stages],
        "steps": [{"x": x, **values} for x, values in series],
        "eval": evals,
        "eval_stages": eval_stages,
    }

    # Written together at the end, so that a failed plot leaves the folder as it was.
    files = {
        output / "report.md": [timeline_markdown(summary, stages, records, notes)],
        output / "timeline.json": [json.dumps(summary, indent=1) + "\n"],
    }
    if series:
        files[output / "behaviour.png"] = plot_behaviour(series, stages, axis)
        files[output / "rates.png"] = plot_lines(series, [RATES], axis)
        files[output / "lengths.png"] = plot_lines(series, [LENGTHS[:1], LENGTHS[1:]], axis)
    if evals:
        files[output / "eval.png"] = plot_eval(evals)
    write_together(files)
    for path in files:
        print(f"med-rlvr analyze: wrote {path}")
    return summary


def timeline_markdown(summary: Mapping, stages: Sequence[Stage], records: Sequence[dict], notes: Sequence[str]) -> str:
    axis, shares = summary["axis"], [name.replace("_", " ") for name in CLASSES]
    lines = [f"# Training dynamics of {summary['run_dir']}", ""]
    if stages:
        lines += [f"Class shares per {axis} from {summary['source']}.", ""]
        if records:
            files = len({record["file"] for record in records})
            if axis == "time bin":
                start, end = (_utc(records[index]["time"]) for index in (0, -1))
                placed = f"in {max(records[-1]['x'], 1)} equal time bins from {start} to {end} (no TensorBoard events)"
            else:
                placed = "at the first training step logged after each (TensorBoard wall times)"
            lines += [f"Rollout samples: {len(records)} from {files} process file(s), placed {placed}.", ""]
        lines += [*(f"Note: {note}.\n" for note in notes), "## Stage timeline", ""]
        rows = [
            [
                str(STAGES.index(s.name) + 1),
                s.name,
                f"{s.first_step}-{s.last_step}",
                *(_percent(s.shares[name]) for name in CLASSES),
            ]
            for s in stages
        ]
        lines += [
            markdown_table(["#", "stage", axis + "s", *shares], rows),
            "",
            "![class shares](behaviour.png)",
            "",
            "![rates](rates.png)",
            "",
            "![lengths](lengths.png)",
            "",
            "## Examples",
            "",
        ]
        for stage in stages:
            lines += [f"### {stage.name} ({axis}s {stage.first_step}-{stage.last_step})", ""]
            chosen = examples(stage, records)
            if not chosen:
                lines += ["No rollout sample in these steps.", ""]
            for record in chosen:
                lines += [
                    f"{axis.capitalize()} {record['x']} ({_utc(record['time'])}), "
                    f"{record['class'].replace('_', ' ')}, reward {record['reward']:g}, label {record['label']}, "
                    f"answer {record['letter'] or 'none'}:",
                    "",
                    _fenced(record["completion"]),
                    "",
                ]
    if summary["eval"]:
        lines += eval_markdown(summary)
    return "\n".join(lines)


def eval_markdown(summary: Mapping) -> list[str]:
    """The report's lines on the eval logs: a row per checkpoint and task, and the stages across checkpoints."""
    shares = [name.replace("_", " ") for name in CLASSES]
    lines = [
        "## Evaluation responses per checkpoint",
        "",
        "Each lm-eval response graded again (lenient format) and classed as during training.",
        "",
    ]
    rows = [
        [
            entry["checkpoint"],
            entry["task"],
            str(entry["responses"]),
            _percent(entry["accuracy"]),
            *(_percent(entry[f"behaviour_{name}"]) for name in CLASSES),
        ]
        for entry in summary["eval"]
    ]
    lines += [
        markdown_table(["checkpoint", "task", "responses", "accuracy", *shares], rows),
        "",
        "![eval](eval.png)",
        "",
    ]
    for task, timeline in summary["eval_stages"].items():
        spans = (
            f"{s['name']} ({s['first']}" + (f" to {s['last']})" if s["last"] != s["first"] else ")") for s in timeline
        )
        lines += [f"Stages across checkpoints, {task}: " + "; ".join(spans), ""]
    return lines


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def main(argv: Sequence[str] | None = None) -> int:
    parser = tool_parser("analyze", prog="python -m med_rlvr_plugin.analyze", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="the run's OUTPUT_DIR (rollouts/, tensorboard/, eval/)")
    parser.add_argument("--output", required=True, help="folder for the plots, report.md and timeline.json")
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="FOLDER",
        help="lm-eval sample logs, one sub-folder per checkpoint (default RUN_DIR/eval); repeatable",
    )
    parser.add_argument("--bins", type=int, default=50, help="time bins without TensorBoard events (default 50)")
    parser.add_argument("--window", type=int, default=5, help="steps averaged around each step (default 5)")
    parser.add_argument(
        "--min-steps", type=int, default=3, help="shorter runs of a class join the run before (default 3)"
    )
    options = parser.parse_args(argv)
    try:  # refused before anything is read: a usage error
        check_flags(options.bins, options.window, options.min_steps)
    except AnalyzeError as error:
        parser.error(str(error))
    try:
        summary = analyze(
            options.run_dir,
            options.output,
            options.eval,
            bins=options.bins,
            window=options.window,
            min_steps=options.min_steps,
        )
    except (ToolError, OSError) as error:
        return fail("analyze", error)
    for stage in summary["stages"]:
        print(f"  {stage['name']}: {summary['axis']}s {stage['first']}-{stage['last']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
