"""The launcher's command line: `python3 -m med_rlvr_plugin.launcher ppo|sft|sample ...` (see the package).

Flags, what is printed and the exit codes only; everything it checks or starts is the package's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from med_rlvr_plugin import launcher
from med_rlvr_plugin.cli import ToolError, ToolParser, fail, tool_parser
from med_rlvr_plugin.defaults import CHECKPOINTS, EVAL_SHARE, EVALS
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.launcher import sample_rows
from med_rlvr_plugin.launcher.checks import check_disk, reward_env
from med_rlvr_plugin.launcher.manifest import build_manifest, check_resume, claim_output_dir, resume_point
from med_rlvr_plugin.launcher.plan import describe_ppo_plan, describe_sft_plan
from med_rlvr_plugin.launcher.ray_job import check_runs_together, run_ppo
from med_rlvr_plugin.launcher.runs import check_ppo, check_sft, run_flags, run_sft


def launch_parser() -> ToolParser:
    parser = tool_parser(
        "launch", prog="python3 -m med_rlvr_plugin.launcher", description=launcher.__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="kind", required=True)
    sample = commands.add_parser("sample", help="write the built-in sample prompt file")
    sample.add_argument("file", type=Path)
    sample.add_argument("--sft", action="store_true", help="with the SFT target column `response`")
    for kind in ("ppo", "sft"):
        command = commands.add_parser(kind, help=f"check, record and start an OpenRLHF {kind.upper()} run")
        command.add_argument("--output-dir", type=Path, required=True, help="the run's folder; holds the manifest")
        command.add_argument("--run-name", required=True)
        command.add_argument("--launch-command", default="", help="the launch script's command line, for the manifest")
        command.add_argument("--dry-run", action="store_true", help="check and print only")
        command.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
        command.add_argument(
            "--allow-changes", action="store_true", help="with --resume: resume where the command differs from the run"
        )
        command.add_argument("--wandb-project", help="log to this wandb project; the key comes from WANDB_API_KEY")
        command.add_argument("--tensorboard", action="store_true", help="log to OUTPUT_DIR/tensorboard")
        command.add_argument(
            "--checkpoints",
            type=int,
            help=f"exactly N checkpoints over the run (default {CHECKPOINTS} or the most below)",
        )
        command.add_argument(
            "--builtin-sample",
            metavar="FILES",
            help="a dry run whose data is the built-in sample, standing in for these missing files: plan for "
            "MedQA's sizes",
        )
        if kind == "ppo":
            command.add_argument(
                "--eval-share",
                type=float,
                default=EVAL_SHARE,
                help="periodic eval's generation, as a share of training's",
            )
            command.add_argument(
                "--evals", type=int, default=EVALS, help="periodic evals at least (a fixed dev subset when needed)"
            )
            command.add_argument(
                "--runs-together",
                type=int,
                help="with --dry-run in a Ray job: check the cluster's GPUs and the disk for N such runs at once",
            )
            command.add_argument(
                "--reward-server",
                action="store_true",
                help="grade through a reward server (serve.py) on the head node",
            )
        else:
            command.add_argument("--num-gpus", type=int, required=True, help="deepspeed --num_gpus")
        command.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then the OpenRLHF flags")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = launch_parser()
    options = parser.parse_args(argv)
    if options.kind == "sample":
        write_together({options.file: [json.dumps(row) + "\n" for row in sample_rows(options.sft)]})
        return 0
    if (
        (options.checkpoints is not None and options.checkpoints < 1)
        or options.kind == "ppo"
        and not (0 < options.eval_share and options.evals >= 0)
    ):
        parser.error("--checkpoints must be at least 1, --eval-share above 0 and --evals 0 or more")
    if options.allow_changes and not options.resume:
        parser.error("--allow-changes goes with --resume")
    if options.kind == "ppo" and options.runs_together is not None and not (options.dry_run and options.runs_together):
        parser.error("--runs-together N (N >= 1) is a check: it goes with --dry-run")
    if options.builtin_sample and not options.dry_run:
        parser.error("--builtin-sample is for --dry-run only: a run trains on its own data")
    if options.builtin_sample:  # the first line and the last say it: none of the user's data is checked
        options.builtin_sample = options.builtin_sample.replace(",", ", ")  # the script passes them comma-joined
        print(
            f"med-rlvr: dry run on the built-in sample: {options.builtin_sample} not found; none of your data checked"
        )
    script_args = options.trainer_args[1:] if options.trainer_args[:1] == ["--"] else options.trainer_args
    try:
        manifest_path = claim_output_dir(options.output_dir, options.resume)
        checked = (check_ppo if options.kind == "ppo" else check_sft)(run_flags(options) + script_args, options)
        print("med-rlvr: OpenRLHF accepts the command:\n" + shlex.join(checked.command).replace(" --", " \\\n    --"))
        if options.kind == "ppo":
            print(describe_ppo_plan(checked.args, checked.plan))
            print(f"med-rlvr: reward configuration for every Ray actor: {reward_env()}")
        else:
            print(describe_sft_plan(checked.plan))
        if options.resume:
            manifest = build_manifest(options, checked.command, checked.args, checked.data, checked.plan)
            for difference in check_resume(options.output_dir, manifest, options.allow_changes):
                print(f"med-rlvr: --resume --allow-changes: resuming with a change: {difference}")
            ckpt = Path(checked.args.ckpt.path, "_actor" if options.kind == "ppo" else "")
            print(f"med-rlvr: --resume: {resume_point(ckpt)}")
        if options.dry_run and options.kind == "ppo" and options.runs_together:
            print(f"med-rlvr: {check_runs_together(checked, options.runs_together, options.output_dir)}")
        elif options.dry_run:
            check_disk(options.output_dir, checked.plan, dry_run=True)
            data = ", ".join(part["files"] for part in checked.data.values())
            if options.builtin_sample:
                data = f"the built-in sample, not your data ({options.builtin_sample} not found)"
            print(f"med-rlvr: dry run: every check passed for {data}; nothing was started or written")
        elif options.kind == "ppo":
            run_ppo(options, checked, manifest_path)
        else:
            run_sft(options, checked, manifest_path)
    except ToolError as error:
        return fail("launch", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
