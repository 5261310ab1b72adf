"""The prepare pipeline: a whole dataset into a prompt file (and a dev file) with summaries, written together.

`prepare` checks its options (`PrepareOptions`) and outputs, reads a dataset (hub or local file) and
selects rows, formats them, reports what it skipped, excluded or found twice, optionally carves a dev split
out of them, and writes the prompt files and their summaries together: all of them or none. Each step is
a function of its own below, in the order `prepare` runs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from med_rlvr_plugin.data.formatting import (
    DataError,
    InvalidRow,
    examples,
    field_value,
    format_row,
    normalize,
    verl_row,
)
from med_rlvr_plugin.data.medmcqa import answer_index_convention
from med_rlvr_plugin.data.readers import exclusion_index, read_ids, read_rows
from med_rlvr_plugin.data.sources import SOURCES, Source
from med_rlvr_plugin.defaults import DEV_SIZE
from med_rlvr_plugin.files import check_writable, remove_stale_temporaries, write_together
from med_rlvr_plugin.prompts import LETTERS


@dataclass(frozen=True)
class PrepareOptions:
    """Every option of `prepare`, the flags of data_prep/prepare.py by their library names.

    Checked when made: a flag that does not apply to the dataset, a bad value or a flag combination is a
    DataError before any file is read. `output` and `dev_output` become Paths and `exclude` a tuple; `chat`
    is set by `verl`. The other paths stay as given: summaries and messages show them so.
    """

    dataset: str
    output: Path
    input_path: str | os.PathLike | None = None
    split: str | None = None
    category: str | None = None
    chat: bool = False
    sft: bool = False
    shuffle_seed: int | None = None
    limit: int | None = None
    exclude: Sequence[str | os.PathLike] = ()
    skip_invalid: bool = False
    cop_base: int | None = None
    overwrite: bool = False
    ids: str | os.PathLike | None = None
    dev_output: Path | None = None
    dev_size: int = DEV_SIZE
    dev_seed: int = 0
    verl: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in SOURCES:
            raise DataError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(SOURCES)}")
        source = SOURCES[self.dataset]
        # Frozen: the normalised values are set once, here.
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "dev_output", Path(self.dev_output) if self.dev_output is not None else None)
        object.__setattr__(self, "exclude", tuple(self.exclude))
        suffix, why = (
            (".parquet", "verl reads parquet") if self.verl else (".jsonl", "OpenRLHF picks its loader by extension")
        )
        for path, flag in ((self.output, "--output"), (self.dev_output, "--dev-output")):
            if path is not None and path.suffix != suffix:
                raise DataError(f"{path}: the {flag} name must end in {suffix} ({why})")
        if self.verl and self.sft:
            raise DataError("--verl writes verl's RL layout, which has no SFT target: drop --sft or --verl")
        object.__setattr__(self, "chat", self.chat or self.verl)  # verl's layout holds the prompt as messages
        if self.input_path is not None and self.split is not None:
            raise DataError("--split selects a hub split; with --input the file is the split, so drop --split")
        if self.category is not None and source.category is None:
            having = " and ".join(name for name, other in SOURCES.items() if other.category)
            raise DataError(f"--category applies to {having} only, not {self.dataset}")
        if self.cop_base is not None and self.dataset != "medmcqa":
            raise DataError(f"--cop-base applies to medmcqa only, not {self.dataset}")
        if self.ids is not None and source.id is None:
            raise DataError(f"--ids selects rows by id, and {self.dataset} rows have no id field")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"--limit must be at least 1, got {self.limit}")
        if self.dev_output is not None and self.dev_size < 1:
            raise DataError(f"--dev-size must be at least 1, got {self.dev_size}")


def summary_path(output: str | os.PathLike) -> Path:
    """Where `prepare` writes the summary of `output`: beside it, its whole name then `.summary.json`
    (`medqa_dev.jsonl.summary.json`), so a .jsonl and a .parquet of the same stem each have their own."""
    output = Path(output)
    return output.with_name(f"{output.name}.summary.json")


def prepare(dataset: str, output: str | os.PathLike, **options: Any) -> dict:
    """Format one dataset into an OpenRLHF prompt file, or with `verl` into verl's RL parquet layout (chat
    prompts, `verl_row`); return the summary, also written beside it. `options` are PrepareOptions' fields.

    Raises DataError, with the file, line or row and what to do, for a bad row (unless `skip_invalid`),
    a bad flag or an ambiguous input. Rows keep the source's order unless `shuffle_seed` is given.
    The order of the steps: --category and --ids select rows, rows are formatted, --exclude drops
    questions of other files, `dev_output` takes `dev_size` questions (a `dev_seed`ed sample, in source
    order) with every copy of them, then --shuffle and --limit apply to what is left for `output`.
    """
    options = PrepareOptions(dataset, output, **options)
    # check_outputs creates the output folders, to find an unwritable one before the work; a run that then
    # fails (no network, a bad row) removes those it created, deepest first, so it leaves nothing behind.
    targets = [path for path in (options.output, options.dev_output) if path is not None]
    new_folders = sorted({folder for path in targets for folder in path.absolute().parents if not folder.exists()})
    try:
        stale = check_outputs(options)
        rows, source, expected_answers, summary = read_and_select(options)
        formatted, skipped = format_rows(rows, source, options)
        summary |= {
            "rows_skipped": len(skipped),
            "skipped_by_field": dict(Counter(row["field"] for row in skipped).most_common()),
            "skipped": skipped,
        }
        duplicates = find_duplicates(formatted)
        if expected_answers:
            check_expected_answers(formatted, expected_answers, options.ids)
        kept, excluded = exclude_questions(formatted, options.exclude)
        del formatted  # its locations are not needed again: freed before the output is encoded
        summary |= excluded | duplicates
        kept, dev, dev_report = carve_dev(kept, options)
        summary |= dev_report
        kept, cut = shuffle_and_limit(kept, options)
        if not kept:
            raise no_rows_left(summary)
        summary |= {"shuffle_seed": options.shuffle_seed, "rows_cut_by_limit": cut, **distributions(kept)}
        summary["stale_temporaries_removed"] = stale
        write_together(output_files(options, summary, kept, dev))
        return summary
    except BaseException:
        for folder in reversed(new_folders):
            with contextlib.suppress(OSError):  # not empty: something else was written there meanwhile
                folder.rmdir()
        raise


def _same_file(a: Path, b: Path) -> bool:
    """The same file, through symlinks and hard links; a path that does not exist yet by its resolved name."""
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def check_outputs(options: PrepareOptions) -> list[str]:
    """Before any reading: refuse an output that is a file this run reads or another of its outputs, one
    that exists (without `overwrite`), or one that cannot be written; then remove the temporaries a killed
    run left beside the outputs, and return their names for the summary."""
    output, dev_output = options.output, options.dev_output
    targets = [output, summary_path(output)] + ([dev_output, summary_path(dev_output)] if dev_output else [])
    read = [
        (Path(path), role)
        for path, role in ((options.input_path, "the input"), (options.ids, "the --ids file"))
        if path is not None
    ]
    read += [(Path(path), "an --exclude file") for path in options.exclude]
    names = ["--output", "--output's summary", "--dev-output", "--dev-output's summary"]
    for index, (path, name) in enumerate(zip(targets, names, strict=False)):
        for other, role in read + [
            (other, f"the {earlier}") for other, earlier in zip(targets[:index], names, strict=False)
        ]:
            if _same_file(path, other):
                raise DataError(f"{name} is {role} ({path}): writing it would replace a file this run reads or writes")
    existing = [str(path) for path in targets if path.exists()]
    if existing and not options.overwrite:
        raise DataError(f"{examples(existing)}: already there; pass --overwrite to replace, or choose another name")
    stale = []
    for path in targets:
        check_writable(path)
        stale += remove_stale_temporaries(path)
    return stale


def read_and_select(options: PrepareOptions) -> tuple[list[tuple[str, dict]], Source, dict[str, str | None], dict]:
    """Read the input and keep the rows of --category and --ids; settle an answer index's numbering.

    Returns the (location, row) pairs, the source to format them with (--category renames its datasource;
    MedMCQA's numbering is filled in), the --ids file's expected answers, and the summary so far.
    """
    source, input_path, split = SOURCES[options.dataset], options.input_path, options.split
    rows = read_rows(source, input_path, split)
    hub_name = f"{source.hub_path}" + (f" {source.hub_config}" if source.hub_config else "")
    where = str(input_path) if input_path else f"{hub_name}[{split or source.default_split}]"
    summary: dict = {
        "dataset": options.dataset,
        "input": where,
        "output": str(options.output),
        "prompt_format": "chat" if options.chat else "base",
        "layout": "verl" if options.verl else "openrlhf",
        "sft": options.sft,
        "rows_read": len(rows),
    }
    if (category := options.category) is not None:
        in_category = [(location, row) for location, row in rows if row.get(source.category) == category]
        if not in_category:
            found = sorted({str(row.get(source.category)) for _, row in rows})
            raise DataError(f"no row has {source.category} {category!r}; the input has: {', '.join(found)}")
        summary |= {"category": category, "rows_not_in_category": len(rows) - len(in_category)}
        rows = in_category
        source = dataclasses.replace(source, datasource=f"{source.datasource}_{category.replace(' ', '_')}")
    expected_answers: dict[str, str | None] = {}
    if (ids := options.ids) is not None:
        expected_answers = read_ids(Path(ids))
        selected = [
            (location, row) for location, row in rows if str(field_value(row, source.id, False)) in expected_answers
        ]
        missing = sorted(set(expected_answers) - {str(field_value(row, source.id)) for _, row in selected})
        if missing:
            raise DataError(
                f"{ids} lists ids the input does not have ({len(missing)}): {examples(missing)}; "
                "is it the file of this dataset and split?"
            )
        summary |= {"ids_file": str(ids), "rows_not_in_ids": len(rows) - len(selected)}
        rows = selected
    if source.answer_index and source.answer_index_base is None:
        base, report = answer_index_convention(rows, source, options.cop_base, where, from_hub=input_path is None)
        source = dataclasses.replace(source, answer_index_base=base)
        summary |= report
    return rows, source, expected_answers, summary


def format_rows(
    rows: list[tuple[str, dict]], source: Source, options: PrepareOptions
) -> tuple[list[tuple[str, dict, str]], list[dict]]:
    """Format each row: (location, output row, its normalized question and options) for each row that
    formats, and the skipped rows' reports (with `skip_invalid`; otherwise the first invalid row stops the
    run). Empties `rows` as it goes."""
    from tqdm import tqdm

    formatted, skipped = [], []
    desc = f"formatting {options.dataset}"
    for index, (location, row) in enumerate(tqdm(rows, desc=desc, unit=" rows", disable=None)):
        rows[index] = None  # each source row is freed once formatted: keeping both doubled peak memory
        try:
            out = format_row(row, source, chat=options.chat, sft=options.sft)
        except InvalidRow as error:
            if not options.skip_invalid:
                raise DataError(
                    f"{location}: {error}. Fix the row, or pass --skip-invalid to drop such rows (each is reported)"
                ) from None
            skipped.append({"location": location, "field": error.field, "reason": error.reason})
            continue
        # One normalization per row (NFKC is slow) serves duplicates, identical options, --exclude and dev.
        key = normalize("\0".join([out["question"], *out["options"]]))
        formatted.append((location, out, key))
    return formatted, skipped


def find_duplicates(formatted: list[tuple[str, dict, str]]) -> dict:
    """The summary's report of rows repeating an earlier row's question and options, and of rows with two
    options of the same text."""
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
    return {
        "duplicates": len(duplicates),
        "duplicate_rows": duplicates,
        "identical_options": len(identical),
        "identical_option_rows": identical,
    }


def check_expected_answers(
    formatted: list[tuple[str, dict, str]], expected_answers: dict[str, str | None], ids: str | os.PathLike
) -> None:
    """Refuse rows whose gold option differs from the answer the --ids file gives their id."""
    wrong = [
        f"{ids} says id {out['id']} is {expected!r}, but {location} answers {answer!r}"
        for location, out, _ in formatted
        if (expected := expected_answers.get(out["id"])) is not None
        and normalize(expected) != normalize(answer := out["options"][LETTERS.index(out["label"])])
    ]
    if wrong:
        raise DataError(f"{len(wrong)} rows disagree with --ids answers: {examples(wrong)}")


def exclude_questions(
    formatted: list[tuple[str, dict, str]], exclude: Sequence[str | os.PathLike]
) -> tuple[list[tuple[dict, str]], dict]:
    """Drop the rows whose question is in an --exclude file: the (output row, key) pairs kept, and the
    summary's count of rows excluded, per file."""
    excluded_by_file: Counter = Counter()
    if exclude:
        seen_in = exclusion_index(exclude)
        kept = []
        for _, out, key in formatted:
            found_in = seen_in.get(key.split("\0")[0].strip())
            if found_in is None:
                kept.append((out, key))
            else:
                excluded_by_file[found_in] += 1
    else:
        kept = [(out, key) for _, out, key in formatted]
    report = {
        "rows_excluded": sum(excluded_by_file.values()),
        "excluded_by_file": {str(path): excluded_by_file[str(path)] for path in exclude},
    }
    return kept, report


def carve_dev(kept: list[tuple[dict, str]], options: PrepareOptions) -> tuple[list[dict], list[dict], dict]:
    """With `dev_output`: move `dev_size` questions (a `dev_seed`ed sample, each once, in source order) to
    the dev rows and drop their copies. Returns the training rows, the dev rows and the summary's report."""
    if options.dev_output is None:
        return [out for out, _ in kept], [], {}
    questions = list(dict.fromkeys(key.split("\0")[0].strip() for _, key in kept))
    if options.dev_size >= len(questions):
        raise DataError(
            f"--dev-size {options.dev_size} leaves no training rows: {len(questions)} questions remain after --exclude"
        )
    chosen = set(random.Random(options.dev_seed).sample(questions, options.dev_size))
    train, dev, taken = [], [], set()
    copies_of_dev = 0
    for out, key in kept:
        question = key.split("\0")[0].strip()
        if question not in chosen:
            train.append(out)
        elif question in taken:
            copies_of_dev += 1  # the dev file holds each question once; its copies leave train too
        else:
            taken.add(question)
            dev.append(out)
    report = {
        "dev_output": str(options.dev_output),
        "dev_seed": options.dev_seed,
        "rows_moved_to_dev": len(dev),
        "rows_dropped_as_copies_of_dev_questions": copies_of_dev,
    }
    return train, dev, report


def shuffle_and_limit(kept: list[dict], options: PrepareOptions) -> tuple[list[dict], int]:
    """--shuffle (seeded), then --limit: the rows for `output`, and how many the limit cut."""
    if options.shuffle_seed is not None:
        random.Random(options.shuffle_seed).shuffle(kept)
    cut = len(kept[options.limit :]) if options.limit is not None else 0
    return kept[: len(kept) - cut], cut


def no_rows_left(summary: dict) -> DataError:
    """The error for a run that would write an empty file: what was read, skipped and excluded, and per
    field the first row that failed on it."""
    skipped = summary["skipped"]
    first: dict[str, dict] = {}  # per field, the first row that failed on it
    for row in skipped:
        first.setdefault(row["field"], row)
    reasons = "; ".join(
        f"{count} row{'s' * (count > 1)}: field {field!r}, e.g. {first[field]['location']}: {first[field]['reason']}"
        for field, count in Counter(row["field"] for row in skipped).most_common()
    )
    return DataError(
        f"no rows left to write: {summary['rows_read']} read, {len(skipped)} skipped, "
        f"{summary['rows_excluded']} excluded" + (f" (skipped {reasons})" if skipped else "")
    )


def distributions(rows: list[dict]) -> dict:
    """A written file's row count, labels and option counts, for its summary."""
    return {
        "rows_written": len(rows),
        "label_distribution": dict(sorted(Counter(out["label"] for out in rows).items())),
        "option_count_distribution": {
            str(count): number for count, number in sorted(Counter(len(out["options"]) for out in rows).items())
        },
    }


def encode(rows: list[dict], verl: bool) -> Iterable[str] | bytes:
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


def output_files(options: PrepareOptions, summary: dict, kept: list[dict], dev: list[dict]) -> dict:
    """Every file to write, by path: the prompt file, the dev file and its summary, and the summary; the
    dev summary repeats what describes the input and says which files it is disjoint from."""
    files: dict[Path, Iterable[str] | bytes] = {options.output: encode(kept, options.verl)}
    if options.dev_output is not None:
        shared = ("dataset", "input", "prompt_format", "layout", "sft", "category", "ids_file")
        dev_summary = {key: summary[key] for key in shared if key in summary}
        dev_summary |= {
            "output": str(options.dev_output),
            "train_output": str(options.output),
            "dev_seed": options.dev_seed,
            "dev_size": options.dev_size,
            "disjoint_from": [str(options.output), *map(str, options.exclude)],
            **distributions(dev),
        }
        files[options.dev_output] = encode(dev, options.verl)
        files[summary_path(options.dev_output)] = [json.dumps(dev_summary, indent=2, ensure_ascii=False) + "\n"]
    files[summary_path(options.output)] = [json.dumps(summary, indent=2, ensure_ascii=False) + "\n"]
    return files
