"""Grading throughput of `evaluate report` over 10,000 logged responses, beside reading the same log without
grading, measured in the same run.

The log is an lm-eval sample log (one line per question, as lm-eval 0.4.13 writes it) of MedQA-style base
prompts and responses of realistic length and mix: well formed right and wrong, a preamble before <think>,
an answer leak, malformed (text after </answer>, a cut response). Rows are the real MedQA test questions when
../shared/data is present, else the built-in sample. Runs, best of --repeats:
- read: the log's lines through json.loads (what any reader of the log pays);
- read + grade: `read_questions`, which is the read plus `grade_texts` (lenient `score_sample`, strict
  grading, relaxed letter) per response;
- report: `report`, the above plus the summaries, intervals, subgroups and the written files.
The runs take turns (one of each per repeat); each reports its best time.

    python benchmarks/bench_eval.py [--responses 10000] [--repeats 5]
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from med_rlvr_plugin.data import SOURCES, format_row, read_rows
from med_rlvr_plugin.evaluate.reports import read_questions, report
from med_rlvr_plugin.launcher import sample_rows
from med_rlvr_plugin.verifier import RewardConfig

# The real data: MED_RLVR_TEST_DATA, as the tests read it (and, like them, taken out of the environment: the
# reward refuses MED_RLVR_ names it does not know), or ../shared/data beside the checkout.
SHARED_DATA = Path(
    os.environ.pop("MED_RLVR_TEST_DATA", None) or Path(__file__).resolve().parents[2] / "shared" / "data"
)
MEDQA_TEST = SHARED_DATA / "medqa" / "us_4opt_test.jsonl"
SENTENCE = "The presentation and the laboratory findings point towards one mechanism rather than the others. "


def prepared_rows() -> list[dict]:
    if MEDQA_TEST.exists():
        return [format_row(row, SOURCES["medqa"]) for _, row in read_rows(SOURCES["medqa"], MEDQA_TEST)]
    return sample_rows()


def response(rng: random.Random, label: str) -> str:
    """A response whose kind and length (about 30 to 450 thinking words) are drawn at random."""
    think = SENTENCE * rng.randint(2, 30)
    wrong = "A" if label != "A" else "B"
    return rng.choice(
        [
            f" <think>{think}</think> <answer>{label}</answer>",
            f" <think>{think}</think> <answer>{label}</answer>",
            f" <think>{think}</think> <answer>The answer is ({wrong}).</answer>",
            f" Let me solve this step by step. <think>{think}</think> <answer>{label}</answer>",
            f" <think>{label}</think> <answer>{label}</answer>",
            f" <think>{think}</think> <answer>{label}</answer> I hope this helps.",
            f" <think>{think}",
        ]
    )


def write_log(folder: Path, count: int) -> Path:
    rng, rows = random.Random(0), prepared_rows()
    path = folder / "samples_medrlvr_medqa_2026-01-01T00-00-00.000000.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            row = rows[index % len(rows)] | {"id": str(index)}
            line = {
                "doc_id": index,
                "doc": row,
                "target": row["label"],
                "arguments": {
                    "gen_args_0": {
                        "arg_0": row["prompt"],
                        "arg_1": {"until": [], "max_gen_toks": 1024, "do_sample": False},
                    }
                },
                "resps": [[response(rng, row["label"])]],
                "filter": "none",
            }
            handle.write(json.dumps(line) + "\n")
    return path


def read_only(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(len(json.loads(line)["resps"][0]) for line in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = RewardConfig()
    with tempfile.TemporaryDirectory() as folder:
        path = write_log(Path(folder), args.responses)
        megabytes = path.stat().st_size / 1e6
        runs = {
            "read (json.loads per line), baseline": lambda: read_only(path),
            "read + grade (read_questions)": lambda: read_questions(path, config),
            "report (grade, summarize, write)": lambda: report(folder, config),
        }
        # The runs take turns, so that a change in the machine's load hits all of them alike.
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, function in runs.items():
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
        print(f"{args.responses:,} logged responses, {megabytes:.1f} MB, best of {args.repeats}")
        print(f"{'run':<40} {'seconds':>8} {'responses/s':>12} {'ratio':>6}")
        baseline = min(next(iter(times.values())))
        for name, seconds in times.items():
            best = min(seconds)
            print(f"{name:<40} {best:>8.3f} {args.responses / best:>12,.0f} {best / baseline:>6.2f}")


if __name__ == "__main__":
    main()
