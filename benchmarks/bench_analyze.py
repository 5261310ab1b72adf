"""Peak memory and time of `analyze` on 1 MiB, 64 MiB and 1 GiB of rollout samples, in one run.

Each size is a synthetic run of the same 200 training steps (TensorBoard events for every step, one
process's sample file; more calls a step for a larger file), written to a temporary folder and deleted
after. `python -m med_rlvr_plugin.analyze` runs on each in a fresh process, whose maximum resident set size
(from the kernel, `wait4`) is its peak memory. The 1 MiB run is the baseline the others are set against:
streamed samples keep the peak memory flat (target: within 1.25x of the baseline at 1 GiB), and the time
beyond the baseline's (start-up, imports, TensorBoard and plotting, the same for every size) grows
linearly with the file (its seconds per MiB about equal at 64 MiB and 1 GiB).

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
            # Four stages: three responses in four of the stage's kind, the fourth of each kind in turn.
            kinds = [(step - 1) * 4 // STEPS if index % 4 else index // 4 % 4 for index in range(per_step)]
            for index, kind in enumerate(kinds):
                lines += 1
                when = start + step * 60 + index * 50 / per_step
                handle.write(f'{{"time": {when}, "call": {lines}, "host": "h", "pid": 1, ' + bodies[kind][1:] + "\n")
            for key in METRICS:
                value = sum(scored[kind].metrics[key] for kind in kinds) / len(kinds)
                writer.add_scalar(f"train/{key}", value, step, walltime=start + step * 60 + 55)
    writer.close()
    return lines


# The child reports its own high-water mark: the kernel's ru_maxrss of a child counts the memory of the
# process it was forked from (this one, with torch loaded), so it would read the same for every size.
CHILD = """import sys
from med_rlvr_plugin.analyze import main
code = main(sys.argv[1:])
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0], file=sys.stderr)
sys.exit(code)
"""


def measure(folder: Path) -> tuple[float, float]:
    """Seconds and peak resident memory (MiB) of analyze on `folder`, in a fresh process."""
    command = [sys.executable, "-c", CHILD, str(folder), "--output", str(folder / "out")]
    began = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - began
    if result.returncode:
        sys.exit(f"analyze failed on {folder} (exit {result.returncode}): {result.stderr}")
    return seconds, int(result.stderr.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024], help="sample MiB, baseline first")
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {STEPS} steps a run")
    print("| samples | lines | seconds | seconds/MiB over the baseline | peak memory (MiB) | memory ratio |")
    print("|---|---|---|---|---|---|")
    baseline = start = base_size = None
    for megabytes in options.sizes:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            lines = write_run(folder, megabytes)
            size = (folder / "rollouts" / "rollouts-h-1.jsonl").stat().st_size / 2**20
            seconds, peak = measure(folder)
        baseline, start, base_size = baseline or peak, start or seconds, base_size or size
        per_mib = f"{(seconds - start) / (size - base_size):.4f}" if size > base_size else "(baseline)"
        row = [f"{size:,.0f} MiB", f"{lines:,}", f"{seconds:.1f}", per_mib, f"{peak:.0f}"]
        print("| " + " | ".join([*row, f"{peak / baseline:.2f}"]) + " |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
