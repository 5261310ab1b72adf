"""MedQA, MMLU-Pro, MedMCQA and PubMedQA rows into OpenRLHF prompt files.

As in lm-evaluation-harness, what differs per dataset is data: a `Source` says which field holds the
question, the options and the answer. `format_row` is a pure function from one source row to one output
row and validates it; `prepare` reads a whole dataset (hub or local file), formats it, reports what it
skipped, excluded or found twice, and writes the prompt file and its summary atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from med_rlvr_plugin.prompts import LETTERS, render_chat_prompt, render_prompt


@dataclass(frozen=True)
class Source:
    """Where one dataset keeps each part of a question. Field names may be dotted paths into nested rows.

    options: one field holding a list or a letter-keyed dict, or one field per option (MedMCQA's opa..opd).
    The gold answer comes from a letter, an index (counted from `answer_index_base`), a text equal to one
    option, or several of these, which must then agree.
    """

    datasource: str  # OpenRLHF groups evaluation metrics by this value
    hub_path: str
    hub_config: str | None
    default_split: str
    question: str
    options: tuple[str, ...] = ()
    fixed_options: tuple[str, ...] = ()  # the same options for every row (PubMedQA's yes/no/maybe)
    answer_letter: str | None = None
    answer_index: str | None = None
    answer_index_base: int | None = None  # None: decided per run from evidence or --cop-base (MedMCQA)
    answer_text: str | None = None
    context: str | None = None  # passages shown before the question (PubMedQA's abstract)
    context_labels: str | None = None
    id: str | None = None  # without one, a row's id is a hash of its question and options
    metadata: tuple[str, ...] = ()
    category: str | None = None  # the field `--category` selects on


SOURCES = {
    "medqa": Source(
        datasource="medqa",
        hub_path="GBaker/MedQA-USMLE-4-options",
        hub_config=None,
        default_split="train",
        question="question",
        options=("options",),
        answer_letter="answer_idx",
        answer_text="answer",
        metadata=("meta_info",),
    ),
    "mmlu_pro": Source(
        datasource="mmlu_pro",
        hub_path="TIGER-Lab/MMLU-Pro",
        hub_config=None,
        default_split="test",
        question="question",
        options=("options",),
        answer_letter="answer",
        answer_index="answer_index",
        answer_index_base=0,
        id="question_id",
        metadata=("src", "category"),
        category="category",
    ),
    "medmcqa": Source(
        datasource="medmcqa",
        hub_path="openlifescienceai/medmcqa",
        hub_config=None,
        default_split="validation",
        question="question",
        options=("opa", "opb", "opc", "opd"),
        answer_index="cop",
        id="id",
        metadata=("subject_name", "topic_name", "choice_type"),
    ),
    "pubmedqa": Source(
        datasource="pubmedqa",
        hub_path="qiaojin/PubMedQA",
        hub_config="pqa_labeled",
        default_split="train",
        question="question",
        fixed_options=("yes", "no", "maybe"),
        answer_text="final_decision",
        context="context.contexts",
        context_labels="context.labels",
        id="pubid",
        metadata=("context.meshes",),
    ),
}


class DataError(Exception):
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


def _field(row: Mapping, path: str, required: bool = True) -> object:
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
        return [_text(_field(row, name), name, "option") for name in source.options]
    name = source.options[0]
    value = _field(row, name)
    if isinstance(value, Mapping):
        # `datasets` pads a letter missing from some rows with None when rows have different option
        # counts, so None values are absent options; the rest must be keyed A, B, C... with no gap.
        keys = sorted(key for key, text in value.items() if text is not None)
        if keys != list(LETTERS[: len(keys)]):
            raise InvalidRow(name, f"option keys {keys} are not consecutive letters from A")
        return [_text(value[key], f"{name}.{key}", "option") for key in keys]
    if isinstance(value, list):
        return [_text(text, f"{name}[{i}]", "option") for i, text in enumerate(value)]
    raise InvalidRow(name, f"expected a list of options or a dict keyed by letter, got {type(value).__name__}")


def _gold_letter(row: Mapping, source: Source, options: list[str]) -> str:
    letters = LETTERS[: len(options)]
    letter = None
    if source.answer_letter:
        value = _field(row, source.answer_letter)
        if not isinstance(value, str) or value.strip() not in letters:
            raise InvalidRow(source.answer_letter, f"gold letter {value!r} is not one of {', '.join(letters)}")
        letter = value.strip()
    if source.answer_index:
        base = source.answer_index_base
        if base is None:
            raise ValueError(f"{source.datasource}: set answer_index_base (0 or 1) with dataclasses.replace")
        value = _field(row, source.answer_index)
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
        answer = " ".join(_text(_field(row, source.answer_text), source.answer_text, "answer").split())
        matches = [candidate for candidate, option in zip(letters, options) if " ".join(option.split()) == answer]
        if letter and letter not in matches:
            option = options[letters.index(letter)]
            raise InvalidRow(source.answer_text, f"answer {answer!r} differs from option {letter}, {option!r}")
        if not letter and len(matches) != 1:
            raise InvalidRow(source.answer_text, f"answer {answer!r} matches {len(matches)} options, not 1")
        letter = letter or matches[0]
    return letter


def _question(row: Mapping, source: Source) -> str:
    question = _text(_field(row, source.question), source.question, "question").strip()
    if not source.context:
        return question
    passages = _field(row, source.context)
    labels = _field(row, source.context_labels) if source.context_labels else None
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
    if not 2 <= len(options) <= len(LETTERS):
        raise InvalidRow(source.options[0] if source.options else "options", f"{len(options)} options; need 2 to 10")
    label = _gold_letter(row, source, options)
    options = [" ".join(option.split()) for option in options]
    if source.id:
        source_id = _field(row, source.id)
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
    output["metadata"] = {path.rpartition(".")[2]: _field(row, path, required=False) for path in source.metadata}
    return output


def read_rows(source: Source, input_path: str | os.PathLike | None = None, split: str | None = None) -> list[tuple[str, dict]]:
    """(location, row) pairs: from the hub through `datasets`, or from a local .jsonl, .json or .parquet file.

    A location names the file and line (or row index) for error messages.
    """
    if input_path is None:
        import datasets

        split = split or source.default_split
        data = datasets.load_dataset(source.hub_path, source.hub_config, split=split)
        return [(f"{source.hub_path}[{split}] row {index}", row) for index, row in enumerate(data)]
    path = Path(input_path)
    if path.suffix == ".parquet":
        import datasets

        data = datasets.load_dataset("parquet", data_files=str(path), split="train")
        return [(f"{path} row {index}", row) for index, row in enumerate(data)]
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: --input takes a .jsonl, .json or .parquet file in the dataset's published format")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); the file is damaged") from None
        located = [(f"{path} item {index}", row) for index, row in enumerate(rows)]
    else:
        # JSON lines (MedMCQA's original release names them .json). Split on "\n" only: str.splitlines
        # would also split inside strings at U+2028 and other characters JSON leaves unescaped.
        located = []
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    located.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not valid JSON ({error.msg}); the file is damaged") from None
    for location, row in located:
        if not isinstance(row, dict):
            raise DataError(f"{location}: expected a JSON object per question, got {type(row).__name__}")
    return located


def _answer_index_base(rows: list[tuple[str, dict]], source: Source, input_path) -> tuple[int, str]:
    """MedMCQA's `cop` counts from 0 in the hub copy and from 1 in the original release; never guess."""
    seen = {value for _, row in rows if isinstance(value := row.get(source.answer_index), int)}
    if 0 in seen and len(source.options) in seen:
        raise DataError(
            f"{source.answer_index} takes both 0 and {len(source.options)}: the input mixes 0-based and 1-based "
            "rows; prepare each part separately with --cop-base 0 or --cop-base 1"
        )
    if 0 in seen:
        return 0, f"counted from 0: a {source.answer_index} of 0 appears (the hub copy's convention)"
    if len(source.options) in seen:
        return 1, f"counted from 1: a {source.answer_index} of {len(source.options)} appears (the original release's)"
    if input_path is None or Path(input_path).suffix == ".parquet":
        return 0, "counted from 0: the hub copy (published as parquet) counts from 0"
    raise DataError(
        f"{input_path}: cannot tell whether {source.answer_index} counts from 0 (the hub copy) or from 1 "
        f"(the original release): no row has {source.answer_index} 0 or {len(source.options)}. "
        "Pass --cop-base 0 or --cop-base 1"
    )


def _exclusion_index(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Normalized question -> the prepared file it appears in, for --exclude."""
    index: dict[str, str] = {}
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question = row["question"] if "prompt" in row else None
            except (json.JSONDecodeError, KeyError, TypeError):
                question = None
            if not isinstance(question, str):
                raise DataError(f"{path}:{number}: not a prepared row; --exclude takes files written by prepare.py")
            index.setdefault(normalize(question), str(path))
    return index


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and os.replace, so a crash leaves no half file.

    A plain open, not tempfile, so the file gets the umask's permissions rather than tempfile's 0600.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def summary_path(output: str | os.PathLike) -> Path:
    """Where `prepare` writes the summary of `output`: beside it, `NAME.summary.json`."""
    return Path(output).with_suffix(".summary.json")


def prepare(
    dataset: str,
    output: str | os.PathLike,
    input_path: str | os.PathLike | None = None,
    split: str | None = None,
    category: str | None = None,
    chat: bool = False,
    sft: bool = False,
    shuffle_seed: int | None = None,
    limit: int | None = None,
    exclude: Sequence[str | os.PathLike] = (),
    skip_invalid: bool = False,
    cop_base: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Format one dataset into an OpenRLHF prompt file; return the summary, also written beside it.

    Raises DataError, with the file, line or row and what to do, for a bad row (unless `skip_invalid`),
    a bad flag or an ambiguous input. Rows keep the source's order unless `shuffle_seed` is given.
    """
    from tqdm import tqdm

    if dataset not in SOURCES:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    source, output = SOURCES[dataset], Path(output)
    if output.suffix != ".jsonl":
        raise DataError(f"{output}: the output name must end in .jsonl (OpenRLHF picks its loader by extension)")
    if not overwrite and (output.exists() or summary_path(output).exists()):
        raise DataError(f"{output} or its summary exists; pass --overwrite to replace them, or choose another name")
    if input_path is not None and split is not None:
        raise DataError("--split selects a hub split; with --input the file is the split, so drop --split")
    if category is not None and source.category is None:
        raise DataError(f"--category applies to mmlu_pro only, not {dataset}")
    if cop_base is not None and dataset != "medmcqa":
        raise DataError(f"--cop-base applies to medmcqa only, not {dataset}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")

    rows = read_rows(source, input_path, split)
    hub_name = f"{source.hub_path}" + (f" {source.hub_config}" if source.hub_config else "")
    summary: dict = {
        "dataset": dataset,
        "input": str(input_path) if input_path else f"{hub_name}[{split or source.default_split}]",
        "output": str(output),
        "prompt_format": "chat" if chat else "base",
        "sft": sft,
        "rows_read": len(rows),
    }
    if category is not None:
        in_category = [(location, row) for location, row in rows if row.get(source.category) == category]
        if not in_category:
            found = sorted({str(row.get(source.category)) for _, row in rows})
            raise DataError(f"no row has {source.category} {category!r}; the input has: {', '.join(found)}")
        summary |= {"category": category, "rows_not_in_category": len(rows) - len(in_category)}
        rows = in_category
        source = dataclasses.replace(source, datasource=f"{source.datasource}_{category.replace(' ', '_')}")
    if source.answer_index and source.answer_index_base is None:
        if cop_base is not None:
            base, why = cop_base, f"counted from {cop_base}: --cop-base {cop_base}"
        else:
            base, why = _answer_index_base(rows, source, input_path)
        source = dataclasses.replace(source, answer_index_base=base)
        summary[f"{source.answer_index}_convention"] = why

    formatted, skipped = [], []
    for location, row in tqdm(rows, desc=f"formatting {dataset}", unit=" rows", disable=None):
        try:
            formatted.append((location, format_row(row, source, chat=chat, sft=sft)))
        except InvalidRow as error:
            if not skip_invalid:
                raise DataError(
                    f"{location}: {error}. Fix the row, or pass --skip-invalid to drop such rows (each is reported)"
                ) from None
            skipped.append({"location": location, "field": error.field, "reason": error.reason})

    first_seen: dict[str, str] = {}
    duplicates = []
    for location, out in formatted:
        key = normalize("\0".join([out["question"], *out["options"]]))  # one call per row: NFKC is slow
        if key in first_seen:
            duplicates.append({"location": location, "same_as": first_seen[key], "id": out["id"]})
        first_seen.setdefault(key, location)

    excluded_by_file: Counter = Counter()
    kept = []
    if exclude:
        seen_in = _exclusion_index(exclude)
        for location, out in formatted:
            found_in = seen_in.get(normalize(out["question"]))
            if found_in is None:
                kept.append(out)
            else:
                excluded_by_file[found_in] += 1
    else:
        kept = [out for _, out in formatted]

    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(kept)
    cut = kept[limit:] if limit is not None else []
    kept = kept[: len(kept) - len(cut)]
    if not kept:
        raise DataError(
            f"no rows left to write: {len(rows)} read, {len(skipped)} skipped, {sum(excluded_by_file.values())} excluded"
        )

    summary |= {
        "rows_skipped": len(skipped),
        "skipped": skipped,
        "rows_excluded": sum(excluded_by_file.values()),
        "excluded_by_file": {str(path): excluded_by_file[str(path)] for path in exclude},
        "duplicates": len(duplicates),
        "duplicate_rows": duplicates,
        "shuffle_seed": shuffle_seed,
        "rows_cut_by_limit": len(cut),
        "rows_written": len(kept),
        "label_distribution": dict(sorted(Counter(out["label"] for out in kept).items())),
        "option_count_distribution": {
            str(count): number for count, number in sorted(Counter(len(out["options"]) for out in kept).items())
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, "".join(json.dumps(out, ensure_ascii=False) + "\n" for out in kept))
    write_atomically(summary_path(output), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
