"""Strict readers of the inputs: dataset rows (hub, JSON, JSON lines, gzip, parquet, CSV), --exclude and --ids files.

Nothing is silently wrong: an encoding, a layout or a repeated JSON key the reader cannot take exactly
stops the run with the file, the line and what to do.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import json.decoder
import json.scanner
import os
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from med_rlvr_plugin.data.formatting import DataError, normalize
from med_rlvr_plugin.data.sources import Source
from med_rlvr_plugin.files import read_jsonl


class DuplicateKey(ValueError):
    """A JSON object names one key twice; `position` is where the object starts, once known."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key, self.position = key, None


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


_CSV_NAME = re.compile(r"(?P<subject>.+)_(?:test|val|dev)\.csv", re.IGNORECASE)


def _read_csv_release(path: Path, source: Source) -> list[tuple[str, dict]]:
    """A CSV release's rows in the hub layout (`Source.csv_release`): one SUBJECT_SPLIT.csv file, or a folder
    of them, of which the source's subsets are read. Every record must have the question, four options and
    an answer letter A-D; anything else stops the run with the file and line."""
    files = [path]
    if path.is_dir():
        named = [
            (match["subject"], file)
            for file in sorted(path.glob("*.csv"))
            if (match := _CSV_NAME.fullmatch(file.name))
        ]
        files = [file for subject in source.subsets for name, file in named if name == subject]
        counts = {subject: sum(name == subject for name, _ in named) for subject in source.subsets}
        if any(count != 1 for count in counts.values()):
            found = ", ".join(f"{subject} {count}" for subject, count in counts.items())
            raise DataError(
                f"{path}: expected one SUBJECT_SPLIT.csv file for each subject, found {found}; give the folder "
                "of one split of the CSV release (e.g. data/test), or one file"
            )
    located = []
    for file in files:
        match = _CSV_NAME.fullmatch(file.name)
        if not match:
            raise DataError(f"{file}: a CSV file of the release is named SUBJECT_test.csv (or _val, _dev)")
        try:
            with open(file, encoding="utf-8-sig", newline="") as text:
                records = csv.reader(text)
                start = 1
                for record in records:
                    where, start = f"{file}:{start}", records.line_num + 1
                    if len(record) != 6:
                        raise DataError(
                            f"{where}: {len(record)} columns; the release has 6: question, four options, answer letter"
                        )
                    if record[5].strip() not in ("A", "B", "C", "D"):
                        raise DataError(f"{where}: answer {record[5]!r} (the last column) is not A, B, C or D")
                    row = {"question": record[0], "choices": record[1:5], "answer": "ABCD".index(record[5].strip())}
                    located.append((where, row | {"subject": match["subject"]}))
        except UnicodeDecodeError:
            raise _not_utf8(file) from None
        except csv.Error as error:
            raise DataError(f"{file}:{records.line_num}: not readable CSV ({error}); the file is damaged") from None
    return located


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
    """(location, row) pairs: from the hub through `datasets` (each of `source.subsets` in turn), or from a
    local .jsonl, .json or .parquet file (names compared in any case; .jsonl and .json may be gzip-compressed,
    .gz), or a CSV release's file or folder (`source.csv_release`).

    A location names the file and line (or row index, or entry key) for error messages.
    """
    if input_path is None:
        import datasets

        split = split or source.default_split
        if not Path(source.hub_path).is_dir():
            _check_hub_reachable()
        located = []
        for subset in source.subsets or (None,):  # one config after another, or the source's one config
            data = datasets.load_dataset(source.hub_path, subset or source.hub_config, split=split)
            name = source.hub_path + (f"/{subset}" if subset else "")
            located += [(f"{name}[{split}] row {index}", row) for index, row in enumerate(data)]
        return located
    path = Path(input_path)
    name = path.name.lower()
    if source.csv_release and (path.is_dir() or name.endswith(".csv")):
        return _read_csv_release(path, source)
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
        csv_release = (
            ", or the CSV release (a SUBJECT_test.csv file, or the folder of them)" if source.csv_release else ""
        )
        raise DataError(
            f"{path}: --input takes a .jsonl, .json (either may end in .gz) or .parquet file in the dataset's "
            f"published format{csv_release}"
        )
    located = _read_json(path, source)
    for location, row in located:
        if not isinstance(row, dict):
            raise DataError(f"{location}: expected a JSON object per question, got {type(row).__name__}")
    return located


def exclusion_index(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Normalized question -> the prepared file it appears in, for --exclude (a .jsonl, or a --verl .parquet)."""
    index: dict[str, str] = {}
    takes = "--exclude takes files written by prepare.py"
    for path in paths:
        if str(path).lower().endswith(".parquet"):
            import pyarrow
            import pyarrow.parquet

            try:
                infos = pyarrow.parquet.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
            except (pyarrow.ArrowException, KeyError):  # not parquet, or no extra_info column
                infos = [None]
            located = [(f"{path} row {number}", (info or {}).get("question")) for number, info in enumerate(infos)]
        else:
            # The path as given (not a Path) keeps the locations in messages as the user wrote them.
            located = (
                (location, row.get("question") if isinstance(row, dict) and "prompt" in row else None)
                for location, row in read_jsonl(path, fix=takes)
            )
        for location, question in located:  # question: None in a row that is no prepared row
            if not isinstance(question, str):
                raise DataError(f"{location}: not a prepared row; {takes}")
            index.setdefault(normalize(question), str(path))
    return index


def read_ids(path: Path) -> dict[str, str | None]:
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
