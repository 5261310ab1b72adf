"""lm-eval's sample logs (`--log_samples`): their file names, the newest log of each task, one sample per line.

lm-eval 0.4.13 (loggers/evaluation_tracker.py) writes `samples_TASK_TIMESTAMP.jsonl` per task and run, one
line per question: the row (`doc`), the responses (`resps[0]`, one per repeat) and the request, whose
`arguments.gen_args_0` holds the prompt as sent (`arg_0`, after any chat template) and the generation
settings (`arg_1`). `evaluate` and `analyze` both read them here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.files import read_jsonl

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
