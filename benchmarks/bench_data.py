"""Speed and peak memory of `prepare` on MedQA-like input, beside plain JSON read-and-write of the same rows.

The input repeats the real dev and test files from ../shared/data (each copy's questions numbered so no two
rows are duplicates). The baseline, measured in the same run, reads the same JSON lines and writes each row
back with json.dumps: the floor any formatter pays. `prepare` also validates, renders the prompt, hashes
ids, finds duplicates and writes atomically with a summary.

Speed: the MedQA training split's size (10,178 rows), best of --repeats runs each in this process, the
variants taking turns so that a busy machine slows them alike. Target: within 3x of the baseline.
Peak memory: --memory-rows rows (default 60,000, about 100 MB), each variant once in a fresh process
(its maximum resident set size, from os.wait4), as a multiple of the input file's size and of the
baseline's peak.

    python benchmarks/bench_data.py [--repeats 5] [--memory-rows 60000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from med_rlvr_plugin.data import prepare

# The real data: MED_RLVR_TEST_DATA, as the tests read it, or ../shared/data beside the checkout.
SHARED_DATA = (
    Path(os.environ.get("MED_RLVR_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "medqa"
)
ROWS = 10_178  # MedQA-USMLE 4-option train split


def medqa_like_input(path: Path, rows: int) -> None:
    real = [
        json.loads(line) for name in ("us_4opt_dev.jsonl", "us_4opt_test.jsonl") for line in open(SHARED_DATA / name)
    ]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = real[i % len(real)]
            handle.write(json.dumps({**row, "question": f"({i // len(real)}) {row['question']}"}) + "\n")


def plain_json(source: Path, output: Path) -> None:
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").split("\n") if line]
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


BASELINE = "baseline (json read + write)"
VARIANTS = {
    BASELINE: lambda source, folder: plain_json(source, folder / "plain.jsonl"),
    "prepare medqa (base)": lambda source, folder: prepare(
        "medqa", folder / "a.jsonl", input_path=source, overwrite=True
    ),
    "prepare medqa --chat --sft": lambda source, folder: prepare(
        "medqa", folder / "b.jsonl", input_path=source, chat=True, sft=True, overwrite=True
    ),
}


def peak_memory_mb(variant: str, source: Path, folder: Path) -> float:
    """Maximum resident set size of a fresh process running one variant once."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from bench_data import VARIANTS;"
        "VARIANTS[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))"
    )
    command = [sys.executable, "-c", code, str(Path(__file__).parent), variant, str(source), str(folder)]
    process = subprocess.Popen(command, env={**os.environ, "TQDM_DISABLE": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise RuntimeError(f"{variant}: the measuring process failed ({status})")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-rows", type=int, default=60_000)
    args = parser.parse_args()
    if not SHARED_DATA.exists():
        print(f"needs the real MedQA files in {SHARED_DATA}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        source = folder / "train.jsonl"
        medqa_like_input(source, ROWS)
        results = {variant: float("inf") for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant, run in VARIANTS.items():
                start = time.perf_counter()
                run(source, folder)
                results[variant] = min(results[variant], time.perf_counter() - start)
        big = folder / "big.jsonl"
        medqa_like_input(big, args.memory_rows)
        size_mb = big.stat().st_size / 2**20
        peaks = {variant: peak_memory_mb(variant, big, folder) for variant in VARIANTS}
    print(f"speed: {ROWS} MedQA-sized rows, best of {args.repeats} runs")
    print(f"{'':30} {'seconds':>8} {'rows/s':>8} {'ratio':>6}")
    for variant, seconds in results.items():
        print(f"{variant:30} {seconds:8.3f} {ROWS / seconds:8.0f} {seconds / results[BASELINE]:6.2f}")
    print(f"peak memory: {args.memory_rows} rows, a {size_mb:.0f} MB input, one fresh process each")
    print(f"{'':30} {'MB':>8} {'x input':>8} {'ratio':>6}")
    for variant, peak in peaks.items():
        print(f"{variant:30} {peak:8.0f} {peak / size_mb:8.2f} {peak / peaks[BASELINE]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
