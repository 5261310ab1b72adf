"""A run's training dynamics, after the fact: `python -m med_rlvr_plugin.analyze RUN_DIR --output DIR`.

Reads what a run left in RUN_DIR (the launcher's OUTPUT_DIR), each where present:
  - rollouts/*.jsonl, the reward file's rollout samples (launch flag --rollout-samples), streamed: memory
    grows with the steps, not with the samples;
  - tensorboard/**/events.out.tfevents.*, OpenRLHF's train/* scalars (launch flag --tensorboard);
  - eval/**/samples_TASK_TIME.jsonl, lm-eval sample logs (`python -m med_rlvr_plugin.evaluate run --run-dir`),
    and those of any --eval folder.
Writes into DIR: behaviour.png (class shares, stacked), rates.png (accuracy, well-formed, leak and preamble
rates), lengths.png (thinking words, response characters), each under the stage strip; eval.png (class
shares per checkpoint, with eval logs); report.md (the timeline, two example responses per stage, the
eval table, what was skipped) and timeline.json (the same numbers). docs/dynamics.md says how steps are
found. Plots: med_rlvr_plugin/plots.py.
"""

from __future__ import annotations

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
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.lm_eval_logs import LOGLIK, newest_logs, read_samples
from med_rlvr_plugin.plots import plot_behaviour, plot_eval, plot_lines
from med_rlvr_plugin.reward import score_sample
from med_rlvr_plugin.rollouts import (
    KEYS,
    LENGTHS,
    RATES,
    AnalyzeError,
    BadLines,
    Placed,
    place_samples,
    rollout_samples,
)

_STEP_IN_NAME = re.compile(r"global_step(\d+)")


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


def read_eval_logs(folders: Iterable[Path], bad: BadLines) -> dict[tuple[str, str], tuple[int, Counter]]:
    """(checkpoint, task) -> the number of responses and the sums of their logs, in the newest lm-eval sample
    log of that task in each folder holding some; the checkpoint is the folder's name (evaluate writes one
    folder per checkpoint). Lines that are not samples go to `bad`.

    Each response is graded again by `score_sample` in lenient format (the paper's; the class rules read
    text before `<think>` themselves), on the prompt as lm-eval sent it.
    """
    logs = {}
    for folder in sorted({path.parent for eval_dir in folders for path in eval_dir.rglob("samples_*.jsonl")}):
        for task, path in newest_logs(folder).items():
            if task.endswith(LOGLIK):  # evaluate --mode loglik: option letters scored, no responses
                continue
            count, sums = 0, Counter()
            for sample in read_samples(path, on_bad=bad):
                try:
                    scores = [
                        score_sample(sample.prompt + text, sample.prompt, sample.doc.get("label"))
                        for text in sample.responses
                    ]
                except ValueError as error:  # a label that names no option letter
                    bad(sample.where, f"field doc.label: {error}")
                    continue
                count += len(scores)
                for score in scores:
                    sums.update({key: score.metrics[key] for key in KEYS})
            logs[(folder.name, task)] = (count, sums)
    return logs


def step_series(placed: Placed, scalars: Mapping[str, Sequence[tuple[float, int, float]]]) -> tuple[list, str]:
    """[(x, {key: value})] per step, and where it came from: TensorBoard when it has the behaviour curves
    (every response of each step), else the placed rollout samples; the sampled steps after the last log
    follow TensorBoard's. A step logged twice (a resumed run does the steps after its checkpoint again) has
    its later value."""
    sampled = [(x, {key: placed.sums[x][key] / count for key in KEYS}) for x, count in sorted(placed.counts.items())]
    if f"train/behaviour_{CLASSES[0]}" not in scalars:
        return sampled, f"{sum(placed.counts.values())} rollout samples"
    by_step = defaultdict(dict)
    for key in KEYS:
        for _, step, value in scalars.get(f"train/{key}", ()):  # by time: the later value stays
            by_step[step][key] = value
    source = f"TensorBoard train/* scalars ({len(by_step)} logged steps, every response of each step)"
    after = [(x, values) for x, values in sampled if x > max(by_step)]
    if after:
        source += f", then rollout samples for steps {after[0][0]}-{after[-1][0]}, after the last log"
    return sorted(by_step.items()) + after, source


def examples(stage: Stage, picks: Mapping[tuple[int, str], dict], count: int = 2) -> list[dict]:
    """`count` example samples of the stage's steps, of its leading class when it has enough, spread evenly."""
    inside = [pick for (x, _), pick in sorted(picks.items()) if stage.first_step <= x <= stage.last_step]
    leading = max(stage.shares, key=stage.shares.get)
    pool = [pick for pick in inside if pick["class"] == leading]
    pool = pool if len(pool) >= count else inside
    return [pool[(2 * index + 1) * len(pool) // (2 * count)] for index in range(min(count, len(pool)))]


def _fenced(text: str, chars: int) -> str:
    shown = f"{text}\n... ({chars - len(text)} more characters)" if chars > len(text) else text
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", shown)), default=0))
    return f"{fence}text\n{shown}\n{fence}"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def checkpoint_order(name: str) -> tuple:
    """global_stepN folders by N, then the final model (`model`), then any other name."""
    match = _STEP_IN_NAME.search(name)
    return (0, int(match[1]), name) if match else (1 if name == "model" else 2, 0, name)


# ---------------------------------------------------------------- the command


def class_shares(values: Mapping[str, float]) -> dict[str, float]:
    return {name: values.get(f"behaviour_{name}", 0.0) for name in CLASSES}


def eval_timeline(eval_logs: Mapping[tuple[str, str], tuple[int, Counter]]) -> tuple[list[dict], dict[str, list]]:
    """The eval rows, (checkpoint, task) by checkpoint order with their response count and mean logs, and per
    task the stages across its checkpoints."""
    evals = [
        {"checkpoint": name, "task": task, "responses": count, **{key: sums[key] / count for key in KEYS}}
        for (name, task), (count, sums) in sorted(eval_logs.items(), key=lambda item: checkpoint_order(item[0][0]))
        if count
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


def report_notes(placed: Placed | None, logged: Sequence[tuple[float, int]], bad: BadLines) -> list[str]:
    """What the reader of the report must know: samples after the last log, and the bad lines skipped."""
    found = []
    if placed and placed.tail:
        last = max(step for _, step in logged)
        text = (
            f"the TensorBoard events end at step {last} ({_utc(logged[-1][0])}), before {placed.tail} rollout "
            "sample(s): the run's last steps were not logged (a killed job loses the steps it had not flushed)"
        )
        if placed.estimated:
            text += (
                f"; {placed.estimated} placed at steps {placed.tail_steps[0]}-{placed.tail_steps[1]} by their "
                "process's count of graded samples (`call`), at the rate it graded them on the logged steps"
            )
        if placed.tail > placed.estimated:
            text += (
                f"; {placed.tail - placed.estimated} at step {last + 1}, their step unknown (no `call` field, or "
                "fewer than two logged steps with samples of their process)"
            )
        found.append(text)
    if bad.count:
        more = f", and {bad.count - len(bad.shown)} more" if bad.count > len(bad.shown) else ""
        found.append(f"skipped {bad.count} bad line(s) (--strict refuses them): " + "; ".join(bad.shown) + more)
    return found


def analyze(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    eval_dirs: Sequence[str | os.PathLike] = (),
    bins: int = 50,
    window: int = 5,
    min_steps: int = 3,
    strict: bool = False,
) -> dict:
    """Read the run, write the plots, report.md and timeline.json into `output`; returns timeline.json's
    content. Bad lines are skipped and counted (with `strict`, the first is an error)."""
    run_dir, output = Path(run_dir), Path(output)
    if not run_dir.is_dir():
        raise AnalyzeError(f"{run_dir}: no such folder; give a run's OUTPUT_DIR")
    check_flags(bins, window, min_steps)
    for folder in eval_dirs:
        if not Path(folder).is_dir():
            raise AnalyzeError(f"--eval {folder}: no such folder")
    bad, cut = BadLines(strict), []
    scalars = read_scalars(run_dir / "tensorboard") if (run_dir / "tensorboard").is_dir() else {}
    logged = sorted(
        {(time, step) for tag, points in scalars.items() if tag.startswith("train/") for time, step, _ in points}
    )
    folder, placed = run_dir / "rollouts", None
    if folder.is_dir():  # only the reading that places the samples (`count`) notes bad and cut lines
        read = lambda count: rollout_samples(folder, bad if count else BadLines(strict), cut if count else [])  # noqa: E731
        placed = place_samples(read, logged, bins)
    eval_logs = read_eval_logs(
        (Path(folder) for folder in eval_dirs or [run_dir / "eval"] if Path(folder).is_dir()), bad
    )
    series, source = step_series(placed or Placed("training step"), scalars)
    if not series and not any(count for count, _ in eval_logs.values()):
        raise AnalyzeError(
            f"{run_dir}: nothing to analyse: no rollouts/*.jsonl, no TensorBoard train/behaviour_* scalars under "
            "tensorboard/, no lm-eval sample logs under eval/. Launch with --rollout-samples F and --tensorboard, or "
            "pass --eval FOLDER"
        )
    stages = stage_timeline([(x, class_shares(values)) for x, values in series], window, min_steps)
    evals, eval_stages = eval_timeline(eval_logs)
    notes = [
        *(f"{where}: the last line is cut off and was skipped" for where in cut),
        *report_notes(placed, logged, bad),
    ]
    summary = {
        "run_dir": str(run_dir),
        "source": source,
        "axis": placed.axis if placed else "training step",
        "rollout_samples": sum(placed.counts.values()) if placed else 0,
        "rollout_samples_per_x": dict(sorted(placed.counts.items())) if placed else {},
        "bad_lines": bad.count,
        "stages": [{"name": s.name, "first": s.first_step, "last": s.last_step, "shares": s.shares} for s in stages],
        "steps": [{"x": x, **values} for x, values in series],
        "eval": evals,
        "eval_stages": eval_stages,
        "notes": notes,
    }
    for note in notes:
        print(f"med-rlvr analyze: warning: {note}", file=sys.stderr)
    write_outputs(output, summary, stages, series, placed)
    return summary


def write_outputs(
    output: Path, summary: Mapping, stages: Sequence[Stage], series: Sequence, placed: Placed | None
) -> None:
    """The report, timeline.json and the plots, written together at the end, so that a failed plot leaves
    the folder as it was."""
    axis = summary["axis"]
    files = {
        output / "report.md": [timeline_markdown(summary, stages, placed)],
        output / "timeline.json": [json.dumps(summary, indent=1) + "\n"],
    }
    if series:
        files[output / "behaviour.png"] = plot_behaviour(series, stages, axis)
        rates = [(RATES, "share of responses (0-1)")]
        files[output / "rates.png"] = plot_lines(series, "Accuracy and format rates per step", stages, axis, rates)
        lengths = [(LENGTHS[:1], "thinking (words)"), (LENGTHS[1:], "response (characters)")]
        files[output / "lengths.png"] = plot_lines(series, "Response lengths per step (means)", stages, axis, lengths)
    if summary["eval"]:
        files[output / "eval.png"] = plot_eval(summary["eval"])
    write_together(files)
    for path in files:
        print(f"med-rlvr analyze: wrote {path}")


def timeline_markdown(summary: Mapping, stages: Sequence[Stage], placed: Placed | None) -> str:
    axis, shares = summary["axis"], [name.replace("_", " ") for name in CLASSES]
    lines = [f"# Training dynamics of {summary['run_dir']}", ""]
    lines += [f"Note: {note}.\n" for note in summary["notes"]]
    if stages:
        lines += [f"Class shares per {axis} from {summary['source']}.", ""]
        if placed and placed.counts:
            if axis == "time bin":
                start, end = (_utc(time) for time in placed.times)
                where = f"in {max(placed.counts)} equal time bins from {start} to {end} (no TensorBoard events)"
            else:
                where = "at the first training step logged after each (TensorBoard wall times)"
            files = len(placed.files)
            lines += [
                f"Rollout samples: {summary['rollout_samples']} from {files} process file(s), placed {where}.",
                "",
            ]
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
            "## Stage timeline",
            "",
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
            chosen = examples(stage, placed.picks if placed else {})
            if not chosen:
                lines += ["No rollout sample in these steps.", ""]
            for pick in chosen:
                lines += [
                    f"{axis.capitalize()} {pick['x']} ({_utc(pick['time'])}), "
                    f"{pick['class'].replace('_', ' ')}, reward {pick['reward']:g}, label {pick['label']}, "
                    f"answer {pick['letter'] or 'none'} ({pick['why']}):",
                    "",
                    _fenced(pick["completion"], pick["chars"]),
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
    parser.add_argument("--window", type=int, default=5, help="training steps averaged around each step (default 5)")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=3,
        help="runs of a class shorter in training steps join the run before (default 3)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad line instead of skipping it")
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
            strict=options.strict,
        )
    except (ToolError, OSError) as error:
        return fail("analyze", error)
    for stage in summary["stages"]:
        print(f"  {stage['name']}: {summary['axis']}s {stage['first']}-{stage['last']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
