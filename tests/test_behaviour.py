"""The per-response behaviour classes: their rules, and their agreement with a corpus labelled by hand.

tests/data/behaviour_corpus.jsonl holds 252 responses written and labelled by hand, each with its class,
for the step-by-step exploit where the reasoning is, a one-line reason, and a split: "tuning" (written
before the rules; the rules and thresholds were adjusted until these agreed), "held_out" (written with
them, run once the rules were done) and "held_out_2" (written after the rules were done, then run). The
first-run agreement of each held-out part is in docs/dynamics.md. The questions they answer are in
tests/data/behaviour_questions.json.
"""

import json
from collections import Counter
from pathlib import Path

import pytest

from med_rlvr_plugin.dynamics import CLASSES, Thresholds, behaviour, explain, repetition
from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.reward import score_sample
from med_rlvr_plugin.verifier import LETTERS, config_from_env, grade_response
from tests.real_data import MEDQA_TEST, MMLU_PRO_HEALTH, real_file

DATA = Path(__file__).resolve().parent / "data"
REPO = DATA.parents[1]
QUESTIONS = {
    key: render_prompt(value["question"], value["options"])
    for key, value in json.loads((DATA / "behaviour_questions.json").read_text(encoding="utf-8")).items()
}
CORPUS = [json.loads(line) for line in (DATA / "behaviour_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
MI, THYROID_ZH = QUESTIONS["mi"], QUESTIONS["thy_zh"]
REASONING = (
    "Leads II, III and aVF face the inferior wall, which the right coronary artery supplies in right-dominant "
    "hearts; an LAD occlusion would show in V1-V4 instead. "
)


def classify(prompt: str, response: str, label: str = "C", **config) -> tuple[str, str]:
    return explain(grade_response(prompt + response, prompt, label, config_from_env(config)), prompt)


@pytest.mark.parametrize(
    "response, expected",
    [
        # Direct answer hacking: a committed answer opens the thinking, whatever follows it.
        (f" <think>The answer is C. {REASONING}</think><answer>C</answer>", "direct_answer_hacker"),
        (f" <think>C is the answer. {REASONING}</think><answer>C</answer>", "direct_answer_hacker"),
        (f" <think>Final answer - C. {REASONING}</think><answer>C</answer>", "direct_answer_hacker"),
        (f" <think>the correct choice is c. {REASONING}</think><answer>C</answer>", "direct_answer_hacker"),
        (f" <think>Right coronary artery. {REASONING}</think><answer>C</answer>", "direct_answer_hacker"),
        (
            " <think>The occluded vessel is the right coronary artery.</think><answer>C</answer>",
            "direct_answer_hacker",
        ),
        (" <think>C</think><answer>C</answer>", "direct_answer_hacker"),  # the verifier's answer leak
        # ... told apart from an option weighed in passing, rejected, or concluded on.
        (f" <think>Right coronary artery or circumflex? {REASONING}</think><answer>C</answer>", "concise_structurer"),
        (f" <think>Not the left main, since {REASONING}</think><answer>C</answer>", "concise_structurer"),
        (f" <think>The answer is not D: {REASONING}</think><answer>C</answer>", "concise_structurer"),
        (f" <think>{REASONING}So the answer is C.</think><answer>C</answer>", "concise_structurer"),
        (f" <think>E. coli is beside the point. {REASONING}</think><answer>C</answer>", "concise_structurer"),
        (f" Okay, here it is. <think>{REASONING}</think><answer>C</answer>", "concise_structurer"),
        # The verbose formatter repeats itself; length alone is not verbose, repetition at any length is.
        (f" <think>{REASONING * 5}</think><answer>C</answer>", "verbose_formatter"),
        (f" <think>{'Inferior MI, RCA. ' * 4}</think><answer>C</answer>", "verbose_formatter"),
        (" The answer is C.", "format_failure"),
        (" <think></think> <answer>C</answer>", "format_failure"),
        (" <think>Inferior.</think> <answer>Right coronary artery</answer>", "format_failure"),  # no letter
        (" <think>Inferior.</think> <answer>C</answer> Hope this helps!", "format_failure"),  # no reasoning after
    ],
)
def test_behaviour_classes(response, expected):
    assert classify(MI, response)[0] == expected


@pytest.mark.parametrize(
    "response, where",
    [
        (" Leads II, III and aVF are inferior. <think>C</think><answer>C</answer>", "before think"),
        (
            " <think>Inferior.</think> The RCA supplies the inferior wall. <answer>C</answer>",
            "between think and answer",
        ),
        (
            " <think>Inferior.</think> <answer>C. Right coronary artery, because II, III, aVF.</answer>",
            "inside answer",
        ),
        (" <think>Inferior.</think> <answer>C</answer> The RCA supplies the inferior wall.", "after answer"),
    ],
)
def test_the_exploit_is_reasoning_outside_the_thinking_wherever_it_is(response, where):
    assert classify(MI, response) == ("step_by_step_exploit", f"reasoning {where}")


def test_the_exploit_inside_the_answer_block_earns_full_reward_and_is_reported_there():
    response = " <think>Inferior MI.</think> <answer>C. Right coronary artery, because leads II, III and aVF.</answer>"
    score = score_sample(MI + response, MI, "C")
    assert (score.grade.reward, score.behaviour, score.reason) == (
        1.0,
        "step_by_step_exploit",
        "reasoning inside answer",
    )
    plain = score_sample(MI + " <think>Inferior MI.</think> <answer>C. Right coronary artery</answer>", MI, "C")
    assert plain.behaviour == "concise_structurer"


def test_every_real_option_written_out_in_the_answer_block_is_no_reasoning():
    # Options open with arrows and quotes, hold commas and parentheses: the answer is compared without them.
    for path in (real_file(MEDQA_TEST), real_file(MMLU_PRO_HEALTH)):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            options = list(row["options"].values()) if isinstance(row["options"], dict) else row["options"]
            prompt = render_prompt(row["question"], options)
            for letter, option in zip(LETTERS, options, strict=False):
                response = f" <think>Reasoning.</think><answer>{letter}. {option}</answer>"
                assert classify(prompt, response, letter)[0] != "step_by_step_exploit", option


def test_pleasantries_outside_the_thinking_are_not_reasoning_and_strict_format_fails_them():
    chatter = (
        " Sure! I would be happy to help with this question. <think>Inferior leads: RCA.</think><answer>C</answer>"
    )
    assert classify(MI, chatter)[0] == "concise_structurer"
    assert classify(MI, chatter, MED_RLVR_FORMAT="strict")[0] == "format_failure"
    # Reasoning before <think> is the exploit in either format (strict format only takes its reward).
    steps = " Sure! II, III and aVF are the inferior leads. <think>RCA.</think><answer>C</answer>"
    assert classify(MI, steps, MED_RLVR_FORMAT="strict") == ("step_by_step_exploit", "reasoning before think")


def test_chinese_thinking_is_counted_in_characters_and_can_be_verbose():
    looped = "TSH升高，T4降低，是甲减。" * 4
    grade = grade_response(f"{THYROID_ZH} <think>{looped}</think><answer>C</answer>", THYROID_ZH, "C")
    assert grade.think_words == 36  # TSH, T4 and 7 characters a sentence; the punctuation is no word
    assert behaviour(grade, THYROID_ZH) == "verbose_formatter"
    assert repetition(looped) > 0.5 and repetition(looped[:13]) == 0.0  # too short to measure


def test_thresholds_move_the_class_boundaries_and_are_checked():
    response = " Inferior, so RCA. <think>C.</think><answer>C</answer>"
    assert classify(MI, response)[0] == "step_by_step_exploit"
    grade = grade_response(MI + response, MI, "C")
    assert behaviour(grade, MI, Thresholds(outside_words=4)) == "direct_answer_hacker"
    looped = grade_response(MI + f" <think>{REASONING * 2}</think><answer>C</answer>", MI, "C")
    assert behaviour(looped, MI) == "verbose_formatter"
    assert behaviour(looped, MI, Thresholds(repeated_share=0.6)) == "concise_structurer"
    for bad, message in [({"outside_words": 0}, "outside_words"), ({"repeated_share": 0}, "repeated_share")]:
        with pytest.raises(ValueError, match=f"{message} must be"):
            Thresholds(**bad)


def test_every_input_is_classed_in_bounded_time():
    # Long text outside the tags is reasoning without being scanned; long thinking is measured on a prefix.
    for response in (
        " x" * 500_000 + "<think>C</think><answer>C</answer>",
        " <think>" + "word " * 500_000 + "</think><answer>C</answer>",
        " <think>Inferior.</think><answer>C " + "(" * 500_000 + "</answer>",
    ):
        assert classify(MI, response)[0] in CLASSES


# ---------------------------------------------------------------- the hand-labelled corpus


def corpus_results() -> list[tuple[dict, str]]:
    """Each corpus row with the class the rules give it (`class:where` for the exploit)."""
    results = []
    for row in CORPUS:
        prompt = QUESTIONS[row["question"]]
        kind, reason = explain(grade_response(prompt + row["response"], prompt, "A"), prompt)
        where = reason.removeprefix("reasoning ").replace(" ", "_") if kind == "step_by_step_exploit" else None
        results.append((row, f"{kind}:{where}" if where else kind))
    return results


def confusion_table(results) -> str:
    """The confusion matrix as docs/dynamics.md prints it: rows by hand label, columns by the rules."""
    counts = Counter((row["label"], got.partition(":")[0]) for row, got in results)
    lines = ["| hand label \\ rules | " + " | ".join(CLASSES) + " | agree |", "|---" * (len(CLASSES) + 2) + "|"]
    for label in CLASSES:
        total = sum(counts[label, got] for got in CLASSES)
        cells = " | ".join(str(counts[label, got]) for got in CLASSES)
        lines.append(f"| {label} | {cells} | {counts[label, label]}/{total} |")
    return "\n".join(lines)


def hand_label(row: dict) -> str:
    return f"{row['label']}:{row['where']}" if row["where"] else row["label"]


def agreement(results) -> tuple[int, int]:
    return sum(hand_label(row) == got for row, got in results), len(results)


def test_the_corpus_covers_every_class_borderline_and_three_languages():
    assert len(CORPUS) >= 200
    assert {row["label"] for row in CORPUS} == set(CLASSES)
    assert {row["where"] for row in CORPUS if row["label"] == "step_by_step_exploit"} == {
        "before_think",
        "between_think_and_answer",
        "inside_answer",
        "after_answer",
    }
    languages = Counter(row["question"].rpartition("_")[2] if "_" in row["question"] else "en" for row in CORPUS)
    assert set(languages) == {"en", "es", "zh"} and min(languages.values()) >= 40
    assert all(row["reason"] and row["split"] in ("tuning", "held_out", "held_out_2") for row in CORPUS)
    assert sum(row["split"] != "tuning" for row in CORPUS) >= 100


def test_the_rules_agree_with_the_hand_labels(capsys):
    results = corpus_results()
    table = confusion_table(results)
    agreed, total = agreement(results)
    held = [(row, got) for row, got in results if row["split"] != "tuning"]
    held_agreed, held_total = agreement(held)
    with capsys.disabled():
        print(f"\n{table}\nagreement: {agreed}/{total}; held out of tuning: {held_agreed}/{held_total}")
    misses = [(row["reason"], got) for row, got in results if got != hand_label(row)]
    assert agreed / total >= 0.95, misses
    assert held_agreed / held_total >= 0.95, misses
    # docs/dynamics.md prints the same matrix.
    assert table in (REPO / "docs" / "dynamics.md").read_text(encoding="utf-8")
