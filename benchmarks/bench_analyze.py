"""Peak memory and time of `analyze` on 1 MiB, 64 MiB and 1 GiB of rollout samples, in one run.

Each size is a synthetic run of the same 200 training steps (TensorBoard events for every step, one
process's sample file; more calls a step for a larger file), written to a temporary folder and deleted
after. `python -m med_rlvr_plugin.analyze` runs on each in a fresh process, whose maximum resident set size
(from the kernel, `wait4`) is its peak memory. The 1 MiB run is the baseline the others are set against:
streamed samples keep the peak memory flat (target: within 1.25x of the baseline at 1 GiB) and the time
linear in the file size (the seconds per MiB about equal at 64 MiB and 1 GiB; at 1 MiB the start-up,
imports and plotting dominate).

    python benchmarks/bench_analyze.py [--sizes 1 64 1024]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.reward import METRICS, score_grade
from med_rlvr_plugin.verifier import grade_response

STEPS = 200
PROMPT = render_prompt(
    "A 24-year-old woman has itchy, watery eyes every spring. Which is the most appropriate treatment?",
    ["Erythromycin ointment", "Ketotifen eye drops", "Warm compresses", "Latanoprost eye drops", "Oral acyclovir"],
)
REASONING = (
    "Seasonal itching with watery discharge points to an allergic cause; a mast cell stabilizer with "
    "antihistamine action treats it, while antibiotics, antivirals and glaucoma drops do not. "
)
# A rollout of about 2 KB a line, as a 3B model's MedQA responses are: a share of each class a step.
RESPONSES = [
    f" <think>{REASONING * 8}</think><answer>B</answer>",
    f" <think>{REASONING * 4} Ketotifen eye drops.</think><answer>B</answer>",
    f" {REASONING * 5}<think>Ketotifen eye drops.</think><answer>B</answer>",
    f" {REASONING * 6} The answer is B.",
]


def write_run(folder: Path, megabytes: int) -> int:
    """The run's events and one sample file of about `megabytes` MiB; returns its number of lines."""
    from torch.utils.tensorboard import SummaryWriter

    scored = [score_grade(grade_response(PROMPT + text, PROMPT, "B"), PROMPT) for text in RESPONSES]
    bodies = [
        json.dumps({"prompt": PROMPT, "label": "B", "behaviour": s.behaviour, **asdict(s.grade)}) for s in scored
    ]
    line = sum(len(body) for body in bodies) / len(bodies) + 80  # the time, call, host and pid added below
    per_step = max(1, int(megabytes * 2**20 / (STEPS * line)))
    start, lines = 1_800_000_000.0, 0
    writer = SummaryWriter(str(folder / "tensorboard" / "run"))
    (folder / "rollouts").mkdir(parents=True)
    with open(folder / "rollouts" / "rollouts-h-1.jsonl", "w", encoding="utf-8") as handle:
        for step in range(1, STEPS + 1):
            for index in range(per_step):
                lines += 1
                head = (
                    f'{{"time": {start + step * 60 + index * 50 / per_step}, "call": {lines}, "host": "h", "pid": 1, '
                )
                handle.write(head + bodies[(index + step) % len(bodies)][1:] + "\n")
            for key in METRICS:
                value = sum(score.metrics[key] for score in scored) / len(scored)
                writer.add_scalar(f"train/{key}", value, step, walltime=start + step * 60 + 55)
    writer.close()
    return lines


def measure(folder: Path) -> tuple[float, float]:
    """Seconds and peak resident memory (MiB) of analyze on `folder`, in a fresh process."""
    command = [sys.executable, "-m", "med_rlvr_plugin.analyze", str(folder), "--output", str(folder / "out")]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"analyze failed on {folder} (exit {process.returncode})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024], help="sample MiB, baseline first")
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {STEPS} steps a run")
    print("| samples | lines | seconds | seconds/MiB | peak memory (MiB) | memory ratio |")
    print("|---|---|---|---|---|---|")
    baseline = None
    for megabytes in options.sizes:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            lines = write_run(folder, megabytes)
            size = (folder / "rollouts" / "rollouts-h-1.jsonl").stat().st_size / 2**20
            seconds, peak = measure(folder)
        baseline = baseline or peak
        row = [f"{size:,.0f} MiB", f"{lines:,}", f"{seconds:.1f}", f"{seconds / size:.3f}", f"{peak:.0f}"]
        print("| " + " | ".join([*row, f"{peak / baseline:.2f}"]) + " |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
