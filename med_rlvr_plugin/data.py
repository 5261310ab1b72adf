"""MedQA, MMLU-Pro, MedMCQA and PubMedQA rows into OpenRLHF prompt files.

As in lm-evaluation-harness, what differs per dataset is data: a `Source` says which field holds the
question, the options and the answer. `format_row` is a pure function from one source row to one output
row and validates it; `prepare` reads a whole dataset (hub or local file), formats it, reports what it
skipped, excluded or found twice, optionally carves a dev split out of it, and writes the prompt files and
their summaries together: all of them or none.

Nothing is silently wrong: an input the formatter cannot read exactly (an encoding, a layout, a repeated
JSON key, an answer convention it would have to guess) stops the run with the file, the line and what to do.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import json
import json.decoder
import json.scanner
import os
import random
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.defaults import DEV_SIZE
from med_rlvr_plugin.files import check_writable, remove_stale_temporaries, write_together
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
    explanation: str | None = None  # free text that may state the answer: evidence for the index convention
    context: str | None = None  # passages shown before the question (PubMedQA's abstract)
    context_labels: str | None = None
    id: str | None = None  # without one, a row's id is a hash of its question and options
    metadata: tuple[str, ...] = ()
    category: str | None = None  # the field `--category` selects on
    # A release published as one JSON object keyed by id (PubMedQA's ori_pqal.json): its (field, path in
    # the hub layout) pairs. Such rows are rebuilt in the hub layout, the key becoming `id`.
    keyed_release: tuple[tuple[str, str], ...] = ()


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
        explanation="exp",
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
        keyed_release=(
            ("QUESTION", "question"),
            ("CONTEXTS", "context.contexts"),
            ("LABELS", "context.labels"),
            ("MESHES", "context.meshes"),
            ("final_decision", "final_decision"),
            ("LONG_ANSWER", "long_answer"),
        ),
    ),
}

# Rows that must show an index convention before it is taken from the file: one corrupt row must not
# decide a whole file. A real file of thousands of rows has hundreds; a small one may need --cop-base.
MIN_CONVENTION_EVIDENCE = 3


class DataError(ToolError):
    """Input the formatter cannot use; the message says where and what to do."""


class InvalidRow(DataError):
    """One source row fails validation: which field, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field, self.reason = field, reason


class DuplicateKey(ValueError):
    """A JSON object names one key twice; `position` is where the object starts, once known."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key, self.position = key, None


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


# MedMCQA explanations often open by stating the answer: "Ans. is 'a' i.e., Ureter", "Ans: (c)", "Answer- B.".
# The letter must be set off by quotes, brackets or punctuation, so "Ans is a rare ..." states nothing.
STATED_ANSWER = re.compile(
    r"\s*(?:the\s+)?(?:correct\s+)?ans(?:wer)?\b[\s.:\-\u2013\u2014]*(?:is\b[\s:\-\u2013\u2014]*)?"
    r"[(\['\"\u2018\u2019\u201c\u201d]?\s*([a-j])\s*(?=[)\]'\"\u2018\u2019\u201c\u201d.:,;\-\u2013\u2014]|i\.?e\b|$)",
    re.IGNORECASE,
)


def stated_letter(explanation: object) -> str | None:
    """The answer letter an explanation opens by stating (upper case), or None when it states none."""
    match = STATED_ANSWER.match(explanation) if isinstance(explanation, str) else None
    return match[1].upper() if match else None


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


def _examples(items: Sequence[str], count: int = 3) -> str:
    """The first few of a list of locations, for a one-line message."""
    return ", ".join(items[:count]) + (f" and {len(items) - count} more" if len(items) > count else "")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing a repeated key: json.loads would keep the last value silently."""
    row = dict(pairs)
    if len(row) < len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return row


DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _duplicate_key_message(location: str, error: DuplicateKey) -> str:
    return (
        f"{location}: key {error.key!r} appears twice in one object; a JSON reader keeps only the last value, "
        "so the other would be lost silently. Fix the file"
    )


def _duplicate_key_line(document: str) -> int:
    """The line where the object with a repeated key starts. Error path only: the pure-Python decoder, which
    is slow but knows where each object starts, parses the document again."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)

    def parse_object(string_and_start, *args):
        try:
            return json.decoder.JSONObject(string_and_start, *args)
        except DuplicateKey as error:
            if error.position is None:  # the innermost object, the first to see it
                error.position = string_and_start[1] - 1
            raise

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        decoder.decode(document)
    except DuplicateKey as error:
        return document.count("\n", 0, error.position) + 1
    raise AssertionError("the fast decoder found a repeated key the slow one does not")


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when it is gzip (known by its first two bytes, whatever its name)."""
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path) if compressed else open(path, "rb")


BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _open_text(path: Path) -> io.TextIOWrapper:
    """The file as UTF-8 text iterated on "\\n" only, or a DataError saying what it is instead. Splitting on
    "\\n" only matters: str.splitlines would also split inside JSON strings at U+2028 and other characters
    JSON leaves unescaped."""
    binary = _open_binary(path)
    try:
        head = binary.peek(4)[:4]
        encoding = next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), None)
        if encoding or b"\0" in head:
            found = f"{encoding} text" if encoding else "NUL bytes (UTF-16 or UTF-32 text without a byte-order mark?)"
            raise DataError(
                f"{path}: {found}; JSON input must be UTF-8: convert it, e.g. "
                f"iconv -f {encoding or 'UTF-16LE'} -t UTF-8 {path} > converted.jsonl"
            )
    except BaseException:
        binary.close()
        raise
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="\n")


def _not_utf8(path: Path) -> DataError:
    """Where a file stops being UTF-8 (error path only: the lines are read again as bytes)."""
    with _open_binary(path) as binary:
        for number, line in enumerate(binary, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return DataError(
                    f"{path}:{number}: not UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1}); "
                    f"convert the file, e.g. iconv -f LATIN1 -t UTF-8 {path} > converted.jsonl if it is Latin-1"
                )
    return DataError(f"{path}: not UTF-8; convert the file to UTF-8")


def _from_document(value: object, path: Path, source: Source) -> list[tuple[str, dict]]:
    """The rows of a file holding one JSON value: an array of questions, one question, or (a release such
    as PubMedQA's ori_pqal.json) an object of questions keyed by id."""
    if isinstance(value, list):
        return [(f"{path} item {index}", row) for index, row in enumerate(value)]
    expected = "JSON lines (one question object per line) or a JSON array of question objects"
    if source.keyed_release:
        fields = ", ".join(field for field, _ in source.keyed_release)
        expected += f", or an object keyed by id whose entries have {fields} (the original release)"
    if isinstance(value, dict) and source.question.partition(".")[0] in value:
        return [(str(path), value)]
    if isinstance(value, dict) and value and all(isinstance(entry, dict) for entry in value.values()):
        first_key, first = next(iter(value.items()))
        if source.keyed_release and source.keyed_release[0][0] in first:
            return [(f"{path} entry {key}", _rebuild(key, entry, source)) for key, entry in value.items()]
        found = (
            f"an object of {len(value)} objects keyed by id (the first, {first_key!r}, has {', '.join(sorted(first))})"
        )
    elif isinstance(value, dict):
        found = f"one object with keys {', '.join(sorted(value))}, not a question (no {source.question!r})"
    else:
        found = f"a single {type(value).__name__}"
    raise DataError(f"{path}: valid JSON of an unknown layout: {found}; expected {expected}")


def _rebuild(key: str, entry: dict, source: Source) -> dict:
    """One entry of a keyed release in the hub layout, so both releases format identically."""
    row: dict = {source.id: key}
    for field, path in source.keyed_release:
        if field in entry:
            *parents, last = path.split(".")
            node = row
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = entry[field]
    return row


def _read_json(path: Path, source: Source) -> list[tuple[str, dict]]:
    """JSON lines, or one JSON document over any number of lines: JSON lines when the first non-blank line
    is a whole object. Lines are decoded one at a time, so the whole text is never held at once."""
    try:
        with _open_text(path) as text:
            lines = enumerate(text, 1)
            start, line = next(((number, line) for number, line in lines if line.strip()), (1, ""))
            try:
                first = DECODER.decode(line) if line else None
            except json.JSONDecodeError:
                first = None  # not a whole value: the first line of a document over many lines
            except DuplicateKey as error:
                raise DataError(_duplicate_key_message(f"{path}:{start}", error)) from None
            if isinstance(first, dict):
                located = [(f"{path}:{start}", first)]
                for number, line in lines:
                    if not line.strip():
                        continue
                    try:
                        located.append((f"{path}:{number}", DECODER.decode(line)))
                    except json.JSONDecodeError as error:
                        raise DataError(
                            f"{path}:{number}: not valid JSON ({error.msg}); the file is damaged"
                        ) from None
                    except DuplicateKey as error:
                        raise DataError(_duplicate_key_message(f"{path}:{number}", error)) from None
            else:
                document = line + text.read()
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: damaged gzip file ({error}); download or compress it again") from None
    if isinstance(first, dict):
        if len(located) > 1 or source.question.partition(".")[0] in first:
            return located
        return _from_document(first, path, source)  # one line, not a question: a keyed release, or unknown
    if not document.strip():
        return []
    try:
        value = DECODER.decode(document)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}:{error.lineno + start - 1}: not valid JSON ({error.msg}); the file is damaged"
        ) from None
    except DuplicateKey as error:
        line = _duplicate_key_line(document) + start - 1
        raise DataError(_duplicate_key_message(f"{path}:{line}", error)) from None
    return _from_document(value, path, source)


def _check_hub_reachable() -> None:
    """Fail at once when the hub cannot be reached: huggingface_hub retries a failed connection five times
    with backoff (about 25 s) before the same conclusion. One request through its own client, so proxies
    and HF_ENDPOINT apply. In offline mode `datasets` reads its cache and says itself what is missing."""
    import httpx
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except httpx.TransportError as error:
        raise DataError(
            f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({error}): check the network or proxy; "
            "without network, pass --input with a downloaded copy, or set HF_HUB_OFFLINE=1 to use datasets' cache"
        ) from None


def read_rows(
    source: Source, input_path: str | os.PathLike | None = None, split: str | None = None
) -> list[tuple[str, dict]]:
    """(location, row) pairs: from the hub through `datasets`, or from a local .jsonl, .json or .parquet file
    (names compared in any case; .jsonl and .json may be gzip-compressed, .gz).

    A location names the file and line (or row index, or entry key) for error messages.
    """
    if input_path is None:
        import datasets

        split = split or source.default_split
        if not Path(source.hub_path).is_dir():
            _check_hub_reachable()
        data = datasets.load_dataset(source.hub_path, source.hub_config, split=split)
        return [(f"{source.hub_path}[{split}] row {index}", row) for index, row in enumerate(data)]
    path = Path(input_path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow
        import pyarrow.parquet

        try:
            rows = pyarrow.parquet.read_table(path).to_pylist()
        except pyarrow.ArrowException as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(f"{path}: not a readable parquet file ({first_line}); download it again") from None
        return [(f"{path} row {index}", row) for index, row in enumerate(rows)]
    if not name.removesuffix(".gz").endswith((".jsonl", ".json")):
        raise DataError(
            f"{path}: --input takes a .jsonl, .json (either may end in .gz) or .parquet file in the dataset's "
            "published format"
        )
    located = _read_json(path, source)
    for location, row in located:
        if not isinstance(row, dict):
            raise DataError(f"{location}: expected a JSON object per question, got {type(row).__name__}")
    return located


def _answer_index_base(
    rows: list[tuple[str, dict]], source: Source, cop_base: int | None, where: str, from_hub: bool
) -> tuple[int, dict]:
    """Where MedMCQA's `cop` counts from: 0 in the hub copy, 1 in the original release. Never guessed.

    Evidence is a row only one convention can read (cop 0: from 0; cop 4: from 1) and a row whose
    explanation states the letter that one convention gives. Without --cop-base, the convention is the one
    the evidence points to, shown by at least MIN_CONVENTION_EVIDENCE rows. The convention used (inferred,
    --cop-base, or the hub copy's own) must not be contradicted: a row it cannot read, or explanations
    siding as often with the other, stops the run, because the rows it would mislabel are a whole release
    or corrupt, and skipping rows cannot fix that. Single explanations that disagree are reported: some of
    MedMCQA's explanations are wrong.
    """
    field, count = source.answer_index, len(source.options)
    only = {0: [], 1: []}  # rows only this convention can read
    agree = {0: [], 1: []}  # rows whose explanation names the letter this convention gives
    stated = []
    for location, row in rows:
        value = row.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if value in (0, count):
            only[int(value == count)].append(location)
        letter = stated_letter(row.get(source.explanation)) if source.explanation else None
        if letter:
            stated.append((location, value, letter))
            for base in (0, 1):
                if 0 <= value - base < count and LETTERS[value - base] == letter:
                    agree[base].append(location)
    support = {base: list(dict.fromkeys(only[base] + agree[base])) for base in (0, 1)}  # rows, each once
    evidence = "; ".join(
        f"counting from {base}: {field} {0 if base == 0 else count} in {len(only[base])} rows"
        + (f" ({_examples(only[base])})" if only[base] else "")
        + f", explanations agree in {len(agree[base])}"
        + (f" ({_examples(agree[base])})" if agree[base] else "")
        for base in (0, 1)
    )
    if cop_base is not None:
        base, why = cop_base, f"--cop-base {cop_base}"
    elif from_hub:
        base, why = 0, "the hub copy's documented convention (from 0)"
    else:
        base, why = max((0, 1), key=lambda side: len(support[side])), "the evidence"
    other = 1 - base
    if only[other] or (agree[other] and len(agree[other]) >= len(agree[base])):
        opening = (
            f"{where}: the rows disagree on whether {field} counts from 0 or from 1; the file mixes 0-based and "
            "1-based rows, or some are corrupt"
            if why == "the evidence"
            else f"{why} contradicts {where}"
        )
        advice = (
            f"The rows show counting from {other}: pass --cop-base {other}, or no --cop-base"
            if cop_base is not None and not support[base]
            else "Fix or remove the rows that do not fit, or prepare each release separately; skipping rows or "
            "a flag cannot fix this, as the rows read the other way would get wrong letters"
        )
        raise DataError(f"{opening} ({evidence}). {advice}")
    if why == "the evidence" and len(support[base]) < MIN_CONVENTION_EVIDENCE:
        raise DataError(
            f"{where}: cannot tell whether {field} counts from 0 (the hub copy) or from 1 (the original release) "
            f"({evidence}); at least {MIN_CONVENTION_EVIDENCE} rows must show it, so that one corrupt row cannot "
            "decide the file. Pass --cop-base 0 or --cop-base 1"
        )
    disagreements = [
        {"location": location, "label": LETTERS[value - base], "explanation_says": letter}
        for location, value, letter in stated
        if 0 <= value - base < count and LETTERS[value - base] != letter
    ]
    report = {
        f"{field}_convention": f"counted from {base}: {why} ({evidence})",
        f"{field}_evidence": {
            f"from_{side}": {
                "rows": len(support[side]),
                f"{field}_only_readable": len(only[side]),
                "explanations_agree": len(agree[side]),
            }
            for side in (0, 1)
        },
        f"{field}_explanation_disagreements": len(disagreements),
        f"{field}_explanation_disagreement_rows": disagreements,
    }
    return base, report


def _exclusion_index(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Normalized question -> the prepared file it appears in, for --exclude (a .jsonl, or a --verl .parquet)."""
    index: dict[str, str] = {}
    for path in paths:
        located = []  # (where, the row's question, or None when it is no prepared row)
        if str(path).lower().endswith(".parquet"):
            import pyarrow
            import pyarrow.parquet

            try:
                infos = pyarrow.parquet.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
            except (pyarrow.ArrowException, KeyError):  # not parquet, or no extra_info column
                infos = [None]
            located = [(f"{path} row {number}", (info or {}).get("question")) for number, info in enumerate(infos)]
        else:
            with open(path, encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        located.append((f"{path}:{number}", row["question"] if "prompt" in row else None))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        located.append((f"{path}:{number}", None))
        for location, question in located:
            if not isinstance(question, str):
                raise DataError(f"{location}: not a prepared row; --exclude takes files written by prepare.py")
            index.setdefault(normalize(question), str(path))
    return index


def _read_ids(path: Path) -> dict[str, str | None]:
    """Ids from a JSON object (keys; string values are the expected answers, as in PubMedQA's
    test_ground_truth.json) or a JSON array."""
    try:
        with _open_text(path) as text:
            value = DECODER.decode(text.read())
    except (ValueError, EOFError, gzip.BadGzipFile, zlib.error) as error:  # JSON, repeated key, encoding, gzip
        raise DataError(
            f"{path}: --ids takes a UTF-8 JSON object keyed by id or JSON array of ids ({error})"
        ) from None
    if isinstance(value, dict):
        return {str(key): answer if isinstance(answer, str) else None for key, answer in value.items()}
    if isinstance(value, list):
        return {str(key): None for key in value}
    raise DataError(
        f"{path}: --ids takes a JSON object keyed by id or a JSON array of ids, not a {type(value).__name__}"
    )


def summary_path(output: str | os.PathLike) -> Path:
    """Where `prepare` writes the summary of `output`: beside it, `NAME.summary.json`."""
    return Path(output).with_suffix(".summary.json")


def _same_file(a: Path, b: Path) -> bool:
    """The same file, through symlinks and hard links; a path that does not exist yet by its resolved name."""
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


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
    ids: str | os.PathLike | None = None,
    dev_output: str | os.PathLike | None = None,
    dev_size: int = DEV_SIZE,
    dev_seed: int = 0,
    verl: bool = False,
) -> dict:
    """Format one dataset into an OpenRLHF prompt file, or with `verl` into verl's RL parquet layout (chat
    prompts, `verl_row`); return the summary, also written beside it.

    Raises DataError, with the file, line or row and what to do, for a bad row (unless `skip_invalid`),
    a bad flag or an ambiguous input. Rows keep the source's order unless `shuffle_seed` is given.
    The order of the steps: --category and --ids select rows, rows are formatted, --exclude drops
    questions of other files, `dev_output` takes `dev_size` questions (a `dev_seed`ed sample, in source
    order) with every copy of them, then --shuffle and --limit apply to what is left for `output`.
    """
    from tqdm import tqdm

    if dataset not in SOURCES:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    source, output = SOURCES[dataset], Path(output)
    dev_output = Path(dev_output) if dev_output is not None else None
    targets = [output, summary_path(output)] + ([dev_output, summary_path(dev_output)] if dev_output else [])
    suffix, why = (".parquet", "verl reads parquet") if verl else (".jsonl", "OpenRLHF picks its loader by extension")
    for path, flag in ((output, "--output"), (dev_output, "--dev-output")):
        if path is not None and path.suffix != suffix:
            raise DataError(f"{path}: the {flag} name must end in {suffix} ({why})")
    if verl and sft:
        raise DataError("--verl writes verl's RL layout, which has no SFT target: drop --sft or --verl")
    chat = chat or verl  # verl's layout holds the prompt as messages
    if input_path is not None and split is not None:
        raise DataError("--split selects a hub split; with --input the file is the split, so drop --split")
    if category is not None and source.category is None:
        raise DataError(f"--category applies to mmlu_pro only, not {dataset}")
    if cop_base is not None and dataset != "medmcqa":
        raise DataError(f"--cop-base applies to medmcqa only, not {dataset}")
    if ids is not None and source.id is None:
        raise DataError(f"--ids selects rows by id, and {dataset} rows have no id field")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    if dev_output is not None and dev_size < 1:
        raise DataError(f"--dev-size must be at least 1, got {dev_size}")
    read = [
        (Path(path), role) for path, role in ((input_path, "the input"), (ids, "the --ids file")) if path is not None
    ]
    read += [(Path(path), "an --exclude file") for path in exclude]
    names = ["--output", "--output's summary", "--dev-output", "--dev-output's summary"]
    for index, (path, name) in enumerate(zip(targets, names, strict=False)):
        for other, role in read + [
            (other, f"the {earlier}") for other, earlier in zip(targets[:index], names, strict=False)
        ]:
            if _same_file(path, other):
                raise DataError(f"{name} is {role} ({path}): writing it would replace a file this run reads or writes")
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise DataError(f"{_examples(existing)}: already there; pass --overwrite to replace, or choose another name")
    stale = []
    for path in targets:
        check_writable(path)
        stale += remove_stale_temporaries(path)

    rows = read_rows(source, input_path, split)
    hub_name = f"{source.hub_path}" + (f" {source.hub_config}" if source.hub_config else "")
    where = str(input_path) if input_path else f"{hub_name}[{split or source.default_split}]"
    summary: dict = {
        "dataset": dataset,
        "input": where,
        "output": str(output),
        "prompt_format": "chat" if chat else "base",
        "layout": "verl" if verl else "openrlhf",
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
    expected_answers: dict[str, str | None] = {}
    if ids is not None:
        expected_answers = _read_ids(Path(ids))
        selected = [
            (location, row) for location, row in rows if str(_field(row, source.id, False)) in expected_answers
        ]
        missing = sorted(set(expected_answers) - {str(_field(row, source.id)) for _, row in selected})
        if missing:
            raise DataError(
                f"{ids} lists ids the input does not have ({len(missing)}): {_examples(missing)}; "
                "is it the file of this dataset and split?"
            )
        summary |= {"ids_file": str(ids), "rows_not_in_ids": len(rows) - len(selected)}
        rows = selected
    if source.answer_index and source.answer_index_base is None:
        base, report = _answer_index_base(rows, source, cop_base, where, from_hub=input_path is None)
        source = dataclasses.replace(source, answer_index_base=base)
        summary |= report

    formatted, skipped = [], []
    for index, (location, row) in enumerate(tqdm(rows, desc=f"formatting {dataset}", unit=" rows", disable=None)):
        rows[index] = None  # each source row is freed once formatted: keeping both doubled peak memory
        try:
            out = format_row(row, source, chat=chat, sft=sft)
        except InvalidRow as error:
            if not skip_invalid:
                raise DataError(
                    f"{location}: {error}. Fix the row, or pass --skip-invalid to drop such rows (each is reported)"
                ) from None
            skipped.append({"location": location, "field": error.field, "reason": error.reason})
            continue
        # One normalization per row (NFKC is slow) serves duplicates, identical options, --exclude and dev.
        key = normalize("\0".join([out["question"], *out["options"]]))
        formatted.append((location, out, key))

    first_seen: dict[str, str] = {}
    duplicates, identical = [], []
    for location, out, key in formatted:
        if key in first_seen:
            duplicates.append({"location": location, "same_as": first_seen[key], "id": out["id"]})
        first_seen.setdefault(key, location)
        texts = [text.strip() for text in key.split("\0")[1:]]
        if len(set(texts)) < len(texts):
            twins = [letter for letter, text in zip(LETTERS, texts, strict=False) if texts.count(text) > 1]
            identical.append({"location": location, "options": twins})
    del first_seen
    if expected_answers:
        wrong = [
            f"{ids} says id {out['id']} is {expected!r}, but {location} answers {answer!r}"
            for location, out, _ in formatted
            if (expected := expected_answers.get(out["id"])) is not None
            and normalize(expected) != normalize(answer := out["options"][LETTERS.index(out["label"])])
        ]
        if wrong:
            raise DataError(f"{len(wrong)} rows disagree with --ids answers: {_examples(wrong)}")

    excluded_by_file: Counter = Counter()
    if exclude:
        seen_in = _exclusion_index(exclude)
        kept = []
        for location, out, key in formatted:
            found_in = seen_in.get(key.split("\0")[0].strip())
            if found_in is None:
                kept.append((out, key))
            else:
                excluded_by_file[found_in] += 1
    else:
        kept = [(out, key) for _, out, key in formatted]
    del formatted

    dev: list[dict] = []
    copies_of_dev = 0
    if dev_output is not None:
        questions = list(dict.fromkeys(key.split("\0")[0].strip() for _, key in kept))
        if dev_size >= len(questions):
            raise DataError(
                f"--dev-size {dev_size} leaves no training rows: {len(questions)} questions remain after --exclude"
            )
        chosen = set(random.Random(dev_seed).sample(questions, dev_size))
        train, taken = [], set()
        for out, key in kept:
            question = key.split("\0")[0].strip()
            if question not in chosen:
                train.append(out)
            elif question in taken:
                copies_of_dev += 1  # the dev file holds each question once; its copies leave train too
            else:
                taken.add(question)
                dev.append(out)
        kept = train
    else:
        kept = [out for out, _ in kept]

    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(kept)
    cut = kept[limit:] if limit is not None else []
    kept = kept[: len(kept) - len(cut)]
    if not kept:
        first: dict[str, dict] = {}  # per field, the first row that failed on it
        for row in skipped:
            first.setdefault(row["field"], row)
        reasons = "; ".join(
            f"{count} row{'s' * (count > 1)}: field {field!r}, e.g. {first[field]['location']}: {first[field]['reason']}"
            for field, count in Counter(row["field"] for row in skipped).most_common()
        )
        raise DataError(
            f"no rows left to write: {summary['rows_read']} read, {len(skipped)} skipped, "
            f"{sum(excluded_by_file.values())} excluded" + (f" (skipped {reasons})" if skipped else "")
        )

    def distributions(rows: list[dict]) -> dict:
        return {
            "rows_written": len(rows),
            "label_distribution": dict(sorted(Counter(out["label"] for out in rows).items())),
            "option_count_distribution": {
                str(count): number for count, number in sorted(Counter(len(out["options"]) for out in rows).items())
            },
        }

    summary |= {
        "rows_skipped": len(skipped),
        "skipped_by_field": dict(Counter(row["field"] for row in skipped).most_common()),
        "skipped": skipped,
        "rows_excluded": sum(excluded_by_file.values()),
        "excluded_by_file": {str(path): excluded_by_file[str(path)] for path in exclude},
        "duplicates": len(duplicates),
        "duplicate_rows": duplicates,
        "identical_options": len(identical),
        "identical_option_rows": identical,
    }

    def encode(rows: list[dict]) -> Iterable[str] | bytes:
        """A prepared file's content: JSON lines, or verl's parquet."""
        if not verl:
            return (json.dumps(out, ensure_ascii=False) + "\n" for out in rows)
        import pyarrow
        import pyarrow.parquet

        buffer = io.BytesIO()
        pyarrow.parquet.write_table(
            pyarrow.Table.from_pylist([verl_row(out, index) for index, out in enumerate(rows)]), buffer
        )
        return buffer.getvalue()

    files = {output: encode(kept)}
    if dev_output is not None:
        summary |= {
            "dev_output": str(dev_output),
            "dev_seed": dev_seed,
            "rows_moved_to_dev": len(dev),
            "rows_dropped_as_copies_of_dev_questions": copies_of_dev,
        }
        shared = ("dataset", "input", "prompt_format", "layout", "sft", "category", "ids_file")
        dev_summary = {key: summary[key] for key in shared if key in summary}
        dev_summary |= {
            "output": str(dev_output),
            "train_output": str(output),
            "dev_seed": dev_seed,
            "dev_size": dev_size,
            "disjoint_from": [str(output), *map(str, exclude)],
            **distributions(dev),
        }
        files[dev_output] = encode(dev)
        files[summary_path(dev_output)] = [json.dumps(dev_summary, indent=2, ensure_ascii=False) + "\n"]
    summary |= {"shuffle_seed": shuffle_seed, "rows_cut_by_limit": len(cut), **distributions(kept)}
    summary["stale_temporaries_removed"] = stale
    files[summary_path(output)] = [json.dumps(summary, indent=2, ensure_ascii=False) + "\n"]
    write_together(files)
    return summary
