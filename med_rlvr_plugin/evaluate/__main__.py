"""The command line: `python -m med_rlvr_plugin.evaluate run|report|compare`, the paper's accuracy table.

    python -m med_rlvr_plugin.evaluate run [MODEL ...] [--run-dir OUTPUT_DIR] [--data FILE ...] --output-dir DIR
        [--mode generate|loglik|both] [--settings manifest|shell]
    python -m med_rlvr_plugin.evaluate report DIR
    python -m med_rlvr_plugin.evaluate compare DIR1 DIR2 ... [--metric accuracy] [--output FILE.md]

lm-evaluation-harness generates, our verifier grades (`med_rlvr_plugin.evaluate` lists the modules);
docs/evaluation.md has the commands, the metric definitions and an example table. Exit 2 for a usage
error, 1 for bad input or a failed run (cli.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from med_rlvr_plugin.cli import ToolError, fail, tool_parser
from med_rlvr_plugin.defaults import MAX_NEW_TOKENS
from med_rlvr_plugin.evaluate import RATES
from med_rlvr_plugin.evaluate.reports import compare, report, write_comparison
from med_rlvr_plugin.evaluate.runner import MODES, check_flags, run
from med_rlvr_plugin.evaluate.settings import SETTINGS_CHOICES

BACKENDS = ("hf", "vllm")
# The metric names before issue 14, still accepted by `compare --metric` (with a note).
OLD_METRIC_NAMES = {"acc": "accuracy", "acc_strict": "accuracy_strict", "relaxed_acc": "relaxed_accuracy"}


def parser() -> argparse.ArgumentParser:
    """The parser of the three commands; usage errors print `med-rlvr evaluate: error: ...` and exit 2."""
    top = tool_parser(
        "evaluate",
        prog="python -m med_rlvr_plugin.evaluate",
        description="The paper's accuracy table for any model or checkpoint: lm-evaluation-harness generates, "
        "our verifier grades.",
    )
    commands = top.add_subparsers(dest="command", required=True)
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
    run_parser.add_argument("--backend", choices=BACKENDS, help="lm-eval backend (default hf)")
    # --model named the backend before issue 14; everywhere else (the launch scripts) it names a model.
    run_parser.add_argument("--model", dest="old_backend", choices=BACKENDS, help=argparse.SUPPRESS)
    run_parser.add_argument(
        "--model-args",
        default="",
        help="lm-eval model arguments besides pretrained, e.g. "
        "dtype=bfloat16 or tensor_parallel_size=2,data_parallel_size=4",
    )
    run_parser.add_argument("--mode", choices=MODES, default="generate", help="generate (default), loglik or both")
    run_parser.add_argument("--n-samples", type=int, default=1, help="responses per question (pass@1 is their mean)")
    run_parser.add_argument("--temperature", type=float, help="default 0 (greedy) for 1 sample, 1.0 (training's) else")
    tokens = f"default: the run's max_new_tokens (its manifest.json), else {MAX_NEW_TOKENS}"
    run_parser.add_argument("--max-gen-toks", type=int, help=tokens)
    run_parser.add_argument(
        "--settings",
        dest="settings_from",
        choices=SETTINGS_CHOICES,
        help="when MED_RLVR_* or --max-gen-toks contradict the run's manifest.json: use the manifest's or the shell's",
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
    return top


def _deprecated(old: str, new: str) -> None:
    print(f"med-rlvr evaluate: warning: {old} is deprecated; use {new}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command == "run":
        if args.old_backend:
            if args.backend:
                top.error("give the backend once, as --backend (--model is its deprecated spelling)")
            _deprecated(f"--model {args.old_backend}", f"--backend {args.old_backend}")
        args.backend = args.backend or args.old_backend or "hf"
        try:  # refused before anything is read: a usage error
            check_flags(
                args.models,
                args.run_dir,
                args.output_dir,
                args.n_samples,
                args.temperature,
                args.max_gen_toks,
                args.limit,
                args.model_args,
            )
        except ToolError as error:
            top.error(str(error))
        if args.mode == "loglik" and (args.n_samples > 1 or args.temperature is not None):
            top.error("--n-samples and --temperature set the generation; --mode loglik generates nothing")
    if args.command == "compare":
        if len(args.directories) < 2:
            top.error("compare needs at least two folders")
        if args.metric in OLD_METRIC_NAMES:
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
                mode=args.mode,
                settings_from=args.settings_from,
            )
        elif args.command == "report":
            report(args.directory)
            print((Path(args.directory) / "report.md").read_text(encoding="utf-8"))
        else:
            table = compare(args.directories, args.metric)
            print(table["markdown"])
            if args.output:
                write_comparison(table, Path(args.output))
    except (ToolError, ValueError, OSError) as error:  # ValueError: a bad MED_RLVR_* variable or label
        return fail("evaluate", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
