"""Write an OpenRLHF prompt file from MedQA, MMLU-Pro, MedMCQA or PubMedQA (docs/data.md).

    python data_prep/prepare.py medqa --split test --output data/medqa_test.jsonl
    python data_prep/prepare.py mmlu_pro --category health --output data/mmlu_pro_health.jsonl

The formatting is library code, `med_rlvr_plugin.data`; this file only parses flags and prints the summary.
"""

from __future__ import annotations

import argparse
import sys

from med_rlvr_plugin.data import SOURCES, DataError, prepare, summary_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=SOURCES)
    parser.add_argument("--output", required=True, help="the prompt file to write, NAME.jsonl")
    parser.add_argument("--input", help="a local .jsonl, .json or .parquet file in the dataset's published format")
    parser.add_argument(
        "--split",
        help="hub split; default: "
        + ", ".join(f"{name} {source.default_split}" for name, source in SOURCES.items()),
    )
    parser.add_argument("--category", help="mmlu_pro only: keep rows of this category (the paper's: health)")
    parser.add_argument("--chat", action="store_true", help="prompt as a messages list, for --data.apply_chat_template")
    parser.add_argument("--sft", action="store_true", help="add the SFT baseline's target as `response`")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the rows (seeded, so reproducible)")
    parser.add_argument("--seed", type=int, help="shuffle seed (default 0); needs --shuffle")
    parser.add_argument("--limit", type=int, help="write at most this many rows (after --shuffle)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="FILE", help="drop questions found in these prepared files")
    parser.add_argument("--skip-invalid", action="store_true", help="drop invalid rows (each is reported) instead of stopping")
    parser.add_argument("--cop-base", type=int, choices=(0, 1), help="medmcqa only: cop counts from 0 (hub) or 1 (original)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output and its summary")
    args = parser.parse_args(argv)
    if args.seed is not None and not args.shuffle:
        parser.error("--seed has no effect without --shuffle")

    try:
        summary = prepare(
            args.dataset,
            args.output,
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
        )
    except (DataError, OSError) as error:
        print(f"prepare.py: error: {error}", file=sys.stderr)
        return 1

    for row in summary["skipped"]:
        print(f"skipped {row['location']}: field {row['field']!r}: {row['reason']}")
    for row in summary["duplicate_rows"][:10]:
        print(f"duplicate {row['location']} (id {row['id']}) repeats {row['same_as']}")
    if summary["duplicates"] > 10:
        print(f"... {summary['duplicates'] - 10} more duplicates, listed in the summary file")
    for key in ("input", "output", "rows_read", "rows_not_in_category", "cop_convention", "rows_skipped"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    for key in ("rows_excluded", "duplicates", "rows_cut_by_limit", "rows_written"):
        print(f"{key}: {summary[key]}")
    print(f"labels: {summary['label_distribution']}")
    print(f"option counts: {summary['option_count_distribution']}")
    print(f"summary: {summary_path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
