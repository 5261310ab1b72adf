"""Write an OpenRLHF prompt file from MedQA, MMLU-Pro, MedMCQA, PubMedQA or MMLU (docs/data.md).

    python data_prep/prepare.py medqa --split test --output data/medqa_test.jsonl
    python data_prep/prepare.py medqa --split train --output data/medqa_train.jsonl \\
        --exclude data/medqa_test.jsonl --dev-output data/medqa_dev.jsonl
    python data_prep/prepare.py mmlu_pro --category health --output data/mmlu_pro_health.jsonl
    python data_prep/prepare.py medqa --split test --verl --output data/medqa_test.parquet

The formatting is library code, `med_rlvr_plugin.data`; this file only parses flags and prints the summary.
"""

from __future__ import annotations

import argparse
import sys

from med_rlvr_plugin.cli import ToolError, fail, tool_parser
from med_rlvr_plugin.data import SOURCES, DataError, PrepareOptions, prepare, summary_path
from med_rlvr_plugin.defaults import DEV_SIZE

SHOWN = 10  # rows listed per kind of finding; the summary file lists them all


def show(summary: dict, key: str, label: str, describe) -> None:
    """Print the first rows of one kind of finding, and how many more the summary file lists."""
    rows = summary.get(key, [])
    for row in rows[:SHOWN]:
        print(f"{label} {describe(row)}")
    if len(rows) > SHOWN:
        print(f"... {len(rows) - SHOWN} more ({label}), listed in the summary file")


def build_parser() -> argparse.ArgumentParser:
    """The command line; a usage error prints `med-rlvr prepare: error: ...` and exits 2."""
    parser = tool_parser("prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=SOURCES)
    parser.add_argument("--output", required=True, help="the prompt file to write, NAME.jsonl")
    parser.add_argument(
        "--input",
        help="a local .jsonl, .json (either may be .gz) or .parquet file in the dataset's published format; for "
        "mmlu also the CSV release (a SUBJECT_test.csv file, or the folder data/test)",
    )
    parser.add_argument(
        "--split",
        help="hub split; default: " + ", ".join(f"{name} {source.default_split}" for name, source in SOURCES.items()),
    )
    parser.add_argument(
        "--category",
        help="mmlu_pro: keep rows of this category (the paper's: health); mmlu: of this subject (default: the six "
        "medical subjects)",
    )
    parser.add_argument(
        "--ids",
        metavar="FILE",
        help="keep only rows whose id is a key of this JSON object (or in this JSON array); PubMedQA's "
        "test_ground_truth.json selects the standard 500-question test split, its answers checked",
    )
    parser.add_argument(
        "--chat", action="store_true", help="prompt as a messages list, for --data.apply_chat_template"
    )
    parser.add_argument("--sft", action="store_true", help="add the SFT baseline's target as `response`")
    parser.add_argument(
        "--verl",
        action="store_true",
        help="write verl's RL parquet layout (NAME.parquet, chat prompts) for med_rlvr_plugin/verl_reward.py "
        "(docs/reuse.md)",
    )
    parser.add_argument("--shuffle", action="store_true", help="shuffle the rows (seeded, so reproducible)")
    parser.add_argument("--seed", type=int, help="seed of --shuffle and of the --dev-output sample (default 0)")
    parser.add_argument("--limit", type=int, help="write at most this many rows (after --shuffle)")
    parser.add_argument(
        "--exclude", nargs="+", default=[], metavar="FILE", help="drop questions found in these prepared files"
    )
    parser.add_argument(
        "--dev-output",
        metavar="FILE",
        help="also write a dev file: --dev-size questions sampled (seeded) after --exclude, kept out of --output",
    )
    parser.add_argument("--dev-size", type=int, help=f"questions in --dev-output (default {DEV_SIZE})")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="drop invalid rows (each is reported) instead of stopping"
    )
    parser.add_argument(
        "--cop-base",
        type=int,
        choices=(0, 1),
        help="medmcqa only: cop counts from 0 (hub) or 1 (original); must agree with the file's evidence",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs and their summaries")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed is not None and not (args.shuffle or args.dev_output):
        parser.error("--seed has no effect without --shuffle or --dev-output")
    if args.dev_size is not None and not args.dev_output:
        parser.error("--dev-size has no effect without --dev-output")

    options = dict(
        input_path=args.input,
        split=args.split,
        category=args.category,
        chat=args.chat,
        sft=args.sft,
        shuffle_seed=(args.seed or 0) if args.shuffle else None,
        limit=args.limit,
        exclude=args.exclude,
        skip_invalid=args.skip_invalid,
        cop_base=args.cop_base,
        overwrite=args.overwrite,
        ids=args.ids,
        dev_output=args.dev_output,
        dev_size=DEV_SIZE if args.dev_size is None else args.dev_size,
        dev_seed=args.seed or 0,
        verl=args.verl,
    )
    try:
        PrepareOptions(args.dataset, args.output, **options)
    except DataError as error:  # a flag combination refused before any file is read: a usage error
        parser.error(str(error))
    try:
        summary = prepare(args.dataset, args.output, **options)
    except (ToolError, OSError) as error:
        return fail("prepare", error)
    print_summary(summary, args.output, args.dev_output)
    return 0


def print_summary(summary: dict, output: str, dev_output: str | None) -> None:
    """The findings (the first few of each kind) and the counts, then where the summary files are."""
    show(summary, "skipped", "skipped", lambda row: f"{row['location']}: field {row['field']!r}: {row['reason']}")
    show(
        summary,
        "duplicate_rows",
        "duplicate",
        lambda row: f"{row['location']} (id {row['id']}) repeats {row['same_as']}",
    )
    show(
        summary,
        "identical_option_rows",
        "identical options",
        lambda row: f"{row['location']}: {', '.join(row['options'])}",
    )
    show(
        summary,
        "cop_explanation_disagreement_rows",
        "explanation disagrees",
        lambda row: f"{row['location']}: cop gives {row['label']}, the explanation says {row['explanation_says']}",
    )
    show(summary, "stale_temporaries_removed", "removed a killed run's temporary", str)
    for key in (
        "input",
        "output",
        "rows_read",
        "rows_not_in_category",
        "ids_file",
        "rows_not_in_ids",
        "cop_convention",
        "rows_skipped",
        "skipped_by_field",
        "rows_excluded",
        "rows_moved_to_dev",
        "rows_dropped_as_copies_of_dev_questions",
        "duplicates",
        "identical_options",
        "rows_cut_by_limit",
        "rows_written",
    ):
        if key in summary and not (key == "skipped_by_field" and not summary[key]):
            print(f"{key}: {summary[key]}")
    print(f"labels: {summary['label_distribution']}")
    print(f"option counts: {summary['option_count_distribution']}")
    print(f"summary: {summary_path(output)}")
    if dev_output:
        print(
            f"dev: {dev_output} ({summary['rows_moved_to_dev']} rows, seed {summary['dev_seed']}); "
            f"summary: {summary_path(dev_output)}"
        )


if __name__ == "__main__":
    sys.exit(main())
