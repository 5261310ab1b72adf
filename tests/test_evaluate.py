"""Evaluation: the statistics against hand-computed values, the report and comparison from hand-written lm-eval
sample logs, input errors, and lm-eval itself end to end on CPU (HF backend with a tiny random Qwen2; the plain
lm_eval CLI on the shipped tasks; the vLLM backend's argument handling with a stand-in engine)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from med_rlvr_plugin import analyze, evaluate, reward
from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.data import format_row
from med_rlvr_plugin.evaluate import EvalError, process_results, runner
from med_rlvr_plugin.evaluate.__main__ import main
from med_rlvr_plugin.evaluate.reports import compare, report
from med_rlvr_plugin.evaluate.statistics import (
    RESAMPLES,
    bounded_interval,
    count_interval,
    mcnemar_interval,
    mcnemar_p,
    mean_interval,
    paired_bootstrap,
    pass_at_k,
    wilson_interval,
)
from med_rlvr_plugin.launcher import SAMPLE_QUESTIONS, SAMPLE_SOURCE, sample_rows
from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.verifier import RewardConfig

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAMP = "2026-11-30T10-00-00.000001"

# Five MedQA-style questions and one response each, written so that every metric differs: right; right
# after a preamble (malformed in strict format); well formed and wrong; the right letter in a malformed
# response (relaxed accuracy only); right with a thinking block that only restates the option (a leak).
QUESTIONS = [
    (
        "A 23-year-old man has a swollen knee a week after urethral discharge. Which organism is most likely?",
        ["Staphylococcus aureus", "Neisseria gonorrhoeae", "Borrelia burgdorferi", "Streptococcus pyogenes"],
        "B",
        "step1",
    ),
    (
        "The ECG shows ST elevation in leads II, III and aVF. Which artery is occluded?",
        ["Left anterior descending", "Left circumflex", "Right coronary", "Left main"],
        "C",
        "step1",
    ),
    (
        "Antibodies against which target cause Graves disease?",
        ["Thyroid peroxidase", "The TSH receptor", "Thyroglobulin", "The acetylcholine receptor"],
        "B",
        "step1",
    ),
    (
        "Which drug blocks bacterial cell wall synthesis?",
        ["Gentamicin", "Ciprofloxacin", "Trimethoprim", "Ceftriaxone"],
        "D",
        "step2&3",
    ),
    (
        "A deficiency of which vitamin causes scurvy?",
        ["Vitamin C", "Vitamin B12", "Vitamin D", "Vitamin K"],
        "A",
        "step2&3",
    ),
]
RESPONSES = [
    " <think>Urethritis then monoarthritis in a young man points to gonococcus.</think> <answer>B</answer>",
    "Step by step. <think>Inferior leads are supplied by the right coronary artery.</think> <answer>C</answer>",
    " <think>Antibodies against thyroid peroxidase are common.</think> <answer>A</answer>",
    " <think>Beta-lactams block cell wall synthesis.</think> <answer>D</answer> Hope this helps.",
    " <think>Vitamin C</think> <answer>A</answer>",
]


def doc(index: int, question: str, options: list[str], label: str, **metadata) -> dict:
    return {
        "prompt": render_prompt(question, options),
        "label": label,
        "datasource": "medqa",
        "id": f"q{index}",
        "question": question,
        "options": options,
        "metadata": metadata,
    }


def log_line(doc_id: int, row: dict, responses: list[str]) -> dict:
    """One line of an lm-eval 0.4.13 generate_until sample log (loggers/evaluation_tracker.py's format)."""
    return {
        "doc_id": doc_id,
        "doc": row,
        "target": row["label"],
        "arguments": {
            "gen_args_0": {"arg_0": row["prompt"], "arg_1": {"until": [], "do_sample": False, "max_gen_toks": 1024}}
        },
        "resps": [responses],
        "filtered_resps": responses[:1],
        "filter": "none",
    }


def write_log(folder: Path, task: str, lines: list[dict], stamp: str = STAMP) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{task}_{stamp}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def fixed_model(folder: Path) -> Path:
    rows = [doc(i, q, options, label, meta_info=step) for i, (q, options, label, step) in enumerate(QUESTIONS)]
    write_log(
        folder,
        "medrlvr_medqa",
        [log_line(i, row, [text]) for i, (row, text) in enumerate(zip(rows, RESPONSES, strict=True))],
    )
    return folder


def right_or_wrong(folder: Path, right: list[bool], ids: range | None = None) -> Path:
    """A model whose response to question i names A (the gold letter) when right[i], else B."""
    lines = []
    for i in ids or range(len(right)):
        row = doc(i, f"Question {i}?", ["First", "Second", "Third", "Fourth"], "A")
        lines.append(log_line(i, row, [f" <think>Reasoning {i}.</think> <answer>{'A' if right[i] else 'B'}</answer>"]))
    write_log(folder, "medrlvr_medqa", lines)
    return folder


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (3, 5, 0.2307, 0.8824),
        (5, 5, 0.5655, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)


def test_mean_interval_is_the_t_interval():
    # [1..5]: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half width 2.776445 * sqrt(2.5) / sqrt(5) = 1.963243
    assert mean_interval([1, 2, 3, 4, 5]) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    assert mean_interval([7.0]) == (None, None)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 1 - 3 / 10),
        (4, 1, 4, 1.0),
        (4, 0, 4, 0.0),
        (10, 3, 5, 1 - 21 / 252),
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_mcnemar_exact_p():
    assert mcnemar_p(1, 5) == pytest.approx(2 * (1 + 6) / 64)  # 2 P(X <= 1), X ~ Binomial(6, 1/2)
    assert mcnemar_p(4, 1) == pytest.approx(2 * (1 + 5) / 32)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_paired_bootstrap():
    # 30 questions gained, 10 lost, 60 unchanged: mean 0.2, sd 0.6 -> normal interval 0.2 +- 1.96 * 0.06
    low, high, p = paired_bootstrap([1] * 30 + [-1] * 10 + [0] * 60)
    assert low == pytest.approx(0.2 - 1.96 * 0.06, abs=0.02) and high == pytest.approx(0.2 + 1.96 * 0.06, abs=0.02)
    assert p < 0.01
    assert paired_bootstrap([1] * 30 + [-1] * 10 + [0] * 60) == (low, high, p)  # seeded
    low, high, p = paired_bootstrap([0.0] * 8)  # no change on 8 questions is not "[0.0, 0.0]"
    assert low < 0 < high and p == 1.0
    assert paired_bootstrap([1, -1] * 50)[2] > 0.5


def test_bootstrap_p_is_bounded_by_the_resamples_and_agrees_with_its_interval():
    # every question gained: no resampled mean on the far side of 0, so p is the floor 2 / (B + 1), never 0
    low, high, p = paired_bootstrap([0.5, 0.25, 0.75, 1.0] * 10)
    assert p == pytest.approx(2 / (RESAMPLES + 1)) and 0 < low < high
    # p < 0.05 exactly when the interval excludes 0, over differences from clear to null
    for gained in range(0, 13):
        low, high, p = paired_bootstrap([0.5] * gained + [-0.5] * 4 + [0.0] * 20, seed=gained)
        assert (p < 0.05) == (low > 0 or high < 0), (gained, low, high, p)


def test_mcnemar_interval_agrees_with_the_test_and_never_collapses():
    for n in range(1, 13):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                low, high = mcnemar_interval(b, c, n)
                assert low < high and low <= (b - c) / n <= high, (b, c, n)
                assert (mcnemar_p(b, c) < 0.05) == (low > 0 or high < 0), (b, c, n, low, high)
    # the row: 5 of 5 questions gained, p = 2 / 32; the interval holds 0 (the bootstrap's was [+1, +1])
    low, high = mcnemar_interval(5, 0, 5)
    assert mcnemar_p(5, 0) == pytest.approx(0.0625) and low < 0 < high == 1.0
    assert mcnemar_interval(0, 0, 20) == pytest.approx((-0.1611, 0.1611), abs=5e-5)  # +- Wilson's 0 of 20


def test_intervals_keep_to_the_range_and_have_width():
    # k > 1: every response right on 3 questions is not certainty; Wilson's 3 of 3
    assert bounded_interval([1.0, 1.0, 1.0]) == pytest.approx((0.4385, 1.0), abs=5e-5)
    assert bounded_interval([0.0, 0.0, 0.0])[1] > 0.5
    # rewards in [-1, 1]: the interval of the rescaled shares
    low, high = bounded_interval([1.0, -1.0, 1.0, 1.0], -1.0, 1.0)
    assert -1 <= low < 0.5 < high <= 1
    # thinking words: the t interval of [0, 725.2] runs far below 0 ("362.6 [-9.8, 735.0]"-like); the
    # log-scale one stays positive and holds the mean
    assert mean_interval([0, 725.2])[0] < 0
    low, high = count_interval([0, 725.2])
    assert 0 < low < 362.6 < high
    assert count_interval([0, 0, 0]) == (0.0, 0.0) and count_interval([5]) == (None, None)


# ---------------------------------------------------------------- grading hooks, report, compare


def test_process_results_grades_like_the_paper():
    row = doc(0, *QUESTIONS[0][:3])
    assert process_results(row, [RESPONSES[0]])["accuracy"] == 1.0
    # two responses (repeats through a take_first_k filter): the metrics are their means
    wrong = RESPONSES[0].replace("<answer>B", "<answer>C")
    graded = process_results(row, [[RESPONSES[0], wrong]])
    assert graded["accuracy"] == 0.5 and graded["well_formed"] == 1.0 and graded["reward"] == 0.5
    # a chat row: the text sent is the user message
    chat = {**row, "prompt": [{"role": "user", "content": "Q?\nA. x\nB. y"}]}
    assert evaluate.doc_to_text(chat) == "Q?\nA. x\nB. y"


def test_strict_accuracy_and_reward_read_off_the_lenient_grade_equal_the_verifier_s():
    """grade_texts grades once, in lenient format, and reads strict format off that grade: for responses of
    every shape under eight reward configurations, the same verdicts as `grade_response` in strict format."""
    from dataclasses import replace

    from med_rlvr_plugin.verifier import grade_response

    think = "The findings point to one mechanism rather than the others, so the answer follows."
    shapes = [
        " <think>{think}</think> <answer>{gold}</answer>",
        " <think>{think}</think> <answer>{wrong}</answer>",
        "Step by step. <think>{think}</think> <answer>{gold}</answer>",
        "Step by step. <think>{think}</think> <answer>{wrong}</answer>",
        "Step by step. <think>{think}</think> <answer>{gold}</answer> Hope this helps.",
        "Step by step. <think>{think}",
        " <think>{gold}</think> <answer>{gold}</answer>",
        "So: <think>{gold}</think> <answer>{gold}</answer>",
        " <think>Short.</think> <answer>{gold}</answer>",
        "Hi <think>Short.</think> <answer>{wrong}</answer>",
        " <think>{think}</think> <answer>{gold} or {wrong}</answer>",
        "\n  <think>{think}</think>\n<answer>({gold})</answer>",
        "no tags at all, answer {gold}",
        "",
    ]
    configs = [
        RewardConfig(scheme=scheme, format=fmt, **penalties)
        for scheme in ("neutral", "penalized")
        for fmt in ("lenient", "strict")
        for penalties in ({}, {"leak_penalty": 0.5, "min_think_words": 5, "short_think_penalty": 0.5})
    ]
    checked = 0
    for row in sample_rows():
        gold = row["label"]
        wrong = "A" if gold != "A" else "B"
        for shape in shapes:
            text = shape.format(think=think, gold=gold, wrong=wrong)
            for config in configs:
                graded = evaluate.grade_texts(row["prompt"], [text], gold, config)
                strict = grade_response(row["prompt"] + text, row["prompt"], gold, replace(config, format="strict"))
                lenient = grade_response(row["prompt"] + text, row["prompt"], gold, replace(config, format="lenient"))
                assert graded["accuracy_strict"] == strict.correct, (text, config)
                assert graded["reward"] == (strict if config.format == "strict" else lenient).reward, (text, config)
                assert graded["accuracy"] == lenient.correct and graded["preamble"] == lenient.preamble
                checked += 1
    assert checked == len(sample_rows()) * len(shapes) * len(configs)


def test_report_from_fixed_responses(tmp_path):
    summary = report(fixed_model(tmp_path / "rlvr"), RewardConfig())
    task = summary["tasks"]["medrlvr_medqa"]
    values = {key: entry["value"] for key, entry in task["metrics"].items()}
    # by hand, per question: accuracy 1 1 0 0 1, strict 1 0 0 0 1, well formed 1 1 1 0 1, relaxed 1 1 0 1 1,
    # leak 0 0 0 0 1, preamble 0 1 0 0 0, reward 1 1 0 -1 1, thinking words 10 9 6 5 2,
    # response characters 101 105 84 91 44
    assert values == pytest.approx(
        {
            "accuracy": 0.6,
            "accuracy_strict": 0.4,
            "well_formed": 0.8,
            "relaxed_accuracy": 0.8,
            "answer_leak": 0.2,
            "preamble": 0.2,
            "reward": 0.4,
            "think_words": 6.4,
            "response_chars": 85.0,
        }
    )
    assert (task["metrics"]["accuracy"]["low"], task["metrics"]["accuracy"]["high"]) == pytest.approx(
        (0.2307, 0.8824), abs=5e-5
    )
    assert task["n"] == 5 and task["responses_per_question"] == 1
    groups = task["subgroups"]["groups"]
    assert task["subgroups"]["field"] == "meta_info" and list(groups) == ["step1", "step2&3"]
    assert [groups[g]["n"] for g in groups] == [3, 2]
    assert groups["step1"]["metrics"]["accuracy"]["value"] == pytest.approx(2 / 3)
    assert groups["step1"]["metrics"]["accuracy_strict"]["value"] == pytest.approx(1 / 3)
    assert groups["step2&3"]["metrics"]["well_formed"]["value"] == 0.5

    markdown = (tmp_path / "rlvr" / "report.md").read_text()
    assert "| accuracy (lenient, the paper's) | 60.0 [23.1, 88.2] |" in markdown
    assert "| step1 | 3 | 66.7 [20.8, 93.9] |" in markdown  # Wilson 2/3
    assert json.loads((tmp_path / "rlvr" / "summary.json").read_text())["tasks"] == json.loads(
        json.dumps(summary["tasks"])
    )

    # the training run's reward scheme changes the reward only
    penalized = report(tmp_path / "rlvr", RewardConfig(scheme="penalized"))["tasks"]["medrlvr_medqa"]["metrics"]
    assert penalized["reward"]["value"] == pytest.approx(0.2) and penalized["accuracy"]["value"] == 0.6


def test_report_refuses_responses_cut_at_a_stop_string(tmp_path):
    line = log_line(0, doc(0, *QUESTIONS[0][:3]), [RESPONSES[0].removesuffix("</answer>")])
    line["arguments"]["gen_args_0"]["arg_1"]["until"] = ["</answer>"]
    write_log(tmp_path, "medrlvr_medqa", [line])
    with pytest.raises(ToolError, match=r":1: generated with stop strings \['</answer>'\]"):
        report(tmp_path, RewardConfig())


def test_report_names_the_log_line_that_is_no_sample(tmp_path):
    good = log_line(0, doc(0, *QUESTIONS[0][:3]), [RESPONSES[0]])
    no_request = {key: value for key, value in good.items() if key != "arguments"}
    for line, message in [
        ("{", r":2: not JSON"),
        (json.dumps({**good, "resps": [[]]}), r":2: not a graded lm-eval .* resps\[0\] must be a non-empty list"),
        (json.dumps(no_request), r":2: not a graded lm-eval generate_until sample \(KeyError: 'arguments'\)"),
    ]:
        path = write_log(tmp_path, "medrlvr_medqa", [good])
        path.write_text(path.read_text() + line + "\n")
        with pytest.raises(ToolError, match=re.escape(str(path)) + message):
            report(tmp_path, RewardConfig())


def test_report_takes_each_task_s_newest_log_and_samples(tmp_path):
    folder = fixed_model(tmp_path / "m")
    rows = [doc(i, q, options, label) for i, (q, options, label, _) in enumerate(QUESTIONS[:2])]
    right, wrong = RESPONSES[0], RESPONSES[0].replace("<answer>B", "<answer>C")
    # 4 samples each: question 0 right twice, question 1 (gold C) right three times
    lines = [
        log_line(0, rows[0], [right, right, wrong, "no tags"]),
        log_line(1, rows[1], [wrong, wrong, wrong, right]),
    ]
    write_log(folder, "medrlvr_medqa", lines, stamp="2026-12-01T09-00-00")
    task = report(folder, RewardConfig())["tasks"]["medrlvr_medqa"]
    assert task["n"] == 2 and task["responses_per_question"] == 4
    assert task["metrics"]["accuracy"]["value"] == pytest.approx((2 / 4 + 3 / 4) / 2)  # pass@1, the mean over samples
    assert task["metrics"]["pass@4"]["value"] == 1.0
    assert task["metrics"]["well_formed"]["value"] == pytest.approx((3 / 4 + 1) / 2)


def test_compare_pairs_the_same_questions(tmp_path):
    base = right_or_wrong(tmp_path / "base", [True] * 5 + [False] * 5)
    rlvr = right_or_wrong(tmp_path / "rlvr", [True] * 4 + [False] + [True] * 4 + [False])
    other = right_or_wrong(tmp_path / "other", [True] * 8, ids=range(8))  # 8 of base's 10 questions
    few = right_or_wrong(tmp_path / "few", [True] * 12, ids=range(8, 12))  # 2 of them
    table = compare([base, rlvr, other, few], config=RewardConfig())
    entry = table["models"]["rlvr"]["medrlvr_medqa"]
    # 4 questions only rlvr gets right, 1 only base: McNemar p = 2 P(X <= 1 | 5, 1/2) = 12/32
    assert entry["value"] == 0.8 and entry["difference"] == pytest.approx(0.3) and entry["n_paired"] == 10
    assert entry["paired"] and entry["test"] == "McNemar exact" and entry["p"] == pytest.approx(0.375)
    # the interval McNemar's test inverts: 5 / 10 discordant x (2 q - 1), q in Clopper-Pearson's [0.284, 0.995]
    assert (entry["low_difference"], entry["high_difference"]) == pytest.approx(mcnemar_interval(4, 1, 10))
    assert entry["low_difference"] < 0 < entry["high_difference"]
    # paired on the 8 shared questions: base right on 5 of them, other on all 8; 3 discordant, p = 2 / 8
    shared = table["models"]["other"]["medrlvr_medqa"]
    assert shared["paired"] and shared["n_paired"] == 8 and shared["n"] == 8
    assert shared["difference"] == pytest.approx(3 / 8) and shared["p"] == pytest.approx(0.25)
    refused = table["models"]["few"]["medrlvr_medqa"]
    assert refused == refused | {"paired": False, "n_paired": 2, "reason": "2 shared of 10 and 4 questions"}
    assert "difference" not in refused and "p" not in refused
    assert "| rlvr | 80.0 [49.0, 94.3] | +30.0 [" in table["markdown"] and "| 0.38 | 10 |" in table["markdown"]
    assert "| not paired: 2 shared of 10 and 4 questions |  | 2 |" in table["markdown"]

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "med_rlvr_plugin.evaluate",
            "compare",
            str(base),
            str(rlvr),
            "--output",
            str(tmp_path / "new" / "folder" / "table.md"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "new" / "folder"
    assert (written / "table.md").read_text() in result.stdout
    assert json.loads((written / "table.json").read_text())["models"]["rlvr"]["medrlvr_medqa"]["p"] == pytest.approx(
        0.375
    )


def sampled(folder: Path, shares: list[float], k: int = 4, temperature: float = 1.0, label: str = "A") -> Path:
    """A model sampled k times per question: question i right in shares[i] of its responses."""
    lines = []
    for i, share in enumerate(shares):
        row = doc(i, f"Question {i}?", ["First", "Second", "Third", "Fourth"], label)
        right = round(share * k)
        texts = [f" <think>R {i}.</think> <answer>{'A' if j < right else 'B'}</answer>" for j in range(k)]
        line = log_line(i, row, texts)
        line["arguments"]["gen_args_0"]["arg_1"] = {
            "until": [],
            "do_sample": True,
            "temperature": temperature,
            "max_gen_toks": 1024,
        }
        lines.append(line)
    write_log(folder, "medrlvr_medqa", lines)
    return folder


def test_compare_with_sampled_runs_flags_settings_and_bounds_p(tmp_path):
    base = right_or_wrong(tmp_path / "base", [False] * 20)
    rlvr = sampled(tmp_path / "rlvr", [1.0] * 20)  # every response right: the bootstrap has nothing below 0
    table = compare([base, rlvr], config=RewardConfig())
    entry = table["models"]["rlvr"]["medrlvr_medqa"]
    assert entry["test"] == "paired bootstrap" and entry["p"] == pytest.approx(2 / (RESAMPLES + 1))
    assert entry["settings_differ"] == ["k 4 vs 1", "temperature 1.0 vs 0.0"]
    assert entry["low"] < 1.0 == entry["high"]  # Wilson over 20 questions, not "100.0 [100.0, 100.0]"
    assert entry["low_difference"] < 1.0 == entry["high_difference"]  # not "+100.0 [+100.0, +100.0]"
    assert "| +100.0 [+" in table["markdown"] and " † | ≤0.0002 | 20 |" in table["markdown"]
    assert "† rlvr, medrlvr_medqa: k 4 vs 1, temperature 1.0 vs 0.0 (first model's)" in table["markdown"]
    # report: rates, pass@k and the reward of a sampled run keep their width
    metrics = report(rlvr, RewardConfig())["tasks"]["medrlvr_medqa"]["metrics"]
    assert metrics["accuracy"]["low"] < 1.0 and metrics["pass@4"]["low"] < 1.0 and metrics["reward"]["low"] < 1.0


def test_compare_refuses_a_question_with_another_label(tmp_path):
    base = right_or_wrong(tmp_path / "base", [True] * 4)
    other = sampled(tmp_path / "other", [1.0] * 4, k=1, temperature=0.0, label="B")
    with pytest.raises(EvalError, match=r"medrlvr_medqa, question q\d: the label differs between other and base"):
        compare([base, other], config=RewardConfig())


def test_report_skips_other_tasks_with_a_note(tmp_path, capsys):
    folder = fixed_model(tmp_path / "cli" / "model__name")
    foreign = {"doc_id": 0, "doc": {"sent1": "x", "ending0": "y"}, "arguments": {}, "resps": [[["-1.5", "False"]]]}
    write_log(folder, "medqa_4options", [foreign])
    summary = report(tmp_path / "cli", RewardConfig())
    assert list(summary["tasks"]) == ["medrlvr_medqa"]
    assert summary["skipped"] == [
        "skipped task medqa_4options: its rows have no 'prompt' and 'label' (not a prepared prompt file)"
    ]
    assert "Note: skipped task medqa_4options" in (tmp_path / "cli" / "report.md").read_text()
    assert "note: " in capsys.readouterr().err
    assert compare([folder, fixed_model(tmp_path / "again")], config=RewardConfig())["tasks"] == ["medrlvr_medqa"]
    assert f"note: {folder}: skipped task medqa_4options" in capsys.readouterr().err
    write_log(tmp_path / "other", "medqa_4options", [foreign])
    with pytest.raises(EvalError, match="no lm-eval sample logs of prepared prompt files.*medqa_4options are other"):
        report(tmp_path / "other", RewardConfig())
    # a scratch folder a killed run left is no second model
    write_log(folder / ".lm_eval-99999999-x", "medrlvr_medqa", [])
    assert list(report(folder, RewardConfig())["tasks"]) == ["medrlvr_medqa"]


def test_compare_takes_the_old_metric_names_with_a_note(tmp_path, capsys):
    base = right_or_wrong(tmp_path / "base", [True] * 5 + [False] * 5)
    rlvr = right_or_wrong(tmp_path / "rlvr", [True] * 4 + [False] + [True] * 4 + [False])
    for old, new in [("acc", "accuracy"), ("acc_strict", "accuracy_strict"), ("relaxed_acc", "relaxed_accuracy")]:
        output = tmp_path / f"{old}.md"
        assert main(["compare", str(base), str(rlvr), "--metric", old, "--output", str(output)]) == 0
        assert (
            capsys.readouterr().err
            == f"med-rlvr evaluate: warning: --metric {old} is deprecated; use --metric {new}\n"
        )
        assert json.loads(output.with_suffix(".json").read_text())["metric"] == new


def test_one_metric_vocabulary():
    """evaluate's metrics are reward.METRICS' names or its own additions, each documented and in the task YAML;
    analyze's per-step quantities are reward.METRICS' names."""
    keys = [key for key, _, _ in evaluate.METRICS]
    assert set(keys) - set(reward.METRICS) == set(evaluate.ADDED_METRICS)
    assert {*analyze.RATES, *analyze.LENGTHS, *analyze.KEYS} <= set(reward.METRICS)
    documented = re.findall(r"^\| `(\w+)` \|", (REPO / "docs" / "evaluation.md").read_text(), re.MULTILINE)
    assert documented == keys
    assert re.findall(r"\{metric: (\w+),", evaluate.TEMPLATE.read_text()) == keys


def test_steps_table_and_plot(tmp_path):
    rows = []
    for label, step, right in [
        ("global_step20_hf", 20, [True] + [False] * 4),
        ("global_step40_hf", 40, [True] * 3 + [False] * 2),
        ("model", None, [True] * 4 + [False]),
    ]:
        rows.append((label, step, report(right_or_wrong(tmp_path / label, right), RewardConfig())))
    runner.write_steps(tmp_path, rows)
    markdown = (tmp_path / "steps.md").read_text()
    assert (
        "| global_step20_hf | 20 | 20.0 [3.6, 62.4] |" in markdown
        and "| model | final | 80.0 [37.6, 96.4] |" in markdown
    )
    assert [entry["step"] for entry in json.loads((tmp_path / "steps.json").read_text())] == [20, 40, None]
    assert (tmp_path / "steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoints_are_found_and_ordered_by_step(tmp_path):
    for name in [
        "ckpt/global_step100_hf",
        "ckpt/global_step20_hf",
        "ckpt/best_global_step40_hf",
        "ckpt/global_step40_hf",
        "ckpt/best_global_step60_hf",
        "ckpt/_actor/global_step100",
        "model",
    ]:
        (tmp_path / name).mkdir(parents=True)
    found = [(step, path.relative_to(tmp_path).as_posix()) for step, path in runner.checkpoints(tmp_path)]
    assert found == [
        (20, "ckpt/global_step20_hf"),
        (40, "ckpt/global_step40_hf"),
        (60, "ckpt/best_global_step60_hf"),
        (100, "ckpt/global_step100_hf"),
        (None, "model"),
    ]
    with pytest.raises(EvalError, match="no ckpt/global_step"):
        runner.checkpoints(tmp_path / "ckpt" / "_actor")


# ---------------------------------------------------------------- input errors


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "medqa_test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in sample_rows()))
    return path


def usage_error(argv: list[str], capsys) -> str:
    """The stderr of `evaluate argv`, which must stop with exit 2 (a usage error)."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


def error_line(err: str, message: str) -> bool:
    return any(line.startswith("med-rlvr evaluate: error: ") and message in line for line in err.splitlines())


def test_errors_name_the_problem_before_any_model_loads(tmp_path, prompt_file, tiny_qwen2, capsys):
    lines = prompt_file.read_text().splitlines()
    cases = {
        "missing model": ([str(tmp_path / "no_such_model")], prompt_file, "no_such_model: no such folder"),
        "model without config": ([str(tmp_path)], prompt_file, "no config.json"),
        "comma in model path": ([str(tmp_path / "a,b")], prompt_file, "cannot hold ',' or '='"),
    }
    for name, (edit, message) in {
        "empty": ("", "the data file is empty"),
        "no prompt": ("\n".join([lines[0], json.dumps({"label": "B"})]), ":2: no field 'prompt'"),
        "no label": ("\n".join([lines[0], lines[1], json.dumps({"prompt": "Q?"})]), ":3: no field 'label'"),
        "bad label": (
            json.dumps({**json.loads(lines[0]), "label": 2}),
            ":1: field 'label': med-rlvr: label 2 names no option letter",
        ),
        "not json": (lines[0] + "\n{", ":2: not JSON"),
    }.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        path.write_text(edit)
        cases[name] = ([str(tiny_qwen2)], path, message)
    for name, (models, data, message) in cases.items():
        assert main(["run", *models, "--data", str(data), "--output-dir", str(tmp_path / "out")]) == 1, name
        assert error_line(capsys.readouterr().err, message), name
    assert main(["run", str(tiny_qwen2), "--data", str(tmp_path / "none.jsonl"), "--output-dir", "x"]) == 1
    assert error_line(capsys.readouterr().err, "none.jsonl: no such data file")
    # flags refused before anything is read are usage errors
    err = usage_error(["run", str(tiny_qwen2), "--n-samples", "4", "--temperature", "0", "--output-dir", "x"], capsys)
    assert error_line(err, "needs --temperature > 0")
    assert error_line(
        usage_error(["run", str(tiny_qwen2), "--limit", "0", "--output-dir", "x"], capsys),
        "--limit must be at least 1",
    )
    assert error_line(usage_error(["run", str(tiny_qwen2)], capsys), "--output-dir is required without --run-dir")
    assert error_line(usage_error(["compare", str(tmp_path)], capsys), "compare needs at least two folders")
    assert not (tmp_path / "out").exists()
    # the lm-eval hook that checks rows for the plain lm_eval CLI
    with pytest.raises(EvalError, match="row 2 of the task's data file: field 'label'"):
        evaluate.process_docs([sample_rows()[0], {"prompt": "Q?", "label": "none"}])


def test_run_takes_the_old_backend_flag_with_a_note(tmp_path, capsys):
    missing = str(tmp_path / "no_such_model")
    assert main(["run", missing, "--model", "vllm", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "med-rlvr evaluate: warning: --model vllm is deprecated; use --backend vllm"
    # without vLLM installed (as here), one line says so before anything else is read
    assert err[1:] == [
        "med-rlvr evaluate: error: --backend vllm: vLLM is not installed here; on a GPU node install the gpu "
        "extra (pip install -e '.[gpu,eval]'), or use --backend hf"
    ]
    assert not (tmp_path / "out").exists()
    err = usage_error(["run", missing, "--model", "hf", "--backend", "hf", "--output-dir", "x"], capsys)
    assert error_line(err, "give the backend once, as --backend")
    assert error_line(usage_error(["run", missing, "--backend", "tgi"], capsys), "argument --backend: invalid choice")


# ---------------------------------------------------------------- lm-eval end to end on CPU


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """A checkout-like folder: the default prepared files (the built-in sample) and a chat-template file."""
    (tmp_path / "data").mkdir()
    for name in ("medqa_test.jsonl", "mmlu_pro_health.jsonl"):
        (tmp_path / "data" / name).write_text("".join(json.dumps(row) + "\n" for row in sample_rows()))
    chat_rows = [format_row(question, SAMPLE_SOURCE, chat=True) for question in SAMPLE_QUESTIONS]
    (tmp_path / "data" / "medqa_chat.jsonl").write_text("".join(json.dumps(row) + "\n" for row in chat_rows))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def newest_samples(folder: Path, task: str) -> list[dict]:
    path = sorted(folder.glob(f"samples_{task}_2*.jsonl"))[-1]  # the stamp's year, so that medqa is not medqa_chat
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
def test_hf_backend_end_to_end_and_resume_from_cache(workdir, tiny_qwen2, monkeypatch, capsys):
    """Two checkpoints of a pretend run and its base model, three tasks (two shipped, one chat file named by
    the user), 2 questions each, on the CPU without being told (no CUDA here), with the reward and max new
    tokens of the run's manifest; the second run, the model spelt another way, regenerates nothing (counted
    at the HF model's generate_until)."""
    from lm_eval.models.huggingface import HFLM

    run_dir = workdir / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "global_step10_hf").symlink_to(tiny_qwen2)
    (run_dir / "model").symlink_to(tiny_qwen2)
    settings = {"actor": {"model_name_or_path": str(tiny_qwen2)}, "rollout": {"max_new_tokens": 6}}
    reward = {"env": {"MED_RLVR_REWARD_SCHEME": "penalized"}}
    (run_dir / "manifest.json").write_text(json.dumps({"kind": "ppo", "reward": reward, "settings": settings}))
    calls = []
    generate_until = HFLM.generate_until
    monkeypatch.setattr(
        HFLM,
        "generate_until",
        lambda self, requests, *a, **k: calls.append(len(requests)) or generate_until(self, requests, *a, **k),
    )
    data = ["data/medqa_test.jsonl", "data/mmlu_pro_health.jsonl", "data/medqa_chat.jsonl"]
    options = ["--data", *data, "--limit", "2", "--model-args", "dtype=float32", "--batch-size", "1"]
    assert main(["run", str(tiny_qwen2), "--run-dir", str(run_dir), *options]) == 0
    err = capsys.readouterr().err
    assert "note: no CUDA GPU on this machine; generating on the CPU (--device cpu)" in err
    assert "settings: reward scheme=penalized, format=lenient, leak_penalty=0.0" in err and "up to 6 new" in err
    out = run_dir / "eval"
    tasks = ["medrlvr_medqa", "medrlvr_mmlu_pro_health", "medrlvr_medqa_chat"]
    assert sum(calls) == 3 * 3 * 2  # models x tasks x questions, every one generated
    for label in (tiny_qwen2.name, "global_step10_hf", "model"):
        folder = out / label
        assert len(list(folder.glob("results_*.json"))) == 2  # one lm-eval run for base prompts, one for chat
        assert len(list(folder.glob("lm_eval_cache_*_rank0.db"))) == 1
        assert not list(folder.glob(".lm_eval-*"))
        summary = json.loads((folder / "summary.json").read_text())
        assert sorted(summary["tasks"]) == sorted(tasks) and (folder / "report.md").is_file()
        # what was evaluated, and how
        assert (summary["model_path"], summary["backend"]) == (str(tiny_qwen2.resolve()), "hf")
        assert summary["model_args"] == f"pretrained={tiny_qwen2.resolve()},dtype=float32"
        assert summary["reward_config"]["scheme"] == "penalized"
        for task, file in zip(tasks, data, strict=True):
            record = summary["tasks"][task]
            assert record["data_sha256"] == hashlib.sha256((workdir / file).read_bytes()).hexdigest()
            assert record["generation"] == {"until": [], "max_gen_toks": 6, "do_sample": False}
            assert record["version"] == 1.0 and record["data_file"] == file
        # lm-eval's own aggregate of process_results equals the report's grading of the logs
        results = {}
        for path in folder.glob("results_*.json"):
            results |= json.loads(path.read_text())["results"]
        for task in tasks:
            assert summary["tasks"][task]["n"] == 2
            assert results[task]["accuracy,none"] == summary["tasks"][task]["metrics"]["accuracy"]["value"]
            assert results[task]["reward,none"] == pytest.approx(summary["tasks"][task]["metrics"]["reward"]["value"])
            assert results[task]["response_chars,none"] == pytest.approx(
                summary["tasks"][task]["metrics"]["response_chars"]["value"]
            )
    steps = json.loads((out / "steps.json").read_text())
    assert [(entry["checkpoint"], entry["step"]) for entry in steps] == [
        (tiny_qwen2.name, 0),
        ("global_step10_hf", 10),
        ("model", None),
    ]
    for name in ("comparison.md", "comparison.json", "steps.md", "steps.json", "steps.png"):
        assert (out / name).is_file(), name

    # What reached the grader is the model's whole greedy continuation, as transformers generates it alone.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_qwen2), AutoTokenizer.from_pretrained(tiny_qwen2)
    first = newest_samples(out / "model", "medrlvr_medqa")
    chat = newest_samples(out / "model", "medrlvr_medqa_chat")
    for sample in (first[0], chat[0]):
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        expected = tokenizer.decode(
            model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :], skip_special_tokens=True
        )
        assert sample["resps"] == [[expected]]
    assert first[0]["arguments"]["gen_args_0"]["arg_1"] == {"until": [], "max_gen_toks": 6, "do_sample": False}
    assert first[0]["arguments"]["gen_args_0"]["arg_0"] == first[0]["doc"]["prompt"]
    content = chat[0]["doc"]["prompt"][0]["content"]
    assert (
        chat[0]["arguments"]["gen_args_0"]["arg_0"]
        == f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    )

    # Again, one checkpoint named directly, by a relative path: the same output folder and the same cache.
    calls.clear()
    before = newest_samples(out / "global_step10_hf", "medrlvr_medqa_chat")
    again = ["run", "./run/ckpt/global_step10_hf", "--output-dir", str(out), "--max-gen-toks", "6", *options]
    assert main([*again, "--device", "cpu"]) == 0
    assert calls == []  # every response came from lm-eval's cache
    assert newest_samples(out / "global_step10_hf", "medrlvr_medqa_chat") == before
    assert len(list((out / "global_step10_hf").glob("samples_medrlvr_medqa_chat_2*.jsonl"))) == 2


@pytest.mark.integration
def test_plain_lm_eval_cli_runs_the_shipped_tasks(workdir, tiny_qwen2, monkeypatch, capsys):
    from lm_eval.__main__ import cli_evaluate

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_qwen2},dtype=float32",
            "--device",
            "cpu",
            "--include_path",
            str(evaluate.TASK_DIR),
            "--tasks",
            "medrlvr_medqa,medrlvr_mmlu_pro_health",
            "--limit",
            "2",
            "--gen_kwargs",
            "max_gen_toks=8",
            "--output_path",
            "cli_out",
            "--log_samples",
        ],
    )
    cli_evaluate()
    folder = workdir / "cli_out"
    logs = sorted(path.name for path in folder.glob("*/samples_*.jsonl"))
    assert (
        len(logs) == 2
        and logs[0].startswith("samples_medrlvr_medqa_2")
        and logs[1].startswith("samples_medrlvr_mmlu_pro_health_")
    )
    sample = newest_samples(next(folder.iterdir()), "medrlvr_medqa")[0]
    # the template's generation settings: no stop string but EOS, greedy (max_gen_toks from --gen_kwargs)
    assert sample["arguments"]["gen_args_0"]["arg_1"] == {"until": [], "max_gen_toks": 8, "do_sample": False}
    summary = report(folder, RewardConfig())  # lm-eval's CLI adds a folder per model; report finds it
    assert summary["tasks"]["medrlvr_mmlu_pro_health"]["n"] == 2


# vLLM cannot run without a GPU. This stand-in replaces only the engine: lm-eval's own VLLM class (its model
# argument handling, stop sequences, SamplingParams, postprocessing) runs unchanged and calls it.
FAKE_VLLM = {
    "vllm/__init__.py": """import json, os
from types import SimpleNamespace
__version__ = "0.29.0"
def _log(kind, **fields):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as handle:
        handle.write(json.dumps({"kind": kind, **fields}, default=str) + "\\n")
class SamplingParams:
    def __init__(self, **kwargs):
        _log("sampling_params", **kwargs)
class TokensPrompt(dict):
    pass
class LLM:
    def __init__(self, **kwargs):
        _log("engine", **kwargs)
        config = SimpleNamespace(max_model_len=kwargs.get("max_model_len") or 4096)
        self.llm_engine = SimpleNamespace(model_config=config)
    def generate(self, prompts, sampling_params=None, **kwargs):
        _log("generate", prompts=len(prompts))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=os.environ["FAKE_VLLM_RESPONSE"])]) for _ in prompts]
""",
    "vllm/lora/__init__.py": "",
    "vllm/lora/request.py": "class LoRARequest:\n    pass\n",
    "vllm/renderers/__init__.py": "",
    "vllm/renderers/hf.py": "def resolve_chat_template(**kwargs):\n    return None\n",
    "vllm/tokenizers.py": "def get_tokenizer(name, **kwargs):\n    from transformers import AutoTokenizer\n"
    "    return AutoTokenizer.from_pretrained(name)\n",
    "vllm-0.29.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: vllm\nVersion: 0.29.0\n",
}


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MED_RLVR_")}
    environ["PATH"] = f"{BIN}{os.pathsep}{environ['PATH']}"
    return subprocess.run(
        ["bash", str(REPO / "launch" / "eval_checkpoint.sh"), *args],
        env=environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration
def test_eval_checkpoint_script_through_lm_eval_vllm_backend(workdir, tiny_qwen2):
    fake = workdir / "fake_vllm"
    for relative, text in FAKE_VLLM.items():
        (fake / relative).parent.mkdir(parents=True, exist_ok=True)
        (fake / relative).write_text(text)
    run_dir = workdir / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "global_step30_hf").symlink_to(tiny_qwen2)
    # a run trained with 2,048 new tokens and the penalized reward: evaluated so, from a fresh shell
    settings = {"actor": {"model_name_or_path": "Qwen/Qwen2.5-3B"}, "rollout": {"max_new_tokens": 2048}}
    reward = {"env": {"MED_RLVR_REWARD_SCHEME": "penalized"}}
    (run_dir / "manifest.json").write_text(json.dumps({"kind": "ppo", "reward": reward, "settings": settings}))
    log = workdir / "vllm_calls.jsonl"
    env = {
        "PYTHONPATH": f"{fake}{os.pathsep}{REPO}",  # the code under test, not an installed copy
        "FAKE_VLLM_LOG": str(log),
        "FAKE_VLLM_RESPONSE": " <think>Because.</think> <answer>B</answer>",
    }
    result = run_script(
        "--run-dir",
        str(run_dir),
        "--limit",
        "3",
        "--tensor-parallel",
        "2",
        "--gpu-memory-utilization",
        "0.8",
        "--max-model-len",
        "4096",
        "--model-args",
        "dtype=bfloat16",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    engine = next(call for call in calls if call["kind"] == "engine")
    assert engine["model"] == str(tiny_qwen2.resolve())  # the checkpoint's resolved path, which identifies it
    assert (
        engine["tensor_parallel_size"],
        engine["gpu_memory_utilization"],
        engine["max_model_len"],
        engine["dtype"],
    ) == (2, 0.8, 4096, "bfloat16")
    sampling = [call for call in calls if call["kind"] == "sampling_params"]
    assert len(sampling) == 2 * 3  # two shipped tasks x 3 questions
    # greedy, the run's 2048 tokens, and only EOS as a stop string: nothing is cut before </answer>
    assert all((s["temperature"], s["max_tokens"], s["stop"]) == (0.0, 2048, ["<|endoftext|>"]) for s in sampling)
    summary = json.loads((run_dir / "eval" / "global_step30_hf" / "summary.json").read_text())
    assert summary["reward_config"]["scheme"] == "penalized" and summary["backend"] == "vllm"
    gold = [row["label"] for row in sample_rows()[:3]]  # B, C, A: the canned answer B is right once in 3
    assert summary["tasks"]["medrlvr_medqa"]["metrics"]["accuracy"]["value"] == pytest.approx(gold.count("B") / 3)
    assert (run_dir / "eval" / "steps.png").is_file()

    # The old spelling of --backend vllm, `evaluate run --model vllm`, still runs vLLM, with a note.
    command = ["run", str(tiny_qwen2), "--model", "vllm", "--limit", "1", "--output-dir", str(workdir / "old_flag")]
    result = subprocess.run(
        [sys.executable, "-m", "med_rlvr_plugin.evaluate", *command],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "med-rlvr evaluate: warning: --model vllm is deprecated; use --backend vllm\n" in result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    engines = [call["model"] for call in calls if call["kind"] == "engine"]
    assert engines == [str(tiny_qwen2.resolve())] * 2


def test_eval_checkpoint_script_refuses_bad_flags(tmp_path):
    for args, message in [
        ((), "give --run-dir DIR or --model PATH"),
        (("--run-dir", "runs/x"), "must be absolute"),
        (("--model", "m"), "--output-dir is required"),
        (("--run-dir", "/r", "--data-parallel", "0"), "--data-parallel must be a positive integer"),
        (("--run-dir",), "--run-dir needs a value"),
        (("--bogus",), "unknown flag --bogus"),
    ]:
        result = run_script(*args)
        error_line = result.stderr.splitlines()[-1]
        assert result.returncode == 2 and error_line.startswith("med-rlvr eval_checkpoint.sh: error: "), args
        assert message in error_line, (args, result.stderr)
