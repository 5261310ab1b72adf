"""The paper's accuracy table for any model or checkpoint: lm-evaluation-harness generates, our verifier grades.

    python -m med_rlvr_plugin.evaluate run [MODEL ...] [--run-dir OUTPUT_DIR] [--data FILE ...] --output-dir DIR
    python -m med_rlvr_plugin.evaluate report DIR
    python -m med_rlvr_plugin.evaluate compare DIR1 DIR2 ... [--metric accuracy] [--output FILE.md]

lm-eval (0.4.13) generates, `med_rlvr_plugin.evaluate` grades (its docstring lists the modules);
docs/evaluation.md has the commands, the metric definitions and an example table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.defaults import MAX_NEW_TOKENS
from med_rlvr_plugin.evaluate import RATES, EvalError
from med_rlvr_plugin.evaluate.reports import compare, report
from med_rlvr_plugin.evaluate.runner import run
from med_rlvr_plugin.files import write_together

# The metric names before issue 14, still accepted by `compare --metric` (with a note).
OLD_METRIC_NAMES = {"acc": "accuracy", "acc_strict": "accuracy_strict", "relaxed_acc": "relaxed_accuracy"}


def _deprecated(old: str, new: str) -> None:
    print(f"med-rlvr evaluate: warning: {old} is deprecated; use {new}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m med_rlvr_plugin.evaluate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="generate with lm-eval, grade, write the tables")
    run_parser.add_argument("models", nargs="*", help="model folders or hub ids")
    run_parser.add_argument(
        "--run-dir", help="a training run's OUTPUT_DIR: each ckpt/*global_step*_hf by step, then model/"
    )
    run_parser.add_argument(
        "--data",
        nargs="+",
        default=(),
        metavar="FILE",
        help="prepared prompt files (default: data/medqa_test.jsonl data/mmlu_pro_health.jsonl)",
    )
    run_parser.add_argument("--output-dir", help="where to write (default: RUN_DIR/eval)")
    run_parser.add_argument("--model", dest="backend", choices=("hf", "vllm"), default="hf", help="lm-eval backend")
    run_parser.add_argument(
        "--model-args",
        default="",
        help="lm-eval model arguments besides pretrained, e.g. "
        "dtype=bfloat16 or tensor_parallel_size=2,data_parallel_size=4",
    )
    run_parser.add_argument("--n-samples", type=int, default=1, help="responses per question (pass@1 is their mean)")
    run_parser.add_argument("--temperature", type=float, help="default 0 (greedy) for 1 sample, 1.0 (training's) else")
    run_parser.add_argument(
        "--max-gen-toks",
        type=int,
        default=MAX_NEW_TOKENS,
        help=f"default {MAX_NEW_TOKENS} (training's max_new_tokens)",
    )
    run_parser.add_argument("--limit", type=int, help="only the first N questions of each file")
    run_parser.add_argument("--batch-size", help="lm-eval's batch size (a number or auto)")
    run_parser.add_argument("--device", help="hf backend device, e.g. cuda:0 or cpu")
    report_parser = commands.add_parser("report", help="report.md and summary.json from a folder of sample logs")
    report_parser.add_argument("directory")
    compare_parser = commands.add_parser("compare", help="the paper-style table across models (first: baseline)")
    compare_parser.add_argument("directories", nargs="+")
    compare_parser.add_argument(
        "--metric",
        default="accuracy",
        choices=(*RATES, *OLD_METRIC_NAMES),
        metavar="METRIC",
        help=f"the rate compared: {', '.join(RATES)} (default accuracy)",
    )
    compare_parser.add_argument("--output", help="also write the table to this .md file, its data beside as .json")
    args = parser.parse_args(argv)
    if args.command == "compare" and args.metric in OLD_METRIC_NAMES:
        _deprecated(f"--metric {args.metric}", f"--metric {OLD_METRIC_NAMES[args.metric]}")
        args.metric = OLD_METRIC_NAMES[args.metric]
    try:
        if args.command == "run":
            run(
                args.models,
                args.output_dir,
                run_dir=args.run_dir,
                data=args.data,
                backend=args.backend,
                model_args=args.model_args,
                n_samples=args.n_samples,
                temperature=args.temperature,
                max_gen_toks=args.max_gen_toks,
                limit=args.limit,
                batch_size=args.batch_size,
                device=args.device,
            )
        elif args.command == "report":
            report(args.directory)
            print((Path(args.directory) / "report.md").read_text(encoding="utf-8"))
        else:
            if len(args.directories) < 2:
                raise EvalError("compare needs at least two folders")
            table = compare(args.directories, args.metric)
            print(table["markdown"])
            if args.output:
                output = Path(args.output)
                markdown = table.pop("markdown")
                write_together({output: [markdown], output.with_suffix(".json"): [json.dumps(table, indent=1) + "\n"]})
    except (ToolError, ValueError) as error:
        print(f"med-rlvr evaluate: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
