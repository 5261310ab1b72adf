"""`analyze` on real run sizes and real damage: streamed samples, bad lines, steps the events lost, steps
not logged every step, and its pictures; the call numbers and the closed descriptor of the reward file's
rollout sampling, which it reads.

The runs here are written directly (rollout sample lines as the reward file writes them, TensorBoard events
by torch's SummaryWriter, which OpenRLHF's logger uses); tests/test_dynamics.py drives OpenRLHF's own
executor and logger end to end.
"""

import itertools
import json
import os
import random
import subprocess
import sys
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import pytest

from med_rlvr_plugin.analyze import main as analyze_main
from med_rlvr_plugin.dynamics import STAGES, stage_timeline
from med_rlvr_plugin.plots import STAGE_COLORS
from med_rlvr_plugin.reward import METRICS, score_grade
from med_rlvr_plugin.rollouts import place_samples
from med_rlvr_plugin.verifier import grade_response
from tests.test_dynamics import CONJUNCTIVITIS, REASONING, REPO, lm_eval_line, load_reward_file, write_lines

RESPONSES = {  # one response a class, for CONJUNCTIVITIS, whose gold letter is B
    "format_failure": " The answer is B.",
    "verbose_formatter": f" <think>{REASONING * 6}</think><answer>B</answer>",
    "concise_structurer": f" <think>{REASONING}</think><answer>B</answer>",
    "direct_answer_hacker": " <think>The answer is B, Ketotifen eye drops.</think><answer>B</answer>",
    "step_by_step_exploit": f" {REASONING}<think>Ketotifen eye drops.</think><answer>B</answer>",
}
# Eight stages with a relapse to Format Failure, 60 steps: the run docs/dynamics.md shows.
RELAPSE = [
    ("format_failure", 8),
    ("verbose_formatter", 8),
    ("concise_structurer", 8),
    ("direct_answer_hacker", 8),
    ("format_failure", 6),
    ("direct_answer_hacker", 6),
    ("step_by_step_exploit", 8),
    ("concise_structurer", 8),
]
RELAPSE_STAGES = [STAGES[index] for index in (0, 1, 2, 3, 0, 3, 4, 5)]
START, STEP_SECONDS = 1_800_000_000.0, 60.0


def write_run(run_dir: Path, plan=RELAPSE, calls=20, logged_until=None, padding=0, seed=0) -> dict[int, int]:
    """A run of one rollout process following `plan` ((class, steps) per stage): each step `calls` graded
    samples, early in a stage a third still of the stage before, about half of them sampled into
    rollouts/ with their call numbers; the step's means logged to tensorboard/ up to `logged_until` (all
    by default). `padding` characters of whitespace in each thinking block make lines bigger without
    changing any class. Returns the sampled lines per true step."""
    from torch.utils.tensorboard import SummaryWriter

    grades = {}  # (class, label): a quarter of the questions have gold D, which every response gets wrong
    for (kind, response), label in itertools.product(RESPONSES.items(), "BD"):
        query = CONJUNCTIVITIS + response.replace("</think>", " " * padding + "</think>")
        grade = grade_response(query, CONJUNCTIVITIS, label)
        grades[(kind, label)] = (asdict(grade), score_grade(grade, CONJUNCTIVITIS).metrics)
    kinds = [kind for kind, steps in plan for _ in range(steps)]
    firsts = {sum(steps for _, steps in plan[:index]) + 1: index for index in range(1, len(plan))}
    draw, call, sampled = random.Random(seed), 0, {}
    writer = SummaryWriter(str(run_dir / "tensorboard" / "run"))
    path = run_dir / "rollouts" / "rollouts-h-7.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for step, kind in enumerate(kinds, 1):
            stage_start = max((first for first in firsts if first <= step), default=1)
            drifting = step - stage_start < 3 and step > 3
            step_kinds = [
                (kinds[stage_start - 2] if drifting and index % 3 == 0 else kind, "D" if index % 4 == 2 else "B")
                for index in range(calls)
            ]
            for index, each in enumerate(step_kinds):
                call += 1
                if draw.random() < 0.5:
                    when = START + (step - 1) * STEP_SECONDS + index * 40 / calls
                    line = {
                        "time": when,
                        "call": call,
                        "host": "h",
                        "pid": 7,
                        "prompt": CONJUNCTIVITIS,
                        "label": each[1],
                    }
                    handle.write(json.dumps({**line, "behaviour": each[0], **grades[each][0]}) + "\n")
                    sampled[step] = sampled.get(step, 0) + 1
            if logged_until is None or step <= logged_until:
                for key in METRICS:
                    value = sum(grades[each][1][key] for each in step_kinds) / calls
                    writer.add_scalar(f"train/{key}", value, step, walltime=START + (step - 1) * STEP_SECONDS + 50)
    writer.close()
    return sampled


def analyze_run(run_dir: Path, out: Path, *flags: str) -> dict:
    assert analyze_main([str(run_dir), "--output", str(out), *flags]) == 0
    return json.loads((out / "timeline.json").read_text(encoding="utf-8"))


def test_a_relapse_gives_eight_stages_in_order_as_docs_dynamics_shows(tmp_path, capsys):
    write_run(tmp_path / "relapse")
    timeline = analyze_run(tmp_path / "relapse", tmp_path / "relapse-out")
    assert [stage["name"] for stage in timeline["stages"]] == RELAPSE_STAGES
    firsts = [1, 9, 17, 25, 33, 39, 45, 53]
    assert [stage["first"] for stage in timeline["stages"]] == pytest.approx(firsts, abs=2)
    example = (REPO / "docs" / "dynamics.md").read_text(encoding="utf-8").split("## Example")[1]
    command = "$ python -m med_rlvr_plugin.analyze /tmp/relapse --output /tmp/relapse-out\n"
    shown = example.split(command)[1].split("```")[0]
    assert capsys.readouterr().out == shown.replace("/tmp/", f"{tmp_path}/")


def test_window_and_min_steps_count_training_steps_not_logged_points():
    """Eight stages of 8 steps, logged every 4 steps (OpenRLHF --logger.logging_steps 4): two points a
    stage. The default window of 5 steps holds one point, and two points span 8 steps, more than the
    default --min-steps 3; counted in points, the window held 20 steps and each stage was a blip."""
    order = [
        "format_failure",
        "verbose_formatter",
        "concise_structurer",
        "direct_answer_hacker",
        "format_failure",
        "direct_answer_hacker",
    ]
    order += ["step_by_step_exploit", "concise_structurer"]
    series = [(step, {order[(step - 1) // 8]: 1.0}) for step in range(4, 65, 4)]
    stages = stage_timeline(series, window=5, min_steps=3)
    assert [(stage.name, stage.first_step, stage.last_step) for stage in stages] == [
        (name, 8 * index + 4, 8 * index + 8) for index, name in enumerate(RELAPSE_STAGES)
    ]
    # A blip of one logged point stands for 4 steps: it is a stage under --min-steps 4, not under 5.
    blip = [(step, {"direct_answer_hacker" if step == 48 else "concise_structurer": 1.0}) for step in range(4, 97, 4)]
    assert len(stage_timeline(blip, window=1, min_steps=4)) == 3
    assert len(stage_timeline(blip, window=1, min_steps=5)) == 1


def test_samples_after_the_last_log_are_warned_about_and_placed_at_their_own_steps(tmp_path, capsys):
    """A killed job: the events stop at step 50 of 60; the samples of steps 51-60 keep their steps."""
    sampled = write_run(tmp_path / "run", logged_until=50)
    timeline = analyze_run(tmp_path / "run", tmp_path / "out")
    err = capsys.readouterr().err
    tail = sum(count for step, count in sampled.items() if step > 50)
    assert "med-rlvr analyze: warning: the TensorBoard events end at step 50 (" in err
    assert f"before {tail} rollout sample(s)" in err and f"{tail} placed at steps 51-60 by their process's" in err
    per_step = {int(x): count for x, count in timeline["rollout_samples_per_x"].items()}
    assert sum(count for x, count in per_step.items() if x > 50) == tail
    for step in range(51, 61):  # only samples at a step's first or last call can land a step off
        assert abs(per_step.get(step, 0) - sampled[step]) <= 2, (step, per_step, sampled)
    assert [stage["name"] for stage in timeline["stages"]][-2:] == RELAPSE_STAGES[-2:]
    assert timeline["stages"][-1]["last"] == 60
    assert "the TensorBoard events end at step 50" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_bad_lines_are_skipped_and_counted_with_file_and_line_and_strict_refuses_them(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, plan=[("verbose_formatter", 4), ("concise_structurer", 4)])
    samples = run / "rollouts" / "rollouts-h-7.jsonl"
    lines = samples.read_bytes().splitlines(keepends=True)
    lines[3:3] = [b"\n", lines[4][:40] + b"\n", b'{"time": 1, "note": "x"}\n', b'{"time": "\xff"}\n']
    samples.write_bytes(b"".join(lines))
    (run / "rollouts" / "notes.jsonl").write_text("remember to check step 5\n", encoding="utf-8")
    log = run / "eval" / "model" / "samples_medqa_2026-12-01T10-00-00.000001.jsonl"
    write_lines(log, [lm_eval_line(0, RESPONSES["concise_structurer"])])
    log.write_bytes(log.read_bytes() + b'{"doc": "caf\xe9"}\n')
    timeline = analyze_run(run, tmp_path / "out")
    assert timeline["bad_lines"] == 5 and [stage["name"] for stage in timeline["stages"]][-1] == STAGES[2]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    for where in [
        f"{samples}:5: not JSON",
        f"{samples}:6: not a rollout sample (KeyError: 'reward')",
        f"{samples}:7: not UTF-8 (byte 0xff at column 11)",
        f"{run / 'rollouts' / 'notes.jsonl'}:1: not JSON",
        f"{log}:2: not UTF-8 (byte 0xe9 at column 13)",
    ]:
        assert where in report, where
    assert "skipped 5 bad line(s)" in capsys.readouterr().err
    assert analyze_main([str(run), "--output", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    notes = run / "rollouts" / "notes.jsonl"  # read first, by name
    assert err == (
        f"med-rlvr analyze: error: {notes}:1: not JSON (Expecting value); fix or remove the line, or leave out "
        "--strict to skip bad lines\n"
    )
    assert not (tmp_path / "strict").exists()


def test_non_utf8_in_an_eval_log_under_strict_is_one_error_line(tmp_path, capsys):
    log = tmp_path / "run" / "eval" / "model" / "samples_medqa_2026-12-01T10-00-00.000001.jsonl"
    write_lines(log, [lm_eval_line(0, RESPONSES["concise_structurer"])])
    log.write_bytes(log.read_bytes().replace(b"Ketotifen", b"Ketotif\xe9n"))
    assert analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--strict"]) == 1
    assert capsys.readouterr().err.startswith(f"med-rlvr analyze: error: {log}:1: not UTF-8 (byte 0xe9 at column ")


@pytest.mark.integration
def test_peak_memory_does_not_grow_with_the_sample_files(tmp_path):
    """The same 40 steps with 40 and 400 calls a step (about 1 and 10 MiB of samples): the samples are
    streamed, so the larger run needs no more memory (benchmarks/bench_analyze.py measures up to 1 GiB)."""
    peaks = []
    for calls in (40, 400):
        run = tmp_path / f"run{calls}"
        write_run(run, plan=[("verbose_formatter", 20), ("direct_answer_hacker", 20)], calls=calls, padding=100)
        tracemalloc.start()
        analyze_run(run, tmp_path / f"out{calls}")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    size = (tmp_path / "run400" / "rollouts" / "rollouts-h-7.jsonl").stat().st_size
    assert size > 8 * 2**20
    assert peaks[1] < peaks[0] + 2**20, peaks  # holding the samples would take more than the file's size


def stage_pixels(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1000, 500)
        return image.convert("RGB")


def test_every_step_plot_has_title_stage_strip_and_a_stage_key_that_fits(tmp_path):
    write_run(tmp_path / "run")
    analyze_run(tmp_path / "run", tmp_path / "out")
    colors = {tuple(int(code[i : i + 2], 16) for i in (1, 3, 5)) for code in STAGE_COLORS}
    for name in ("behaviour.png", "rates.png", "lengths.png"):
        image = stage_pixels(tmp_path / "out" / name)
        width, height = image.size
        strip = {image.getpixel((x, y)) for x in range(100, 760, 5) for y in range(30, 100)}
        key = {image.getpixel((x, y)) for x in range(780, width) for y in range(0, height)}
        assert colors <= strip and colors <= key, name  # the six stage colours: in the strip and in the key
        title = [image.getpixel((x, y)) for x in range(width) for y in range(0, 25)]
        assert sum(pixel < (100, 100, 100) for pixel in title) > 100, name  # dark text at the top
        edges = [image.getpixel((x, y)) for x in (0, 1, width - 2, width - 1) for y in range(height)]
        assert set(edges) == {(255, 255, 255)}, name  # nothing runs off either side


def test_the_reward_file_numbers_its_calls_and_closes_its_file_when_sampling_stops(monkeypatch, tmp_path):
    reward_func = load_reward_file(
        monkeypatch,
        {"MED_RLVR_ROLLOUT_SAMPLES": "1", "MED_RLVR_ROLLOUT_DIR": str(tmp_path), "MED_RLVR_ROLLOUT_MAX_MB": "0.002"},
    )
    for _ in range(20):
        reward_func([CONJUNCTIVITIS + RESPONSES["concise_structurer"]], [CONJUNCTIVITIS], ["B"])
    (path,) = tmp_path.glob("rollouts-*.jsonl")
    calls = [json.loads(line)["call"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert calls == list(range(1, len(calls) + 1)) and 0 < len(calls) < 20
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(path.resolve()) not in open_files


def test_calls_written_out_of_order_by_threads_and_a_restarted_count_keep_the_steps():
    """Ten calls a step, every one sampled; threads swap neighbouring lines; the events stop at step 10 of
    14. Then another process with the same host and pid (the same file) counts from 1 again."""
    grade = grade_response(CONJUNCTIVITIS + RESPONSES["concise_structurer"], CONJUNCTIVITIS, "B")
    score = score_grade(grade, CONJUNCTIVITIS)

    def sample(step, call, offset=0.0):
        when = START + (step - 1) * STEP_SECONDS + offset + call % 10
        return {"time": when, "call": call, "file": "f", "class": score.behaviour, "logs": score.metrics,
                "grade": grade, "label": "B", "why": score.reason}  # fmt: skip

    first = [sample(1 + (call - 1) // 10, call) for call in range(1, 141)]
    first[20:22] = first[21], first[20]
    second = [sample(15 + (call - 1) // 10, call, 5.0) for call in range(1, 41)]  # steps 15-18, none logged
    logged = [(START + (step - 1) * STEP_SECONDS + 50, step) for step in range(1, 11)]
    placed = place_samples(lambda count: iter(first + second), logged, 50)
    assert placed.counts == {step: 10 for step in range(1, 15)} | {11: 50}
    assert (placed.tail, placed.estimated, placed.tail_steps) == (80, 40, (11, 14))


@pytest.mark.integration
def test_the_memory_benchmark_runs_as_docs_development_gives_it(tmp_path):
    """`python benchmarks/bench_analyze.py`, on small sizes: its table, and its temporary runs deleted."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(REPO / "benchmarks" / "bench_analyze.py"), "--sizes", "1", "4"]
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ") and "MiB |" in line]
    assert [row[0] for row in rows] == ["| 1 MiB", "| 4 MiB"] and rows[0][3] == "(baseline)"
    assert float(rows[1][5].rstrip(" |")) < 1.25  # the peak memory's ratio to the 1 MiB run's
    assert list(tmp_path.iterdir()) == []
