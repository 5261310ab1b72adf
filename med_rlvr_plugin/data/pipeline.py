"""The prepare pipeline: a whole dataset into a prompt file (and a dev file) with summaries, written together.

`prepare` reads a dataset (hub or local file), formats it, reports what it skipped, excluded or found
twice, optionally carves a dev split out of it, and writes the prompt files and their summaries together:
all of them or none.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

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
from med_rlvr_plugin.data.sources import SOURCES
from med_rlvr_plugin.defaults import DEV_SIZE
from med_rlvr_plugin.files import check_writable, remove_stale_temporaries, write_together
from med_rlvr_plugin.prompts import LETTERS


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
        raise DataError(f"{examples(existing)}: already there; pass --overwrite to replace, or choose another name")
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
        base, report = answer_index_convention(rows, source, cop_base, where, from_hub=input_path is None)
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
            raise DataError(f"{len(wrong)} rows disagree with --ids answers: {examples(wrong)}")

    excluded_by_file: Counter = Counter()
    if exclude:
        seen_in = exclusion_index(exclude)
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
