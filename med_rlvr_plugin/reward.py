"""Scoring one sample: its reward, correctness, letter, behaviour class and logged metrics. Pure, no I/O.

Every way the reward reaches a trainer (the OpenRLHF reward file, the HTTP service, verl, TRL) and every
tool that grades again (evaluate, analyze) scores here, so a response earns the same numbers everywhere.
No environment, no printing, no files: the caller passes the RewardConfig (the adapters read theirs from
the MED_RLVR_* variables, docs/verifier.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from med_rlvr_plugin.dynamics import CLASSES, explain
from med_rlvr_plugin.verifier import Grade, RewardConfig, grade_response

# The metrics of one response, the vocabulary every tool uses. OpenRLHF averages each over a step into
# `train/<key>`, so a 0/1 metric becomes a rate and `behaviour_<class>` the share of that class.
METRICS = (
    "accuracy",  # well formed and names the gold letter (OpenRLHF's `scores`)
    "well_formed",
    "preamble",  # text before <think>
    "answer_leak",  # the thinking block only states the chosen option
    "think_words",
    "response_chars",
    "prompt_not_found",  # the prompt was not at the start of the query; the split was a guess
    *(f"behaviour_{name}" for name in CLASSES),
)


@dataclass(frozen=True)
class Score:
    """One scored sample: the verifier's verdict, the response's behaviour class (and why) and its metrics."""

    grade: Grade
    behaviour: str
    metrics: dict[str, float]
    reason: str = ""  # why the response is in its class: for the exploit, where the reasoning was


def score_grade(grade: Grade, prompt: str) -> Score:
    """The behaviour class and METRICS of a graded response to `prompt`."""
    kind, reason = explain(grade, prompt)
    values = (
        grade.correct,
        grade.well_formed,
        grade.preamble,
        grade.answer_leak,
        grade.think_words,
        len(grade.completion),
        not grade.prompt_found,
        *(name == kind for name in CLASSES),
    )
    return Score(grade, kind, {key: float(value) for key, value in zip(METRICS, values, strict=True)}, reason)


def score_sample(query: str, prompt: str, label: object, config: RewardConfig = RewardConfig()) -> Score:
    """Score one OpenRLHF sample (query = prompt + response as decoded, prompt, label) under `config`.

    ValueError only for a label naming no option letter (a configuration error); any query is scored.
    """
    return score_grade(grade_response(query, prompt, label, config), prompt)


def openrlhf_result(scores: Sequence[Score]) -> dict:
    """What OpenRLHF expects of a reward function: `rewards`, `scores` (1.0 for a well-formed correct
    response: OpenRLHF's dynamic filtering reads it) and `extra_logs` (every metric, the same keys on every
    sample). A batch of one, which is what OpenRLHF sends, gets plain numbers: OpenRLHF wraps the answer as
    `torch.tensor([rewards])`, so a one-element list would add a dimension."""
    rewards = [score.grade.reward for score in scores]
    correct = [float(score.grade.correct) for score in scores]
    logs = {key: [score.metrics[key] for score in scores] for key in METRICS}
    if len(scores) == 1:
        return {
            "rewards": rewards[0],
            "scores": correct[0],
            "extra_logs": {key: values[0] for key, values in logs.items()},
        }
    return {"rewards": rewards, "scores": correct, "extra_logs": logs}
