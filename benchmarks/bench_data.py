"""Rows per second of `prepare` on MedQA-sized input, beside plain JSON read-and-write of the same rows.

The input is the MedQA training split's size (10,178 rows), built by repeating the real dev and test
files from ../shared/data (each copy's questions numbered so no two rows are duplicates). The baseline,
measured in the same run, reads the same JSON lines and writes each row back with json.dumps: the floor
any formatter pays. `prepare` also validates, renders the prompt, hashes ids, finds duplicates and writes
atomically with a summary. Target: within 3x of the baseline. Best of --repeats runs each, the variants
taking turns so that a busy machine slows them alike.

    python benchmarks/bench_data.py [--repeats 5]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from med_rlvr_plugin.data import prepare

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medqa"
ROWS = 10_178  # MedQA-USMLE 4-option train split


def medqa_sized_input(path: Path) -> None:
    real = [json.loads(line) for name in ("us_4opt_dev.jsonl", "us_4opt_test.jsonl") for line in open(SHARED_DATA / name)]
    rows = [{**real[i % len(real)], "question": f"({i // len(real)}) {real[i % len(real)]['question']}"} for i in range(ROWS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def plain_json(source: Path, output: Path) -> None:
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").split("\n") if line]
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not SHARED_DATA.exists():
        print(f"needs the real MedQA files in {SHARED_DATA}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        source, folder = Path(folder) / "train.jsonl", Path(folder)
        medqa_sized_input(source)
        variants = {
            "baseline (json read + write)": lambda: plain_json(source, folder / "plain.jsonl"),
            "prepare medqa (base)": lambda: prepare("medqa", folder / "a.jsonl", input_path=source, overwrite=True),
            "prepare medqa --chat --sft": lambda: prepare(
                "medqa", folder / "b.jsonl", input_path=source, chat=True, sft=True, overwrite=True
            ),
        }
        results = {name: float("inf") for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                results[name] = min(results[name], time.perf_counter() - start)
    baseline = results["baseline (json read + write)"]
    print(f"{ROWS} MedQA-sized rows, best of {args.repeats} runs")
    print(f"{'':30} {'seconds':>8} {'rows/s':>8} {'ratio':>6}")
    for name, seconds in results.items():
        print(f"{name:30} {seconds:8.3f} {ROWS / seconds:8.0f} {seconds / baseline:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
