"""The rollout samples a run left, streamed: read line by line, classed again, placed at their training steps.

`analyze` reads them here. Nothing holds the samples: per step there are counts and sums and one example
per class, so memory grows with the steps of a run, not with the size of its sample files.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.dynamics import CLASSES
from med_rlvr_plugin.files import read_jsonl
from med_rlvr_plugin.reward import score_grade
from med_rlvr_plugin.verifier import Grade

# Per-step quantities, named as in reward.METRICS: the reward file logs them as extra_logs, OpenRLHF as train/<key>.
RATES = ("accuracy", "well_formed", "answer_leak", "preamble")
LENGTHS = ("think_words", "response_chars")
KEYS = (*RATES, *LENGTHS, *(f"behaviour_{name}" for name in CLASSES))
GRADE_FIELDS = tuple(Grade.__dataclass_fields__)
EXAMPLE_CHARS = 1500
SHOWN_BAD_LINES = 10  # listed by file:line in the report; the rest are counted


class AnalyzeError(ToolError):
    """Input that cannot be analysed; the message says which file and what to do."""


@dataclass
class BadLines:
    """Lines skipped as unreadable: how many, and the first SHOWN_BAD_LINES as `path:line: reason`. With
    `strict`, the first one is an error instead."""

    strict: bool = False
    count: int = 0
    shown: list[str] = field(default_factory=list)

    def __call__(self, where: str, reason: str) -> None:
        if self.strict:
            raise AnalyzeError(f"{where}: {reason}; fix or remove the line, or leave out --strict to skip bad lines")
        self.count += 1
        if len(self.shown) < SHOWN_BAD_LINES:
            self.shown.append(f"{where}: {reason}")


def rollout_samples(folder: Path, bad: BadLines, cut: list[str]) -> Iterator[dict]:
    """Each rollout sample of every *.jsonl in `folder`, file by file in line order, classed again from its
    verdict (`reward.score_grade`). A line that is not one goes to `bad`; a cut last line (its process
    stopped mid-write) to `cut`."""
    expected = f"each line holds time, prompt, label and the verdict fields {', '.join(GRADE_FIELDS)}"
    for path in sorted(folder.glob("*.jsonl")):
        for where, record in read_jsonl(path, expected, on_cut=cut.append, on_bad=bad):
            try:
                grade = Grade(**{name: record[name] for name in GRADE_FIELDS})
                prompt, when, call = record["prompt"], float(record["time"]), record.get("call")
                score = score_grade(grade, prompt)
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                bad(where, f"not a rollout sample ({type(error).__name__}: {error}); {expected}")
                continue
            call = call if isinstance(call, int) else None
            sample = {"time": when, "call": call, "file": path.name, "class": score.behaviour, "grade": grade}
            yield {**sample, "why": score.reason, "logs": score.metrics, "label": record.get("label")}


@dataclass
class Placed:
    """The rollout samples, read once: per step (x) their count and metric sums, one example per (x, class),
    the files, the time span, and the samples after the last TensorBoard log (`tail`), of which `estimated`
    were placed by their call numbers, at steps `tail_steps` (first, last)."""

    axis: str
    counts: Counter = field(default_factory=Counter)
    sums: dict = field(default_factory=lambda: defaultdict(Counter))
    picks: dict = field(default_factory=dict)
    files: set = field(default_factory=set)
    times: list = field(default_factory=list)
    tail: int = 0
    estimated: int = 0
    tail_steps: tuple = ()

    def add(self, x: int, sample: dict) -> None:
        self.counts[x] += 1
        self.sums[x].update({key: sample["logs"][key] for key in KEYS})
        self.files.add(sample["file"])
        when, grade = sample["time"], sample["grade"]
        self.times = [min(self.times[0], when), max(self.times[1], when)] if self.times else [when, when]
        if (x, sample["class"]) not in self.picks:  # the text cut to what the report shows: memory per step
            pick = {"x": x, "time": when, "class": sample["class"], "reward": grade.reward, "label": sample["label"]}
            text = grade.completion
            self.picks[(x, sample["class"])] = {**pick, "letter": grade.letter, "completion": text[:EXAMPLE_CHARS],
                                                "chars": len(text), "why": sample["why"]}  # fmt: skip


def place_samples(read: Callable[[bool], Iterable[dict]], logged: Sequence[tuple[float, int]], bins: int) -> Placed:
    """Read the samples (`read(True)` streams them, `read(False)` too without counting bad lines again),
    giving each an x, its training step, and sum them per x.

    With TensorBoard events (`logged`: the (wall time, step) of every train/* log, by time), a sample belongs
    to the first step logged at or after its time: OpenRLHF logs step N after generating and training on its
    rollouts. Every log counts, also of steps a resumed run did again, so a sample of an abandoned step
    keeps its step. A sample after the last log (a killed job loses its unflushed steps) is placed by its
    `call`, its process's count of graded samples (`_tail_step`), else at the step after the last one.
    Without events, the span from the first to the last sample is cut into `bins` equal times (fewer when
    there are under 20 samples a bin), numbered from 1: the samples are read twice.
    """
    if not logged:
        total, start, end = 0, math.inf, -math.inf
        for sample in read(False):
            total, start, end = total + 1, min(start, sample["time"]), max(end, sample["time"])
        count, span = max(1, min(bins, total // 20)), (end - start) or 1.0
        placed = Placed("time bin")
        for sample in read(True):
            placed.add(1 + min(count - 1, int((sample["time"] - start) / span * count)), sample)
        return placed
    placed, times, steps = Placed("training step"), [time for time, _ in logged], sorted({step for _, step in logged})
    covered = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # process -> step -> [samples, sum of calls]
    restarts, last_call, rates = Counter(), {}, {}
    for sample in read(True):
        name, call = sample["file"], sample["call"]
        # A count that falls to under half began again: another process with the same host and pid. (Threads
        # write their lines a few calls out of order, so a small fall is no restart.)
        if call is not None and call < last_call.get(name, 0) / 2:
            restarts[name] += 1
        last_call[name], process = call or 0, (name, restarts[name])
        at = bisect.bisect_left(times, sample["time"])
        if at < len(times):
            x = logged[at][1]
            if call is not None:
                covered[process][x][0] += 1
                covered[process][x][1] += call
        else:
            if process not in rates:  # a process's samples come in time order: its logged ones are all read
                rates[process] = _call_rate(covered[process], steps)
            x = _tail_step(rates[process], call, steps[-1])
            placed.tail += 1
            if rates[process] is not None and call is not None:
                placed.estimated += 1
                placed.tail_steps = (
                    (min(x, placed.tail_steps[0]), max(x, placed.tail_steps[1])) if placed.tail_steps else (x, x)
                )
        placed.add(x, sample)
    return placed


def _call_rate(steps: Mapping[int, list[int]], logged: Sequence[int]) -> tuple[float, float, float] | None:
    """From one process's samples of logged steps: how many samples it grades a training step (the median
    over neighbouring logged steps of the change in their mean call), and the mean call of its last logged
    step, at the middle of the training steps that log stands for; None with fewer than two such steps."""
    means = sorted((step, total / count) for step, (count, total) in steps.items())
    rates = [(later - earlier) / (b - a) for (a, earlier), (b, later) in zip(means, means[1:], strict=False)]
    if not rates or statistics.median(rates) <= 0:
        return None
    step, mean = means[-1]
    # A log at step N stands for the steps after the one logged before it; the first, for as many as its gap.
    at = bisect.bisect_left(logged, step)
    before = logged[at - 1] if at else step - (logged[1] - logged[0] if len(logged) > 1 else 1)
    return statistics.median(rates), step - (step - before - 1) / 2, mean


def _tail_step(rate: tuple[float, float, float] | None, call: int | None, last: int) -> int:
    """The step of a sample after the last log: its call's distance from the reference call, in steps;
    without a call number or a rate, the step after the last one logged."""
    if rate is None or call is None:
        return last + 1
    per_step, middle, mean = rate
    return max(last + 1, math.floor(middle + (call - mean) / per_step + 0.5))
