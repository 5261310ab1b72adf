"""Training dynamics: the behaviour class of one graded response, and a run's stage timeline. Pure, no I/O.

The paper (arXiv 2502.19655) watches RLVR move through six stages: Format Failure, Verbose Formatter,
Concise Structurer, Direct Answer Hacker, Step-by-Step Exploit, Reintegrated Reasoning. One response cannot
tell which stage a run is in (a Concise Structurer response looks like a Reintegrated Reasoning one; what
tells them apart is what came before), so this module has two levels (docs/dynamics.md has the same rules
with examples):

1. `behaviour` puts one graded response into one of CLASSES, from its verdict and the prompt's options.
2. `stage_timeline` reads the sequence of per-step class shares and returns the stages with their steps.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from med_rlvr_plugin.verifier import THINK_CLOSE, THINK_OPEN, Grade, parse_options

# In order of precedence: a response belongs to the first class whose rule it meets.
CLASSES = ("malformed", "reasoning_before_think", "answer_in_thinking", "verbose", "concise")
HACKS = ("reasoning_before_think", "answer_in_thinking")
STAGES = (
    "Format Failure",
    "Verbose Formatter",
    "Concise Structurer",
    "Direct Answer Hacker",
    "Step-by-Step Exploit",
    "Reintegrated Reasoning",
)
# The stage a class names when it leads; verbose and concise name Reintegrated Reasoning after a hack.
_STAGE_OF = dict(zip(CLASSES, (STAGES[0], STAGES[4], STAGES[3], STAGES[1], STAGES[2]), strict=True))


@dataclass(frozen=True)
class Thresholds:
    """The word counts the behaviour classes are drawn at (words: whitespace-separated).

    preamble_words: text before `<think>` of at least this many words is reasoning before `<think>`
        (a shorter one, such as "Sure." or a repeated "Assistant:", is not).
    short_think_words: thinking of fewer words that states the chosen option is answer-in-thinking.
    verbose_think_words: thinking of at least this many words is verbose; fewer is concise.
    """

    preamble_words: int = 10
    short_think_words: int = 25
    verbose_think_words: int = 150

    def __post_init__(self) -> None:
        for name in ("preamble_words", "short_think_words", "verbose_think_words"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")


def behaviour(grade: Grade, prompt: str, thresholds: Thresholds = Thresholds()) -> str:
    """The behaviour class of one graded response to `prompt`: the first of these rules it meets.

    malformed: not well formed (the verifier's format rule; in strict format that includes any text
        before `<think>`).
    reasoning_before_think: at least `preamble_words` words before `<think>` (the Step-by-Step Exploit
        reasons there, then puts a few words in `<think>`).
    answer_in_thinking: the verifier's answer leak (the thinking block is only the chosen option), or
        thinking under `short_think_words` words that states the chosen option: contains its text
        (case- and whitespace-insensitive) or names its letter after "option", "answer" or "choice"
        ("<think>The most appropriate treatment ... is Ketotifen eye drops.</think>", the paper's Direct
        Answer Hacker).
    verbose: thinking of at least `verbose_think_words` words.
    concise: the rest: well formed, short reasoning inside `<think>`.
    """
    if not grade.well_formed:
        return "malformed"
    think_at = grade.completion.find(THINK_OPEN)
    if len(grade.completion[:think_at].split(maxsplit=thresholds.preamble_words)) >= thresholds.preamble_words:
        return "reasoning_before_think"
    if grade.answer_leak or grade.think_words < thresholds.short_think_words and _states_option(grade, prompt):
        return "answer_in_thinking"
    return "verbose" if grade.think_words >= thresholds.verbose_think_words else "concise"


def _states_option(grade: Grade, prompt: str) -> bool:
    start = grade.completion.find(THINK_OPEN) + len(THINK_OPEN)
    think = " ".join(grade.completion[start : grade.completion.find(THINK_CLOSE, start)].split())
    option = " ".join(parse_options(prompt).get(grade.letter, "").lower().split()).rstrip(".")
    if option and option in think.lower():
        return True
    # The letter alone, named as the answer: "option B", "The answer is (B)", "choice: B".
    return re.search(rf"(?i:\b(?:option|answer|choice))(?: is)?:? ?[(\[]?{grade.letter}\b", think) is not None


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its name, its first and last step, and its class shares averaged over its steps."""

    name: str
    first_step: int
    last_step: int
    shares: dict[str, float]


def stage_timeline(
    series: Sequence[tuple[int, Mapping[str, float]]], window: int = 5, min_steps: int = 3
) -> list[Stage]:
    """The stages of a run from its per-step class shares, `(step, {class: share})` in step order.

    1. Smooth: each step's shares become the mean over the logged steps among the `window` training steps
       centred on it (fewer at the ends), so a noisy step does not start a stage.
    2. Label each step with its dominant class, the largest smoothed share (ties: the earlier in CLASSES).
    3. A run of equally labelled steps spanning fewer than `min_steps` training steps takes the label of
       the run before it (runs at the start, of the first run of at least `min_steps`), so a blip does not
       start a stage either.
    4. Name each run: malformed is Format Failure; answer_in_thinking is Direct Answer Hacker;
       reasoning_before_think is Step-by-Step Exploit; verbose and concise are Verbose Formatter and
       Concise Structurer until a hack (either of those two) has led a run, and Reintegrated Reasoning
       after one. Neighbouring runs with the same name join.

    Window and run lengths count training steps, not logged points: with OpenRLHF's `--logger.logging_steps
    4` a logged step stands for the 4 steps up to it (the first, for as many as the gap after it). A class
    missing from a step's shares counts as 0. The stage's shares are the raw (unsmoothed) means.
    """
    if window < 1 or min_steps < 1:
        raise ValueError(f"window and min_steps must be at least 1, got {window} and {min_steps}")
    rows = [[float(shares.get(name, 0.0)) for name in CLASSES] for _, shares in series]
    steps = [step for step, _ in series]
    spans = [later - earlier for earlier, later in zip(steps, steps[1:], strict=False)]
    spans = [spans[0] if spans else 1, *spans]
    labels = []
    for step in steps:
        first, last = step - (window - 1) // 2, step + window // 2
        near = rows[bisect.bisect_left(steps, first) : bisect.bisect_right(steps, last)]
        smoothed = [sum(column) / len(near) for column in zip(*near, strict=True)]
        labels.append(CLASSES[smoothed.index(max(smoothed))])
    runs = _runs(labels)
    previous = next((label for label, start, end in runs if sum(spans[start:end]) >= min_steps), None)
    for label, start, end in runs:
        if sum(spans[start:end]) >= min_steps:
            previous = label
        elif previous:
            labels[start:end] = [previous] * (end - start)
    hacked, names = False, []
    for label in labels:
        hacked = hacked or label in HACKS
        names.append(STAGES[5] if hacked and label in ("verbose", "concise") else _STAGE_OF[label])
    return [
        Stage(
            name,
            steps[start],
            steps[end - 1],
            {c: sum(row[i] for row in rows[start:end]) / (end - start) for i, c in enumerate(CLASSES)},
        )
        for name, start, end in _runs(names)
    ]


def _runs(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each maximal run of equal labels."""
    runs: list[tuple[str, int, int]] = []
    for index, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1], index + 1)
        else:
            runs.append((label, index, index + 1))
    return runs
