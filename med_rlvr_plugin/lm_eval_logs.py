"""lm-eval's sample logs (`--log_samples`): their file names, the newest log of each task, one sample per line.

lm-eval 0.4.13 (loggers/evaluation_tracker.py) writes `samples_TASK_TIMESTAMP.jsonl` per task and run, one
line per question: the row (`doc`), the responses (`resps[0]`, one per repeat) and the request, whose
`arguments.gen_args_0` holds the prompt as sent (`arg_0`, after any chat template) and the generation
settings (`arg_1`). `evaluate` and `analyze` both read them here. A multiple_choice task's log (the
log-likelihood variant, `*_loglik`) holds one request per option instead, `gen_args_I` = (prompt, option
continuation), and `resps[I][0]` = (log-likelihood, is greedy), written as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.files import read_jsonl

# A task's log-likelihood variant is named TASK + LOGLIK (evaluate's `--mode loglik`): a multiple_choice log.
LOGLIK = "_loglik"
SAMPLES_NAME = re.compile(r"samples_(?P<task>.+)_(?P<stamp>\d{4}-\d\d-\d\dT[\d.-]+)\.jsonl")
_EXPECTED = "expected doc, resps and arguments.gen_args_0.arg_0 and arg_1, as lm-eval --log_samples writes them"


@dataclass(frozen=True)
class Sample:
    """One logged question of a generate_until task."""

    where: str  # path:line
    doc_id: object
    doc: dict
    responses: list[str]
    prompt: str  # as sent, after any chat template
    generation: dict  # lm-eval's generation settings: until, max_gen_toks, do_sample, ...


def newest_logs(folder: Path) -> dict[str, Path]:
    """Task -> its newest sample log in `folder` (not below). Each lm-eval run adds files stamped with its
    start time, so the newest one is the last run's."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in sorted(folder.glob("samples_*.jsonl")):
        match = SAMPLES_NAME.fullmatch(path.name)
        if match and match["stamp"] > newest.get(match["task"], ("", path))[0]:
            newest[match["task"]] = (match["stamp"], path)
    return {task: path for task, (_, path) in sorted(newest.items())}


def read_samples(path: Path, on_bad: Callable[[str, str], None] | None = None) -> Iterator[Sample]:
    """Each line of a generate_until sample log; ToolError naming the file and line for one that is not (with
    `on_bad`, it is passed there with the reason and skipped), or for one generated with stop strings
    (lm-eval cuts them from the response: the grade would be wrong, for every line of the log)."""
    for where, line in read_jsonl(path, _EXPECTED, on_bad=on_bad):
        try:
            request = line["arguments"]["gen_args_0"]
            sample = Sample(
                where, line.get("doc_id"), line["doc"], line["resps"][0], request["arg_0"], request["arg_1"]
            )
            texts = sample.responses
            if not (isinstance(texts, list) and texts and all(isinstance(text, str) for text in texts)):
                raise TypeError("resps[0] must be a non-empty list of texts")
            if not (
                isinstance(sample.doc, dict) and isinstance(sample.prompt, str) and isinstance(sample.generation, dict)
            ):
                raise TypeError("doc and arg_1 must be objects, arg_0 a text")
        except (AttributeError, IndexError, KeyError, TypeError) as error:
            reason = f"not a graded lm-eval generate_until sample ({type(error).__name__}: {error})"
            if on_bad is None:
                raise ToolError(f"{where}: {reason}; {_EXPECTED}") from None
            on_bad(where, reason)
            continue
        if any(sample.generation.get("until") or ()):
            raise ToolError(
                f"{where}: generated with stop strings {sample.generation['until']}, which lm-eval cuts from the "
                "response, so the verifier would grade cut responses; generate with `until: []`"
            )
        yield sample


_EXPECTED_CHOICES = (
    "expected doc, resps and arguments.gen_args_I.arg_0 and arg_1 per option, as lm-eval --log_samples writes "
    "a multiple_choice task's samples"
)


@dataclass(frozen=True)
class ChoiceSample:
    """One logged question of a multiple_choice (log-likelihood) task."""

    where: str  # path:line
    doc_id: object
    doc: dict
    prompt: str  # as sent, after any chat template: the same for every option
    choices: list[str]  # the continuations scored, as sent (" A", " B", ...)
    logliks: list[float]  # their log-likelihoods


def read_choice_samples(path: Path) -> Iterator[ChoiceSample]:
    """Each line of a multiple_choice sample log; ToolError naming the file and line for one that is not."""
    for where, line in read_jsonl(path, _EXPECTED_CHOICES):
        try:
            requests = [line["arguments"][f"gen_args_{index}"] for index in range(len(line["arguments"]))]
            prompts = {request["arg_0"] for request in requests}
            sample = ChoiceSample(
                where,
                line.get("doc_id"),
                line["doc"],
                prompts.pop(),
                [request["arg_1"] for request in requests],
                [float(response[0][0]) for response in line["resps"]],
            )
            if prompts or not isinstance(sample.prompt, str) or not all(isinstance(c, str) for c in sample.choices):
                raise TypeError("every option's request must hold the same prompt text and a continuation text")
            if len(sample.logliks) != len(sample.choices) or not isinstance(sample.doc, dict):
                raise TypeError("resps must hold one log-likelihood per option, doc an object")
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            raise ToolError(
                f"{where}: not a logged multiple_choice sample ({type(error).__name__}: {error}); {_EXPECTED_CHOICES}"
            ) from None
        yield sample
