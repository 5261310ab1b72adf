"""Row formatting: one source row as one output row, validated, or InvalidRow saying which field is wrong.

`format_row` is a pure function; `verl_row` lays a formatted row out for verl. DataError, the package's
error for input it cannot use, lives here with its per-row kind.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping, Sequence

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.data.sources import Source
from med_rlvr_plugin.prompts import LETTERS, render_chat_prompt, render_prompt


class DataError(ToolError):
    """Input the formatter cannot use; the message says where and what to do."""


class InvalidRow(DataError):
    """One source row fails validation: which field, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field, self.reason = field, reason


def normalize(text: str) -> str:
    """Text compared for duplicates and --exclude: Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def sft_response(letter: str, option: str) -> str:
    """The SFT baseline's target: the gold option, in the tags the verifier grades.

    MedQA has no reference reasoning, so the only supervision is the answer. The verifier rejects an
    empty thinking block, so the block restates the gold option: the verifier's answer-leak check
    flags exactly this, which is what answer-only SFT teaches.
    """
    return f"<think> The correct option is {letter}. {option} </think> <answer>{letter}</answer>"


def field_value(row: Mapping, path: str, required: bool = True) -> object:
    value: object = row
    try:
        for key in path.split("."):
            value = value[key]
    except (KeyError, TypeError, IndexError):
        if not required:
            return None
        raise InvalidRow(path, f"missing; the row has fields {', '.join(sorted(row))}") from None
    return value


def _text(value: object, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRow(field, f"{what} must be text, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise InvalidRow(field, f"{what} is empty")
    return value


def _options(row: Mapping, source: Source) -> list[str]:
    if source.fixed_options:
        return list(source.fixed_options)
    if len(source.options) > 1:
        return [_text(field_value(row, name), name, "option") for name in source.options]
    name = source.options[0]
    value = field_value(row, name)
    if isinstance(value, Mapping):
        # `datasets` pads a letter missing from some rows with None when rows have different option
        # counts, so None values are absent options; the rest must be keyed A, B, C... with no gap.
        keys = sorted(key for key, text in value.items() if text is not None)
        named = [(f"{name}.{key}", value[key]) for key in keys]
    elif isinstance(value, list):
        keys, named = None, [(f"{name}[{index}]", text) for index, text in enumerate(value)]
    else:
        raise InvalidRow(name, f"expected a list of options or a dict keyed by letter, got {type(value).__name__}")
    if not 2 <= len(named) <= len(LETTERS):
        raise InvalidRow(name, f"{len(named)} options; need 2 to {len(LETTERS)}")
    if keys is not None and keys != list(LETTERS[: len(keys)]):
        raise InvalidRow(name, f"option keys {keys} are not consecutive letters from A")
    return [_text(text, field, "option") for field, text in named]


def _gold_letter(row: Mapping, source: Source, options: list[str]) -> str:
    letters = LETTERS[: len(options)]
    letter = None
    if source.answer_letter:
        value = field_value(row, source.answer_letter)
        if not isinstance(value, str) or value.strip() not in letters:
            raise InvalidRow(source.answer_letter, f"gold letter {value!r} is not one of {', '.join(letters)}")
        letter = value.strip()
    if source.answer_index:
        base = source.answer_index_base
        if base is None:
            raise ValueError(f"{source.datasource}: set answer_index_base (0 or 1) with dataclasses.replace")
        value = field_value(row, source.answer_index)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value - base < len(options):
            hint = " (-1 marks a question without a public answer, as in MedMCQA's test split)" if value == -1 else ""
            raise InvalidRow(
                source.answer_index,
                f"gold index {value!r} is not an index of the {len(options)} options counted from {base}{hint}",
            )
        if letter and LETTERS[value - base] != letter:
            raise InvalidRow(
                source.answer_index,
                f"gold index {value} names {LETTERS[value - base]}, but {source.answer_letter} says {letter}",
            )
        letter = LETTERS[value - base]
    if source.answer_text:
        answer = " ".join(_text(field_value(row, source.answer_text), source.answer_text, "answer").split())
        matches = [
            candidate for candidate, option in zip(letters, options, strict=True) if " ".join(option.split()) == answer
        ]
        if letter and letter not in matches:
            option = options[letters.index(letter)]
            raise InvalidRow(source.answer_text, f"answer {answer!r} differs from option {letter}, {option!r}")
        if not letter and len(matches) != 1:
            raise InvalidRow(source.answer_text, f"answer {answer!r} matches {len(matches)} options, not 1")
        letter = letter or matches[0]
    return letter


def _question(row: Mapping, source: Source) -> str:
    question = _text(field_value(row, source.question), source.question, "question").strip()
    if not source.context:
        return question
    passages = field_value(row, source.context)
    labels = field_value(row, source.context_labels) if source.context_labels else None
    if not isinstance(passages, list) or not passages:
        raise InvalidRow(source.context, f"expected a non-empty list of passages, got {passages!r}")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(passages)):
        raise InvalidRow(source.context_labels, f"expected one label per passage ({len(passages)}), got {labels!r}")
    lines = []
    for index, passage in enumerate(passages):
        text = " ".join(_text(passage, f"{source.context}[{index}]", "passage").split())
        lines.append(f"{labels[index]}: {text}" if labels and labels[index] else text)
    return "\n".join([*lines, "", question])


def format_row(row: Mapping, source: Source, chat: bool = False, sft: bool = False) -> dict:
    """One source row as one output row, or InvalidRow saying which field is wrong and why.

    Output keys: `prompt` (base text, or a messages list when `chat`), `response` (only when `sft`),
    `label` (gold letter), `datasource`, `id`, `question` and `options` (as the prompt shows them),
    `metadata` (the source's fields named in `source.metadata`, keyed by their last path component).
    """
    question = _question(row, source)
    options = _options(row, source)
    label = _gold_letter(row, source, options)
    options = [" ".join(option.split()) for option in options]
    if source.id:
        source_id = field_value(row, source.id)
        if source_id is None or not str(source_id).strip():
            raise InvalidRow(source.id, "id is empty")
        row_id = str(source_id)
    else:
        row_id = hashlib.sha256("\0".join([question, *options]).encode()).hexdigest()[:16]
    output = {"prompt": render_chat_prompt(question, options) if chat else render_prompt(question, options)}
    if sft:
        # A base prompt ends with "Assistant:" and OpenRLHF's SFT joins prompt + response as text, so the
        # response opens with a space; a chat prompt is a messages list, so the response is one too.
        response = sft_response(label, options[LETTERS.index(label)])
        output["response"] = [{"role": "assistant", "content": response}] if chat else " " + response
    output |= {"label": label, "datasource": source.datasource, "id": row_id, "question": question}
    output["options"] = options
    output["metadata"] = {path.rpartition(".")[2]: field_value(row, path, required=False) for path in source.metadata}
    return output


def verl_row(row: Mapping, index: int) -> dict:
    """A chat row of `format_row` in verl's RL parquet layout, `index` being its position in the file.

    verl gives its reward function the response alone, so `extra_info` keeps the grader's prompt: the
    messages' contents, one per line, which hold the option lines the verifier reads (verl_reward.py puts
    it back in front of the response). The source's `metadata` is left out: its fields differ per dataset.
    """
    return {
        "data_source": row["datasource"],
        "prompt": row["prompt"],
        "ability": "medical_mcqa",
        "reward_model": {"style": "rule", "ground_truth": row["label"]},
        "extra_info": {
            "index": index,
            "id": row["id"],
            "question": row["question"],
            "prompt": "\n".join(message["content"] for message in row["prompt"]),
        },
    }


def examples(items: Sequence[str], count: int = 3) -> str:
    """The first few of a list of locations, for a one-line message."""
    return ", ".join(items[:count]) + (f" and {len(items) - count} more" if len(items) > count else "")
