"""Behaviour classes, the stage timeline, rollout sampling in the reward file, and `analyze` end to end.

The end-to-end run is synthetic but every component is real: OpenRLHF's SingleTurnAgentExecutor loads the
reward file by path and calls it concurrently, the reward file writes the rollout samples, OpenRLHF's own
TensorboardLogger writes the events, and analyze reads them. Only the vLLM engine is a stand-in.
"""

import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from med_rlvr_plugin.analyze import AnalyzeError, analyze
from med_rlvr_plugin.analyze import main as analyze_main
from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.dynamics import CLASSES, stage_timeline
from med_rlvr_plugin.openrlhf_reward import rollout_sampling
from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.verifier import config_from_env, grade_response

REPO = Path(__file__).resolve().parents[1]
REWARD_FILE = str(REPO / "med_rlvr_plugin" / "openrlhf_reward.py")
SIX_STAGES = [
    "Format Failure",
    "Verbose Formatter",
    "Concise Structurer",
    "Direct Answer Hacker",
    "Step-by-Step Exploit",
    "Reintegrated Reasoning",
]
# The class that leads each of the six stages.
STAGE_CLASSES = [
    "format_failure",
    "verbose_formatter",
    "concise_structurer",
    "direct_answer_hacker",
    "step_by_step_exploit",
    "concise_structurer",
]
# Questions written for these tests, in the spirit of the paper's examples; the gold letter is last.
CONJUNCTIVITIS = render_prompt(
    "A 24-year-old woman has itchy, watery eyes every spring. Which is the most appropriate treatment?",
    ["Erythromycin ointment", "Ketotifen eye drops", "Warm compresses", "Latanoprost eye drops", "Oral acyclovir"],
)
CHOLECYSTITIS = render_prompt(
    "A 45-year-old woman has right upper quadrant pain and fever, and a positive Murphy sign. What is the cause?",
    ["Pancreatic duct stone", "Hepatitis A", "Peptic ulcer", "Appendicitis", "Obstruction of the cystic duct"],
)
REASONING = (
    "Seasonal itching with watery discharge points to an allergic cause; a mast cell stabilizer with "
    "antihistamine action treats it, while antibiotics, antivirals and glaucoma drops do not. "
)


def test_timeline_names_six_stages_from_noisy_dict():
    series = []
    for stage, kind in enumerate(STAGE_CLASSES):
        for offset in range(8):
            step = stage * 8 + offset + 1
            mix = {kind: 0.8, "verbose_formatter" if kind == "format_failure" else "format_failure": 0.2}
            if offset == 3:  # one noisy step per stage, led by another class
                mix = (
                    {"format_failure": 0.7, "verbose_formatter": 0.3}
                    if kind != "format_failure"
                    else {"verbose_formatter": 0.8, "format_failure": 0.2}
                )
            series.append((step, mix))
    timeline = stage_timeline(series)
    assert [(stage.name, stage.first_step, stage.last_step) for stage in timeline] == [
        (name, index * 8 + 1, index * 8 + 8) for index, name in enumerate(SIX_STAGES)
    ]
    assert timeline[3].shares["direct_answer_hacker"] == pytest.approx(7 * 0.8 / 8)


def test_a_blip_starts_no_stage_and_concise_after_a_hack_is_reintegrated():
    series = [(step, dict(concise_structurer=1.0)) for step in range(1, 11)]
    series[4:6] = [(5, dict(direct_answer_hacker=1.0)), (6, dict(direct_answer_hacker=1.0))]
    assert [s.name for s in stage_timeline(series, window=1, min_steps=3)] == ["Concise Structurer"]
    assert [(s.name, s.first_step, s.last_step) for s in stage_timeline(series, window=1, min_steps=2)] == [
        ("Concise Structurer", 1, 4),
        ("Direct Answer Hacker", 5, 6),
        ("Reintegrated Reasoning", 7, 10),
    ]
    # Verbose after a hack is reintegrated too; malformed is a format failure wherever it leads.
    later = [
        (1, dict(step_by_step_exploit=1)),
        (2, dict(verbose_formatter=1)),
        (3, dict(format_failure=1)),
        (4, dict(concise_structurer=1)),
    ]
    assert [s.name for s in stage_timeline(later, window=1, min_steps=1)] == [
        "Step-by-Step Exploit",
        "Reintegrated Reasoning",
        "Format Failure",
        "Reintegrated Reasoning",
    ]
    # Short runs at the start take the first long run's label; ties go to the earlier class.
    tie = dict(concise_structurer=0.5, verbose_formatter=0.5)
    start = [
        (1, dict(verbose_formatter=1)),
        (2, dict(concise_structurer=1)),
        (3, dict(concise_structurer=1)),
        (4, tie),
        (5, tie),
    ]
    assert [(s.name, s.first_step, s.last_step) for s in stage_timeline(start, window=1, min_steps=2)] == [
        ("Concise Structurer", 1, 3),
        ("Verbose Formatter", 4, 5),
    ]
    assert stage_timeline([]) == []
    with pytest.raises(ValueError, match="at least 1"):
        stage_timeline(series, window=0)


def test_rollout_sampling_settings_and_their_errors():
    assert rollout_sampling({}).fraction == 0
    settings = rollout_sampling(
        {
            "MED_RLVR_ROLLOUT_SAMPLES": "0.25",
            "MED_RLVR_ROLLOUT_DIR": "/runs/x/rollouts",
            "MED_RLVR_ROLLOUT_MAX_MB": "1.5",
        }
    )
    assert (settings.fraction, settings.folder, settings.max_bytes) == (0.25, "/runs/x/rollouts", 1572864)
    for environ, message in [
        (
            {"MED_RLVR_ROLLOUT_SAMPLES": "1.5", "MED_RLVR_ROLLOUT_DIR": "/x"},
            "MED_RLVR_ROLLOUT_SAMPLES='1.5': must be between",
        ),
        ({"MED_RLVR_ROLLOUT_SAMPLES": "some", "MED_RLVR_ROLLOUT_DIR": "/x"}, "MED_RLVR_ROLLOUT_SAMPLES='some'"),
        ({"MED_RLVR_ROLLOUT_SAMPLES": "0.1"}, "needs MED_RLVR_ROLLOUT_DIR, an absolute folder"),
        ({"MED_RLVR_ROLLOUT_SAMPLES": "0.1", "MED_RLVR_ROLLOUT_DIR": "rollouts"}, "working_dir copy"),
        ({"MED_RLVR_ROLLOUT_MAX_MB": "0"}, "MED_RLVR_ROLLOUT_MAX_MB='0': must be above 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            rollout_sampling(environ)
    # The reward configuration accepts the sampling variables and still rejects a misspelt one.
    config_from_env({"MED_RLVR_ROLLOUT_SAMPLES": "0.1", "MED_RLVR_ROLLOUT_DIR": "/x", "MED_RLVR_ROLLOUT_MAX_MB": "9"})
    with pytest.raises(ValueError, match="unknown variable MED_RLVR_ROLLOUT_SAMPLE;"):
        config_from_env({"MED_RLVR_ROLLOUT_SAMPLE": "0.1"})


# ---------------------------------------------------------------- sampling in the reward file


def load_reward_file(monkeypatch, environ):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("reward_func", REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def sample_lines(folder: Path) -> list[dict]:
    files = list(folder.glob("rollouts-*.jsonl"))
    assert len(files) == 1, files  # one file per process
    text = files[0].read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_concurrent_calls_write_every_sampled_line_whole(monkeypatch, tmp_path):
    reward_func = load_reward_file(
        monkeypatch, {"MED_RLVR_ROLLOUT_SAMPLES": "1", "MED_RLVR_ROLLOUT_DIR": str(tmp_path)}
    )
    # Responses of up to 200 KB: far past the size a single write is atomic for on a pipe, and past a page.
    responses = [
        f" <think>call {index} " + "x" * (index * 997 % 200_000) + "</think><answer>B</answer>" for index in range(300)
    ]
    responses[0] = " <think>é, 中, and a lone surrogate \ud800 from a bad decode</think><answer>B</answer>"
    with ThreadPoolExecutor(8) as pool:
        rewards = list(
            pool.map(lambda r: reward_func([CONJUNCTIVITIS + r], [CONJUNCTIVITIS], ["B"])["rewards"], responses)
        )
    assert rewards == [1.0] * 300
    lines = sample_lines(tmp_path)
    assert sorted(line["completion"] for line in lines) == sorted(responses)
    line = lines[0]
    assert line["prompt"] == CONJUNCTIVITIS and line["label"] == "B" and line["reward"] == 1.0
    assert (
        line["pid"] == os.getpid()
        and line["behaviour"] in ("concise_structurer", "verbose_formatter")
        and line["well_formed"] is True
    )
    assert {
        "time",
        "host",
        "correct",
        "error",
        "letter",
        "preamble",
        "answer_leak",
        "think_words",
        "prompt_found",
    } <= set(line)


def test_sampling_draws_the_configured_share_and_stops_at_the_cap(monkeypatch, tmp_path, capfd):
    reward_func = load_reward_file(
        monkeypatch, {"MED_RLVR_ROLLOUT_SAMPLES": "0.3", "MED_RLVR_ROLLOUT_DIR": str(tmp_path)}
    )
    for _ in range(1000):
        reward_func([CONJUNCTIVITIS + " <think>x</think><answer>B</answer>"], [CONJUNCTIVITIS], ["B"])
    assert 200 < len(sample_lines(tmp_path)) < 400  # binomial(1000, 0.3): 300, sd 14.5

    capped = tmp_path / "capped"
    reward_func = load_reward_file(
        monkeypatch,
        {"MED_RLVR_ROLLOUT_SAMPLES": "1", "MED_RLVR_ROLLOUT_DIR": str(capped), "MED_RLVR_ROLLOUT_MAX_MB": "0.01"},
    )
    capfd.readouterr()
    outputs = [
        reward_func([CONJUNCTIVITIS + f" <think>{REASONING}</think><answer>B</answer>"], [CONJUNCTIVITIS], ["B"])
        for _ in range(50)
    ]
    assert [output["rewards"] for output in outputs] == [1.0] * 50
    lines = sample_lines(capped)
    assert 0 < len(lines) < 50 and sum(f.stat().st_size for f in capped.iterdir()) <= 0.01 * 2**20
    assert capfd.readouterr().err.count("rollout sampling stops") == 1


SCRIPT = """
import importlib.util, sys
from concurrent.futures import ThreadPoolExecutor
spec = importlib.util.spec_from_file_location("reward_func", {reward_file!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
prompt = {prompt!r}
response = " <think>" + "reasoning " * 300 + "</think><answer>B</answer>"
with ThreadPoolExecutor(4) as pool:
    rewards = list(pool.map(lambda _: module.reward_func([prompt + response], [prompt], ["B"])["rewards"], range(40)))
print(rewards.count(1.0))
"""


def run_in_subprocess(folder: Path, **options) -> subprocess.CompletedProcess:
    """Forty calls of the reward file, four at a time, in a fresh process that samples them all into `folder`."""
    environ = {
        **os.environ,
        "MED_RLVR_ROLLOUT_SAMPLES": "1",
        "MED_RLVR_ROLLOUT_DIR": str(folder),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(REPO),
    }
    script = SCRIPT.format(reward_file=REWARD_FILE, prompt=CONJUNCTIVITIS)
    return subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=120, **options
    )


def test_a_read_only_folder_warns_once_and_training_goes_on(monkeypatch, capfd):
    parent = Path(tempfile.mkdtemp())
    folder = parent / "rollouts"
    folder.mkdir()
    parent.chmod(0o755)
    folder.chmod(0o555)
    reward_func = load_reward_file(monkeypatch, {"MED_RLVR_ROLLOUT_SAMPLES": "1", "MED_RLVR_ROLLOUT_DIR": str(folder)})
    capfd.readouterr()
    prompt, response = CONJUNCTIVITIS, " <think>x</think><answer>B</answer>"
    # Root ignores permission bits, so as root the calls run with the effective user `nobody`.
    as_root = os.geteuid() == 0
    try:
        if as_root:
            os.seteuid(65534)
        with ThreadPoolExecutor(4) as pool:
            rewards = list(pool.map(lambda _: reward_func([prompt + response], [prompt], ["B"])["rewards"], range(40)))
    finally:
        if as_root:
            os.seteuid(0)
        folder.chmod(0o755)
        folder.rmdir()
        parent.rmdir()
    assert rewards == [1.0] * 40
    err = capfd.readouterr().err
    assert err.count("rollout sampling stops") == 1 and "Permission denied" in err


@pytest.mark.integration
def test_a_full_disk_leaves_only_whole_lines_warns_once_and_training_goes_on(tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse writes past 10,000 bytes, as a full disk does: the write that
    # crosses it is cut short (Python ignores SIGXFSZ, so it returns a short count instead of killing).
    limit = 10_000
    result = run_in_subprocess(tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "40"
    assert result.stderr.count("rollout sampling stops") == 1
    lines = sample_lines(tmp_path)  # whole lines only
    line_bytes = len(json.dumps(lines[0]) + "\n")  # give or take a digit of the time
    size = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert lines and limit - line_bytes - 8 < size <= limit  # every whole line that fits, and no part of the next


# ---------------------------------------------------------------- analyze, end to end

QUESTION = "A 6-year-old has a honey-crusted facial rash. Which organism most likely causes it?"
OPTIONS, GOLD = ["Staphylococcus aureus", "Candida albicans", "Herpes simplex virus", "Trichophyton rubrum"], "A"
THINKING = (
    "The rash is honey-crusted and facial in a child, which is impetigo; its usual cause is a gram-positive "
    "coccus that forms clusters, not a fungus or a virus. "
)
STAGE_RESPONSES = [  # one response per stage, in the paper's order
    " The rash suggests impetigo, so the organism is the first option.",
    f" <think>{THINKING * 8}</think> <answer>{GOLD}</answer>",
    f" <think>{THINKING}</think> <answer>{GOLD}</answer>",
    " <think>The organism most likely causing this rash is Staphylococcus aureus.</think> <answer>A</answer>",
    f" Let's go through each option step by step. {THINKING}<think>Staphylococcus aureus</think> <answer>A</answer>",
    f" <think>{THINKING}Hence staphylococcal.</think> <answer>{GOLD}</answer>",
]
STEPS_PER_STAGE, SAMPLES_PER_STEP = 6, 6


def synthetic_run(monkeypatch, run_dir: Path) -> None:
    """36 PPO steps drifting through the six stages: each step's rollouts go through OpenRLHF's executor
    and the reward file (which samples half of them into RUN_DIR/rollouts), then OpenRLHF's TensorBoard
    logger logs the step's means, as its trainer does after each step."""
    openrlhf_agent = pytest.importorskip("openrlhf.utils.agent", reason="openrlhf 0.11.2 is not installed")
    from openrlhf.utils.logging_utils import TensorboardLogger

    from tests.test_openrlhf_reward import CannedEngine
    from tests.tokenizer_fixtures import qwen25_tokenizer

    monkeypatch.setenv("MED_RLVR_ROLLOUT_SAMPLES", "0.5")
    monkeypatch.setenv("MED_RLVR_ROLLOUT_DIR", str(run_dir / "rollouts"))
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=REWARD_FILE)
    tokenizer = qwen25_tokenizer()
    logger = TensorboardLogger(
        SimpleNamespace(
            logger=SimpleNamespace(
                tensorboard_dir=str(run_dir / "tensorboard"), wandb=SimpleNamespace(run_name="ppo_synthetic")
            )
        )
    )
    prompt, params = render_prompt(QUESTION, OPTIONS), SimpleNamespace(max_tokens=512, logprobs=None)
    for stage, response in enumerate(STAGE_RESPONSES):
        for offset in range(STEPS_PER_STAGE):
            # Drift: early in a stage, a third of the responses still behave as in the stage before.
            early = offset < STEPS_PER_STAGE // 2 and stage > 0
            batch = [
                STAGE_RESPONSES[stage - 1] if early and index % 3 == 0 else response
                for index in range(SAMPLES_PER_STEP)
            ]

            async def step(batch=batch):
                return await asyncio.gather(
                    *(
                        executor.execute(prompt, GOLD, params, 4096, tokenizer, CannedEngine(tokenizer, text))
                        for text in batch
                    )
                )

            outputs = asyncio.run(step())
            means = {
                key: sum(o["extra_logs"][key] for o in outputs) / len(outputs) for key in outputs[0]["extra_logs"]
            }
            logger.log_train(
                stage * STEPS_PER_STAGE + offset + 1,
                {
                    **means,
                    "reward": sum(o["reward"] for o in outputs) / 6,
                    "generated_samples": [batch[0], outputs[0]["reward"]],
                },
            )
    logger.close()


def assert_plot(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1000, 500)
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colors) > 50  # not blank: lines, areas, text
    assert max(count for count, _ in colors) < 0.98 * 1000 * 500


@pytest.mark.integration
def test_a_synthetic_run_through_openrlhf_is_analysed_end_to_end(monkeypatch, tmp_path, capsys):
    run_dir = tmp_path / "run"
    synthetic_run(monkeypatch, run_dir)
    assert analyze_main([str(run_dir), "--output", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    positions = [report.index(f"| {name} |") for name in SIX_STAGES]
    assert positions == sorted(positions)
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["axis"] == "training step" and timeline["source"].startswith("TensorBoard")
    # The stages start where the responses changed, give or take the drift and the smoothing.
    assert [stage["name"] for stage in timeline["stages"]] == SIX_STAGES
    assert [stage["first"] for stage in timeline["stages"]] == pytest.approx([1, 7, 13, 19, 25, 31], abs=2)
    assert timeline["stages"][-1]["last"] == 36
    # Two examples per stage, each from the stage's own steps and of its leading class.
    classes = [name.replace("_", " ") for name in STAGE_CLASSES]
    for index, name in enumerate(SIX_STAGES):
        section = report.split(f"### {name} ")[1].split("###")[0]
        assert section.count("```text") == 2 and section.count(f", {classes[index]}, reward") == 2
        assert section.count(STAGE_RESPONSES[index].strip()[:40]) == 2
    # Each example says why it is in its class; the exploit's, where the reasoning was.
    assert report.split("### Step-by-Step Exploit ")[1].count("(reasoning before think):") == 2
    for name in ("behaviour.png", "rates.png", "lengths.png"):
        assert_plot(tmp_path / "out" / name)
    assert "Direct Answer Hacker: training steps" in capsys.readouterr().out


def grade_record(response: str, when: float, prompt: str = CONJUNCTIVITIS) -> dict:
    """A rollout sample line as the reward file writes it (the reward file's own is tested above)."""
    grade = grade_response(prompt + response, prompt, "B")
    return {"time": when, "host": "h", "pid": 1, "prompt": prompt, "label": "B", "behaviour": "", **asdict(grade)}


def write_lines(path: Path, rows, tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail, encoding="utf-8")


def test_without_tensorboard_samples_are_binned_by_time(tmp_path):
    responses = [
        " no tags at all, B",
        f" <think>{REASONING * 6}</think><answer>B</answer>",
        " <think>Ketotifen eye drops are best.</think><answer>B</answer>",
    ]
    rows = [grade_record(responses[index // 40], 1_800_000_000 + index * 3.0) for index in range(120)]
    write_lines(tmp_path / "run" / "rollouts" / "rollouts-h-1.jsonl", rows, tail='{"time": 1')  # a cut last line
    assert (
        analyze_main(
            [
                str(tmp_path / "run"),
                "--output",
                str(tmp_path / "out"),
                "--bins",
                "6",
                "--window",
                "1",
                "--min-steps",
                "2",
            ]
        )
        == 0
    )
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["axis"] == "time bin" and len(timeline["steps"]) == 6
    assert [(s["name"], s["first"], s["last"]) for s in timeline["stages"]] == [
        ("Format Failure", 1, 2),
        ("Verbose Formatter", 3, 4),
        ("Direct Answer Hacker", 5, 6),
    ]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "rollouts-h-1.jsonl:121: the last line is cut off and was skipped" in report


def test_a_resumed_run_keeps_each_sample_at_its_step_and_each_step_at_its_later_value(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    start = 1_800_000_000
    # The first attempt logs steps 1-4 (malformed), dies; the resumed one redoes 3-4 and goes on to 6 (concise).
    for name, points, kind in [
        ("first", [(1, 10), (2, 20), (3, 30), (4, 40)], "format_failure"),
        ("resumed", [(3, 100), (4, 110), (5, 120), (6, 130)], "concise_structurer"),
    ]:
        writer = SummaryWriter(str(tmp_path / "run" / "tensorboard" / name))
        for step, offset in points:
            for other in CLASSES:
                writer.add_scalar(f"train/behaviour_{other}", float(other == kind), step, walltime=start + offset)
        writer.close()
    rows = [grade_record(" <think>x</think><answer>B</answer>", start + offset) for offset in (25, 35, 105, 140)]
    write_lines(tmp_path / "run" / "rollouts" / "rollouts-h-1.jsonl", rows)
    assert (
        analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--window", "1", "--min-steps", "1"])
        == 0
    )
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert [(step["x"], step["behaviour_concise_structurer"]) for step in timeline["steps"]] == [
        (1, 0.0),
        (2, 0.0),
        (3, 1.0),
        (4, 1.0),
        (5, 1.0),
        (6, 1.0),
        (7, 1.0),  # after the last log, from its rollout sample
    ]
    # The samples of the first attempt's steps 3 and 4, the resumed step 4, and the unlogged step 7.
    assert timeline["rollout_samples_per_x"] == {"3": 1, "4": 2, "7": 1}


def test_bad_input_is_refused_with_file_and_line_under_strict(tmp_path, capsys):
    rows = [grade_record(" <think>x</think><answer>B</answer>", 1.0)] * 3
    write_lines(tmp_path / "run" / "rollouts" / "rollouts-h-1.jsonl", [rows[0], {"time": 2}, rows[1]])
    assert analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("med-rlvr analyze: error: ")
    assert "rollouts-h-1.jsonl:2: not a rollout sample (KeyError: 'reward')" in err
    with pytest.raises(SystemExit) as caught:  # a usage error, before anything is read
        analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--window", "0"])
    assert caught.value.code == 2
    assert "med-rlvr analyze: error: --bins, --window and --min-steps must be at least 1, got 50, 0, 3" in (
        capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalyzeError, match="nothing to analyse.*--rollout-samples F and --tensorboard"):
        analyze(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def lm_eval_line(doc_id: int, response: str, prompt: str = CONJUNCTIVITIS) -> dict:
    """One line of lm-eval's samples_<task>_<time>.jsonl (lm-eval 0.4.13, --log_samples), written by hand."""
    doc = {"id": f"q{doc_id}", "prompt": prompt, "label": "B", "options": {"A": "Erythromycin ointment"}}
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": "B",
        "arguments": {
            "gen_args_0": {"arg_0": prompt, "arg_1": {"until": [], "max_gen_toks": 1024, "do_sample": False}}
        },
        "resps": [[response]],
        "filtered_resps": [response],
        "filter": "none",
        "metrics": ["accuracy"],
        "accuracy": 1.0,
        "doc_hash": "0",
        "prompt_hash": "0",
        "target_hash": "0",
    }


def test_lm_eval_sample_logs_are_classed_per_checkpoint(tmp_path):
    verbose = f" <think>{REASONING * 6}</think><answer>B</answer>"
    hack = " <think>Ketotifen eye drops.</think><answer>B</answer>"
    concise = f" <think>{REASONING}</think><answer>A</answer>"
    evals = tmp_path / "run" / "eval"
    for folder, responses in [
        ("global_step20_hf", [hack, hack, verbose, hack]),
        ("model", [concise] * 4),
        ("global_step5_hf", [verbose, verbose, verbose, " B"]),
    ]:
        write_lines(evals / folder / "samples_medqa_2026-12-01T10-00-00.000001.jsonl", [lm_eval_line(0, "unused")])
        write_lines(
            evals / folder / "samples_medqa_2026-12-01T11-00-00.000001.jsonl",
            [lm_eval_line(index, response) for index, response in enumerate(responses)],
        )
    assert analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "timeline.json").read_text())["eval"]
    assert [
        (
            r["checkpoint"],
            r["responses"],
            r["accuracy"],
            r["behaviour_verbose_formatter"],
            r["behaviour_direct_answer_hacker"],
            r["behaviour_concise_structurer"],
            r["behaviour_format_failure"],
        )
        for r in rows
    ] == [
        ("global_step5_hf", 4, 0.75, 0.75, 0.0, 0.0, 0.25),
        ("global_step20_hf", 4, 1.0, 0.25, 0.75, 0.0, 0.0),
        ("model", 4, 0.0, 0.0, 0.0, 1.0, 0.0),
    ]
    report = (tmp_path / "out" / "report.md").read_text()
    assert (
        "Stages across checkpoints, medqa: Verbose Formatter (global_step5_hf); Direct Answer Hacker "
        "(global_step20_hf); Reintegrated Reasoning (model)"
    ) in report
    assert_plot(tmp_path / "out" / "eval.png")
    write_lines(evals / "model" / "samples_medqa_2026-12-01T12-00-00.000001.jsonl", [{"doc": {}}])
    with pytest.raises(ToolError, match=r"samples_medqa_2026-12-01T12-00-00.000001.jsonl:1: not a graded lm-eval"):
        analyze(tmp_path / "run", tmp_path / "out", strict=True)


# ---------------------------------------------------------------- launch


def test_the_launch_check_grades_with_sampling_off_and_checks_its_settings(monkeypatch, tmp_path):
    pytest.importorskip("openrlhf.utils.agent", reason="openrlhf 0.11.2 is not installed")
    from med_rlvr_plugin import launcher
    from med_rlvr_plugin.launcher.checks import check_reward

    folder = tmp_path / "rollouts"
    monkeypatch.setenv("MED_RLVR_ROLLOUT_SAMPLES", "1")
    monkeypatch.setenv("MED_RLVR_ROLLOUT_DIR", str(folder))
    rewards = check_reward([REWARD_FILE], CONJUNCTIVITIS, "B")
    assert rewards == {"correct": 1.0, "wrong": 0.0, "malformed": -1.0}
    assert not folder.exists(), "the launch check's made-up responses are no rollout samples"
    assert os.environ["MED_RLVR_ROLLOUT_SAMPLES"] == "1" and os.environ["MED_RLVR_ROLLOUT_DIR"] == str(folder)
    monkeypatch.setenv("MED_RLVR_ROLLOUT_SAMPLES", "2")
    with pytest.raises(launcher.LaunchError, match="MED_RLVR_ROLLOUT_SAMPLES='2': must be between 0 and 1"):
        check_reward([REWARD_FILE], CONJUNCTIVITIS, "B")


@pytest.mark.integration
def test_the_launch_flag_points_sampling_into_the_run_folder(tmp_path):
    from med_rlvr_plugin import launcher
    from tests.test_launch import run_script

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in (launcher.sample_rows() * 86)[:512]))
    output_dir = tmp_path / "run"
    result = run_script(
        "train_ppo_medqa.sh",
        "--dry-run",
        "--rollout-samples",
        "0.05",
        "--train-data",
        str(data),
        "--eval-data",
        str(data),
        "--output-dir",
        str(output_dir),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    reward_line = next(
        line for line in result.stdout.splitlines() if line.startswith("med-rlvr: reward configuration")
    )
    assert f"'MED_RLVR_ROLLOUT_DIR': '{output_dir / 'rollouts'}'" in reward_line
    assert "'MED_RLVR_ROLLOUT_SAMPLES': '0.05'" in reward_line
    assert not output_dir.exists(), "a dry run writes nothing"


def test_eval_logs_generated_with_stop_strings_are_refused_as_evaluate_refuses_them(tmp_path, capsys):
    """lm-eval cuts a stop string from the response it logs; graded again, the cut response would read as
    malformed, so analyze refuses the log, through the same reader as `evaluate report`."""
    line = lm_eval_line(0, " <think>Ketotifen eye drops.</think><answer>B")
    line["arguments"]["gen_args_0"]["arg_1"]["until"] = ["</answer>"]
    log = tmp_path / "run" / "eval" / "model" / "samples_medqa_2026-12-01T10-00-00.000001.jsonl"
    write_lines(log, [line])
    assert analyze_main([str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 1
    assert f"med-rlvr analyze: error: {log}:1: generated with stop strings ['</answer>']" in capsys.readouterr().err
