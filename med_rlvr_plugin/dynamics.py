"""Training dynamics: the behaviour class of one graded response, and a run's stage timeline. Pure, no I/O.

The paper (arXiv 2502.19655) watches RLVR move through six stages: Format Failure, Verbose Formatter,
Concise Structurer, Direct Answer Hacker, Step-by-Step Exploit, Reintegrated Reasoning. One response cannot
tell which stage a run is in (a Concise Structurer response looks like a Reintegrated Reasoning one; what
tells them apart is what came before), so this module has two levels (docs/dynamics.md has the same rules
with examples):

1. `behaviour` puts one graded response into one of CLASSES, from its verdict and the prompt's options.
2. `stage_timeline` reads the sequence of per-step class shares and returns the stages with their steps.

Also here: the reward file's rollout-sampling settings (`rollout_sampling`), read from MED_RLVR_ROLLOUT_*
variables, which `verifier.config_from_env` accepts as known names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from med_rlvr_plugin.verifier import ROLLOUT_ENV_VARS, THINK_CLOSE, THINK_OPEN, Grade, parse_options

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


def response_logs(grade: Grade, kind: str) -> dict[str, float]:
    """The numbers the reward file logs for one response of class `kind`: OpenRLHF averages each per step
    into `train/<key>`, so `behaviour_<class>` (1.0 for the response's class, else 0.0) becomes its share."""
    logs = {
        "accuracy": grade.correct,
        "well_formed": grade.well_formed,
        "preamble": grade.preamble,
        "answer_leak": grade.answer_leak,
        "think_words": grade.think_words,
        "response_chars": len(grade.completion),
        "prompt_not_found": not grade.prompt_found,
        **{f"behaviour_{name}": name == kind for name in CLASSES},
    }
    return {key: float(value) for key, value in logs.items()}


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

    1. Smooth: each step's shares become the mean over the `window` steps centred on it (fewer at the
       ends), so a noisy step does not start a stage.
    2. Label each step with its dominant class, the largest smoothed share (ties: the earlier in CLASSES).
    3. A run of fewer than `min_steps` equally labelled steps takes the label of the run before it (runs
       at the start, of the first run of at least `min_steps`), so a blip does not start a stage either.
    4. Name each run: malformed is Format Failure; answer_in_thinking is Direct Answer Hacker;
       reasoning_before_think is Step-by-Step Exploit; verbose and concise are Verbose Formatter and
       Concise Structurer until a hack (either of those two) has led a run, and Reintegrated Reasoning
       after one. Neighbouring runs with the same name join.

    A class missing from a step's shares counts as 0. The stage's shares are the raw (unsmoothed) means.
    """
    if window < 1 or min_steps < 1:
        raise ValueError(f"window and min_steps must be at least 1, got {window} and {min_steps}")
    rows = [[float(shares.get(name, 0.0)) for name in CLASSES] for _, shares in series]
    labels = []
    for index in range(len(rows)):
        near = rows[max(0, index - (window - 1) // 2) : index + window // 2 + 1]
        smoothed = [sum(column) / len(near) for column in zip(*near, strict=True)]
        labels.append(CLASSES[smoothed.index(max(smoothed))])
    runs = _runs(labels)
    previous = next((label for label, start, end in runs if end - start >= min_steps), None)
    for label, start, end in runs:
        if end - start >= min_steps:
            previous = label
        elif previous:
            labels[start:end] = [previous] * (end - start)
    hacked, names = False, []
    for label in labels:
        hacked = hacked or label in HACKS
        names.append(STAGES[5] if hacked and label in ("verbose", "concise") else _STAGE_OF[label])
    steps = [step for step, _ in series]
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


@dataclass(frozen=True)
class RolloutSampling:
    """Where and how much of the graded rollouts the reward file records (docs/dynamics.md, "Rollout samples").

    fraction: the share of calls recorded, each drawn at random; 0 turns sampling off.
    folder: absolute; each process appends to its own `rollouts-HOST-PID.jsonl` there.
    max_bytes: a process stops recording (and says so once) when its file would grow past this.
    """

    fraction: float = 0.0
    folder: str | None = None
    max_bytes: int = 256 * 2**20


def rollout_sampling(environ: Mapping[str, str]) -> RolloutSampling:
    """The rollout-sampling settings an environment describes; ValueError naming the variable that is wrong.

    MED_RLVR_ROLLOUT_SAMPLES   share of calls to record, 0 to 1 (default 0: off)
    MED_RLVR_ROLLOUT_DIR       absolute folder for the files (required when the share is above 0)
    MED_RLVR_ROLLOUT_MAX_MB    per-process file cap in MiB (default 256)
    """
    fraction_name, folder_name, cap_name = ROLLOUT_ENV_VARS
    try:
        fraction = float(environ.get(fraction_name, "0"))
        if not 0 <= fraction <= 1:
            raise ValueError("must be between 0 and 1")
    except ValueError as error:
        raise ValueError(f"{fraction_name}={environ[fraction_name]!r}: {error}") from None
    try:
        max_mb = float(environ.get(cap_name, "256"))
        if not max_mb > 0:
            raise ValueError("must be above 0")
    except ValueError as error:
        raise ValueError(f"{cap_name}={environ[cap_name]!r}: {error}") from None
    folder = environ.get(folder_name)
    if fraction > 0 and not (folder and os.path.isabs(folder)):
        raise ValueError(
            f"{fraction_name}={environ[fraction_name]!r} needs {folder_name}, an absolute folder (a relative one "
            f"would land in each Ray actor's temporary working_dir copy); got {folder!r}"
        )
    return RolloutSampling(fraction, folder if fraction > 0 else None, int(max_mb * 2**20))
