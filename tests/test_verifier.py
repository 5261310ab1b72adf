"""The grading rule, rule by rule, on responses to a prompt rendered with the project's own template."""

import dataclasses
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.verifier import (
    _USUAL,
    Grade,
    RewardConfig,
    _read_tags,
    config_from_env,
    count_words,
    extract_completion,
    grade_response,
    is_answer_leak,
    parse_answer_letter,
    parse_label,
)
from tests.real_data import MEDQA_DEV, MEDQA_TEST, MMLU_PRO_HEALTH, real_file

# A question written for these tests (not taken from any dataset).
PROMPT = render_prompt(
    "A 34-year-old woman has fatigue, weight gain, cold intolerance and constipation for four months. "
    "Her TSH is elevated and free T4 is low. Which is the most appropriate treatment?",
    ["Propranolol", "Methimazole", "Levothyroxine", "Radioactive iodine", "Observation"],
)
GOLD = "C"
REASONING = "Elevated TSH with low free T4 means primary hypothyroidism, which is treated with thyroid hormone."
PENALIZED = RewardConfig(scheme="penalized")
STRICT = RewardConfig(format="strict")


def grade(response: str, config: RewardConfig = RewardConfig(), label: object = GOLD):
    return grade_response(PROMPT + response, PROMPT, label, config)


@pytest.mark.parametrize(
    "block, letter",
    [
        ("C", "C"),
        (" C \n", "C"),
        ("c", "C"),
        ("(C)", "C"),
        ("[C]", "C"),
        ("**C**", "C"),
        ("*C*", "C"),
        ("__C__", "C"),
        ("C.", "C"),
        ("C)", "C"),
        ("C:", "C"),
        ("C. Levothyroxine", "C"),
        ("C) Levothyroxine", "C"),
        ("C: Levothyroxine", "C"),
        ("(C) Levothyroxine", "C"),
        ("(C). Levothyroxine", "C"),
        ("**C.** Levothyroxine", "C"),
        ("**C. Levothyroxine**", "C"),
        ("Option C", "C"),
        ("option (C)", "C"),
        ("The answer is C", "C"),
        ("The answer is C.", "C"),
        ("The answer is: C", "C"),
        ("The correct answer is (C).", "C"),
        ("Answer: C", "C"),
        ("**Answer:** C", "C"),
        ("Final answer: C) Levothyroxine", "C"),
        ("The best option is **C**", "C"),
        ("J", "J"),
        ("A", "A"),
        # Option wording that contains letters is not a hedge.
        ("C) A decrease in TSH", "C"),
        ("C) Hepatitis B and C", "C"),
        ("D. Vitamin D.", "D"),
        ("B) Vitamin B12 deficiency", "B"),
        ("C) Infection with E. coli", "C"),
        ("C. E. coli infection", "C"),
        ("C. C. difficile colitis", "C"),
        ("C. RhO(D) immunoglobulin", "C"),
        ("C. Free energy (G) of the reactants", "C"),
        ("C. Fever of 38.7°C (101.7°F) after vaccination", "C"),
        ("C) Factor VIII deficiency (hemophilia A) in a boy", "C"),
        ("C. I, II", "C"),
        # A lower-case letter in brackets.
        ("(c)", "C"),
        ("[c]", "C"),
        ("(c) Levothyroxine", "C"),
        ("The answer is (c).", "C"),
        # Full-width and other compatibility forms (NFKC).
        ("Ｃ", "C"),
        ("（Ｃ）", "C"),
        ("Answer：C", "C"),
        ("Ａｎｓｗｅｒ：Ｃ．\u3000Levothyroxine", "C"),
        # A discourse opener before the leading phrase.
        ("So the answer is C", "C"),
        ("Therefore, the answer is C", "C"),
        ("I think the answer is C", "C"),
        ("So, I think the correct answer is (C).", "C"),
        ("Thus the answer is C) Levothyroxine", "C"),
        ("In conclusion, the best option is **C**", "C"),
        # Zero-width characters and direction marks do not count.
        ("\u200bC\u200b", "C"),
        ("\u200eC\u200f", "C"),
        ("C\u200b.", "C"),
        ("**\u2060C\u2060**", "C"),
        ("\ufeffThe answer is \u202aC\u202c", "C"),
    ],
)
def test_answer_forms_that_name_a_letter(block, letter):
    assert parse_answer_letter(block) == letter


@pytest.mark.parametrize(
    "block",
    [
        "",
        "   ",
        "Levothyroxine",
        "A or C",
        "A, C",
        "C/D",
        "CD",
        "A and C",
        "(A) or (C)",
        "(A), (C)",
        "A) B)",
        "C. D",
        "C. Levothyroxine or D. Radioactive iodine",
        "3",
        "(3)",
        "K",
        "(K)",
        "A 45-year-old man",
        "I think it is C",
        "C Levothyroxine",
        "(A)(C)",
        "c.",
        "the answer is c",
        "**A** or **C**",
        "(C",
        "C]",
        "\\boxed{C}",
        # Two option markers, whatever joins them.
        "C. Right coronary artery D. Left main coronary artery",
        "(C) Right coronary artery (D) Left main coronary artery",
        "C. Right coronary artery, D. Left main coronary artery",
        "C) RCA; D) LMCA",
        "C: RCA D: LMCA",
        "[C] RCA [D] LMCA",
        "(c) RCA (d) LMCA",
        "C. D, E",
        # Lower case stays a bare lone letter or a bracketed one.
        "c)",
        "(c) (d)",
        "(c) or (d)",
        # An opener needs the leading phrase after it.
        "So C",
        "I think C",
        "Therefore C",
        "So the answer is C or D",
        # Normalized text is graded like any other.
        "Ｃ or Ｄ",
        "Ｋ",
        "３",
        "\u200bA or C",
        "C\u200bD",
    ],
)
def test_answer_forms_that_name_no_letter(block):
    assert parse_answer_letter(block) is None


def test_only_the_first_thousand_characters_of_an_answer_block_are_read():
    wording = " Levothyroxine" * 80  # 1,120 characters
    assert parse_answer_letter(" " * 5000 + "The answer is\n" + " " * 5000 + "(C)" + wording) == "C"
    assert parse_answer_letter("\u200bＣ." + wording) == "C"
    assert parse_answer_letter("C." + wording[:980] + " D. Propranolol") is None
    assert parse_answer_letter("C." + wording + " D. Propranolol") == "C"


def real_option_lists() -> list[list[str]]:
    """The options of every MedQA-USMLE dev and test question and every MMLU-Pro health question."""
    files, health = [real_file(MEDQA_DEV), real_file(MEDQA_TEST)], real_file(MMLU_PRO_HEALTH)
    rows = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
    options = [list(row["options"].values()) for row in rows]
    return options + [json.loads(line)["options"] for line in health.read_text(encoding="utf-8").splitlines()]


def test_real_options_after_their_letter_name_it_and_two_options_name_none():
    named, hedges = [], []
    for options in real_option_lists():
        # An option whose whole text is a letter ("C. D") reads as a hedge, by rule.
        letters = [
            (letter, " ".join(text.split()))
            for letter, text in zip("ABCDEFGHIJ", options, strict=False)
            if len(text) > 1
        ]
        for letter, text in letters:
            named += [(f"{letter}. {text}", letter), (f"({letter}) {text}", letter), (f"{letter}) {text}", letter)]
        for (first, text), (second, other) in zip(letters, letters[1:], strict=False):
            if not other[0].islower():  # "C. hCG D. pH" reads as C: the price of reading "C. E. coli" as C
                hedges += [
                    f"{first}. {text} {second}. {other}",
                    f"({first}) {text} ({second}) {other}",
                    f"{first}) {text}; {second}) {other}",
                    f"{first}. {text}, {second}. {other}",
                ]
    assert [block for block, letter in named if parse_answer_letter(block) != letter] == []
    assert [block for block in hedges if parse_answer_letter(block) is not None] == []
    assert len(named) > 50000 and len(hedges) > 50000


@pytest.mark.parametrize("label", ["C", "c", " C ", "(C)", "[c]", "C.", "C\n"])
def test_labels_accepted(label):
    assert parse_label(label) == "C"


@pytest.mark.parametrize(
    "label, cause",
    [
        ("", "--data.label_key"),
        ("Levothyroxine", "label_key"),
        (2, "label_key"),
        ("K", "label_key"),
        (None, "label_key"),
    ],
)
def test_labels_naming_no_letter_raise_with_the_cause(label, cause):
    with pytest.raises(ValueError, match="names no option letter") as raised:
        grade(f"<think>{REASONING}</think><answer>C</answer>", label=label)
    assert cause in str(raised.value) and repr(label) in str(raised.value)


WELL_FORMED = [
    f" <think>{REASONING}</think> <answer>C</answer>",
    f"<think>\n{REASONING}\n</think>\n<answer>\nC. Levothyroxine\n</answer>\n",
    f" <think>{REASONING}</think><answer>The correct answer is (C).</answer><|endoftext|>",
    f" <think>{REASONING}</think><answer>C</answer><|im_end|>\n<|endoftext|>",
    f" <think>{REASONING}</think><answer>C</answer></s>",
    f" <think>{REASONING}</think><answer>C</answer> <eos>",
    f" <think>{REASONING}</think><answer>C</answer><pad><pad><pad>",
    f" <think>{REASONING}</think><answer>C</answer><｜end▁of▁sentence｜>",
]


@pytest.mark.parametrize("response", WELL_FORMED)
def test_well_formed_responses_earn_the_scheme_rewards(response):
    right = grade(response)
    assert (right.well_formed, right.correct, right.reward) == (True, True, 1.0)
    for label, config, reward in [("A", RewardConfig(), 0.0), ("A", PENALIZED, -1.0)]:
        wrong = grade(response, config, label=label)
        assert (wrong.well_formed, wrong.correct, wrong.reward) == (True, False, reward)


@pytest.mark.parametrize(
    "response, error",
    [
        (f" {REASONING} The answer is C.", "exactly once"),
        (f" <think>{REASONING}</think>", "exactly once"),
        (f" <think>{REASONING}<answer>C</answer>", "exactly once"),
        (f" <think>{REASONING}</think><think>more</think><answer>C</answer>", "exactly once"),
        (f" <think>{REASONING}</think><answer>C</answer><answer>C</answer>", "exactly once"),
        (f" <THINK>{REASONING}</THINK><answer>C</answer>", "exactly once"),
        (f" <thinking>{REASONING}</thinking><answer>C</answer>", "exactly once"),
        (f" <think>{REASONING}</think><ANSWER>C</ANSWER>", "exactly once"),
        (f" <answer>C</answer><think>{REASONING}</think>", "out of order"),
        (f" </think>{REASONING}<think><answer>C</answer>", "out of order"),
        (f" <think>{REASONING}<answer>C</answer></think>", "out of order"),
        (" <think> \n </think><answer>C</answer>", "empty thinking"),
        (" <think></think><answer>C</answer>", "empty thinking"),
        (f" <think>{REASONING}</think> So: <answer>C</answer>", "between </think> and <answer>"),
        (f" <think>{REASONING}</think><answer>C</answer> Hope this helps.", "after </answer>"),
        (f" <think>{REASONING}</think><answer>C</answer><|im_end|>\nHuman: thanks", "after </answer>"),
        (f" <think>{REASONING}</think><answer></answer>", "names no single option letter"),
        (f" <think>{REASONING}</think><answer>Levothyroxine</answer>", "names no single option letter"),
        (f" <think>{REASONING}</think><answer>B or C</answer>", "names no single option letter"),
    ],
)
def test_malformed_responses_earn_minus_one_under_both_schemes(response, error):
    for config in (RewardConfig(), PENALIZED, STRICT):
        verdict = grade(response, config)
        assert (verdict.well_formed, verdict.correct, verdict.reward) == (False, False, -1.0)
        assert error in verdict.error


def test_text_before_think_is_allowed_only_in_lenient_format():
    response = f" Let me solve this step by step. {REASONING} <think>Hypothyroidism.</think><answer>C</answer>"
    lenient, strict = grade(response), grade(response, STRICT)
    assert (lenient.well_formed, lenient.reward, lenient.preamble) == (True, 1.0, True)
    assert (strict.well_formed, strict.reward, strict.preamble) == (False, -1.0, True)
    assert "before <think>" in strict.error
    assert grade(f" \n <think>{REASONING}</think><answer>C</answer>", STRICT).reward == 1.0


def test_prompt_ending_with_think_opens_the_block_for_the_model():
    prompt = PROMPT + " <think>"
    verdict = grade_response(prompt + f"{REASONING}</think> <answer>C</answer>", prompt, GOLD)
    assert verdict.completion.startswith("<think>" + REASONING)
    assert (verdict.well_formed, verdict.reward) == (True, 1.0)
    # A second <think> from the model is then a repeated tag.
    assert grade_response(prompt + f"<think>{REASONING}</think><answer>C</answer>", prompt, GOLD).reward == -1.0


def test_query_starting_partway_through_a_left_truncated_prompt():
    response = f" <think>{REASONING}</think> <answer>C</answer><|endoftext|>"
    for cut in (1, 40, len(PROMPT) // 2, len(PROMPT) - 70):
        query = PROMPT[cut:] + response
        completion, found = extract_completion(query, PROMPT)
        assert found and completion == response.removesuffix("<|endoftext|>")
        # A token boundary inside a multi-byte character decodes as U+FFFD.
        completion, found = extract_completion("\ufffd" + query, PROMPT)
        assert found and completion == response.removesuffix("<|endoftext|>")
    assert grade_response(PROMPT[300:] + response, PROMPT, GOLD).reward == 1.0


def test_truncated_query_whose_response_repeats_the_prompt_ending():
    # The response quotes the prompt's last lines; the split must stay at the real prompt end.
    tail = PROMPT[-120:]
    response = f" <think>{tail}{REASONING}</think><answer>C</answer>"
    completion, found = extract_completion(PROMPT[200:] + response, PROMPT)
    assert found and completion == response


@pytest.mark.parametrize("kept", [1, 2, 10, 63])
def test_left_truncated_prompt_of_which_only_a_short_tail_survives(kept):
    # The response repeats the prompt's last line, which a search for that line would take for the split.
    response = f" I recall a similar case. Assistant: <think>{REASONING}</think><answer>C</answer>"
    for broken in ("", "\ufffd"):
        completion, found = extract_completion(broken + PROMPT[-kept:] + response, PROMPT)
        assert found and completion == response
    assert (
        grade_response(PROMPT[-kept:] + response, PROMPT, GOLD, STRICT).error == "text before <think> (strict format)"
    )


def test_chat_prompt_truncated_to_its_last_line():
    chat = "<|im_start|>user\nWhich is the treatment?\nC. Levothyroxine<|im_end|>\n<|im_start|>assistant\n"
    response = f"<think>{REASONING}</think>\n<answer>C</answer><|im_end|>"
    for kept in ("assistant\n", "\n"):
        verdict = grade_response(kept + response, chat, GOLD, STRICT)
        assert (verdict.prompt_found, verdict.reward) == (True, 1.0)


def test_truncated_prompt_whose_surviving_lines_also_occur_earlier_in_it():
    line = "Answer with one of the letters A, B, C, D, E and nothing else.\n"
    prompt = line * 3 + "Assistant:"
    response = f" <think>{REASONING}</think><answer>C</answer>"
    for kept in (len(line) * 2 + 10, len(line) + 30, 5):
        completion, found = extract_completion(prompt[-kept:] + response, prompt)
        assert found and completion == response


@settings(max_examples=400, deadline=None)
@given(prompt=st.text("ab", min_size=1, max_size=80), query=st.text("abc", max_size=160))
def test_the_split_follows_the_longest_prompt_suffix_the_query_starts_with(prompt, query):
    assume(prompt not in query)  # a whole prompt inside the query is the BOS-prefix case
    # Quadratic, obviously right reference: try every suffix length, longest first.
    longest = next(k for k in range(len(prompt), -1, -1) if query.startswith(prompt[len(prompt) - k :]))
    completion, found = extract_completion(query, prompt)
    assert found == (longest > 0)
    if found:
        assert completion == query[longest:]


def test_prefix_before_the_prompt_and_a_prompt_that_did_not_round_trip():
    response = f" <think>{REASONING}</think><answer>C</answer>"
    completion, found = extract_completion("<s>" + PROMPT + response, PROMPT)
    assert found and completion == response
    # A decode that changed whitespace inside the prompt: the split falls after the last line, flagged.
    altered = PROMPT.replace("User: ", "User:  ")
    completion, found = extract_completion(altered + response, PROMPT)
    assert not found and completion == response


@pytest.mark.parametrize(
    "think, leak",
    [
        ("C", True),
        (" (C) ", True),
        ("The answer is C.", True),
        ("C. Levothyroxine", True),
        ("Levothyroxine", True),
        ("levothyroxine.", True),
        ("The answer is Levothyroxine", True),
        ("**Answer:** C", True),
        ("B", False),  # states a different letter than the one answered
        ("C. Levothyroxine, because TSH is high and T4 is low.", False),
        ("Levothyroxine replaces the missing hormone.", False),
        (REASONING, False),
    ],
)
def test_answer_leak_is_a_thinking_block_that_only_states_the_chosen_option(think, leak):
    assert is_answer_leak(think, "C", "Levothyroxine") is leak
    verdict = grade(f" <think>{think}</think><answer>C</answer>")
    assert verdict.answer_leak is leak


def test_leak_penalty_and_minimum_thinking_length_lower_the_reward_but_never_below_minus_one():
    leak = " <think>The answer is C.</think><answer>C</answer>"
    assert grade(leak).reward == 1.0
    assert grade(leak, RewardConfig(leak_penalty=0.5)).reward == 0.5
    assert grade(leak, RewardConfig(leak_penalty=0.5), label="A").reward == -0.5
    assert grade(leak, RewardConfig(scheme="penalized", leak_penalty=0.5), label="A").reward == -1.0
    assert grade(f" <think>{REASONING}</think><answer>C</answer>", RewardConfig(leak_penalty=0.5)).reward == 1.0

    short = " <think>Hypothyroidism: replace hormone.</think><answer>C</answer>"  # 3 words
    assert grade(short, RewardConfig(min_think_words=3)).reward == 1.0
    assert grade(short, RewardConfig(min_think_words=4)).reward == 0.0
    assert grade(short, RewardConfig(min_think_words=4, short_think_penalty=0.25)).reward == 0.75
    assert grade(short, RewardConfig(min_think_words=4), label="A").reward == -1.0
    # Shaping applies to well-formed responses only; a scored response stays scored.
    verdict = grade(short, RewardConfig(min_think_words=4))
    assert verdict.correct and verdict.think_words == 3


def test_config_from_environment():
    assert config_from_env({}) == RewardConfig()
    assert config_from_env(
        {
            "PATH": "/bin",
            "MED_RLVR_REWARD_SCHEME": "penalized",
            "MED_RLVR_FORMAT": "strict",
            "MED_RLVR_LEAK_PENALTY": "0.5",
            "MED_RLVR_MIN_THINK_WORDS": "20",
            "MED_RLVR_SHORT_THINK_PENALTY": "0.3",
        }
    ) == RewardConfig("penalized", "strict", 0.5, 20, 0.3)
    for environ, message in [
        ({"MED_RLVR_REWARD_SCHEME": "negative"}, "MED_RLVR_REWARD_SCHEME='negative'.*valid: neutral, penalized"),
        ({"MED_RLVR_FORMAT": "loose"}, "MED_RLVR_FORMAT='loose'.*valid: lenient, strict"),
        ({"MED_RLVR_LEAK_PENALTY": "-1"}, "MED_RLVR_LEAK_PENALTY='-1'.*>= 0"),
        ({"MED_RLVR_LEAK_PENALTY": "nan"}, "MED_RLVR_LEAK_PENALTY='nan'"),
        ({"MED_RLVR_MIN_THINK_WORDS": "1.5"}, "MED_RLVR_MIN_THINK_WORDS='1.5'"),
        ({"MED_RLVR_SCHEME": "penalized"}, "unknown variable MED_RLVR_SCHEME; valid: MED_RLVR_REWARD_SCHEME"),
    ]:
        with pytest.raises(ValueError, match=message):
            config_from_env(environ)


def test_adversarial_responses_are_graded_not_raised():
    for response in [
        "<think>" * 20000,
        "<think>x</think><answer>" + "(" * 50000 + "</answer>",
        "<think>x</think><answer>" + "The answer is " * 5000 + "</answer>",
        "<think>x</think><answer>Answer" + " " * 100000 + "!</answer>",
        "<think>x</think><answer>C" + ". C" * 30000 + "</answer>",
        "<think>x</think><answer>C</answer>" + "<|im_end|>" * 20000 + "x",
        "\ufffd" * 1000 + "<|" * 10000,
    ]:
        verdict = grade(response)
        assert verdict.reward == -1.0 and not verdict.well_formed
    # A long run of trailing special tokens is stripped whole.
    verdict = grade(f" <think>{REASONING}</think><answer>C</answer>" + "<|im_end|>\n" * 20000)
    assert verdict.reward == 1.0


# Fragments that make random responses hit the interesting branches far more often than random text.
FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "C",
        "(B)",
        "A or C",
        "The answer is ",
        " ",
        "\n",
        REASONING,
        "<|im_end|>",
        "<|endoftext|>",
        "Levothyroxine",
        "c",
        ".",
        "**",
    ]
)
RESPONSES = st.one_of(
    st.text(max_size=200), st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=12).map("".join)
)
SUFFIXES = st.lists(
    st.sampled_from(
        ["<|im_end|>", "<|endoftext|>", "</s>", "<eos>", "<pad>", " ", "\n", "\t", "\u00a0", "\u3000", " \n" * 40]
    ),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(response=RESPONSES, label=st.sampled_from("ABCDE"), penalized=st.booleans(), strict=st.booleans())
def test_any_response_gets_a_reward_in_the_rule_set(response, label, penalized, strict):
    config = RewardConfig(scheme="penalized" if penalized else "neutral", format="strict" if strict else "lenient")
    verdict = grade(response, config, label=label)
    assert verdict.reward in {-1.0, 0.0, 1.0}
    assert verdict.correct == (verdict.reward == 1.0)
    assert verdict.well_formed == (verdict.error is None)


@settings(max_examples=400, deadline=None)
@given(response=RESPONSES, suffix=SUFFIXES)
def test_trailing_special_tokens_and_whitespace_never_change_the_grade(response, suffix):
    plain, padded = grade(response), grade(response + "".join(suffix))
    assert (padded.reward, padded.error, padded.letter) == (plain.reward, plain.error, plain.letter)


def test_answer_leak_with_a_long_option_and_a_long_leading_phrase():
    option = "Begin oral levothyroxine at a low dose and recheck the TSH level in six weeks"
    assert is_answer_leak(f"**The correct answer is :** C. {option}.", "C", option)
    assert is_answer_leak(f"The correct answer is {option}", "C", option)
    assert not is_answer_leak(f"**The correct answer is :** C. {option}, since T4 is low.", "C", option)
    assert not is_answer_leak(f"C. {option} " + "reasoning " * 10000, "C", option)


# Responses shaped like well-formed ones, with any text (tags and `<` included) in each part.
PARTS = st.one_of(st.text("aC .\n\u3000", max_size=8), st.text("a <>/", max_size=6), FRAGMENTS)
GAPS = st.sampled_from(["", " ", "\n \u3000", "x", "<", "</answer>"])
SHAPED = st.tuples(PARTS, PARTS, GAPS, PARTS, GAPS).map(
    lambda parts: "{}<think>{}</think>{}<answer>{}</answer>{}".format(*parts)
)


@settings(max_examples=1000, deadline=None)
@given(response=st.one_of(RESPONSES, SHAPED))
def test_the_one_pass_reading_of_a_usual_completion_agrees_with_the_checks(response):
    # grade_response reads a usual completion with one regular expression and any other with the format's
    # checks one by one; wherever the first applies, the second must give the same parts and no error.
    usual = _USUAL.fullmatch(response)
    if usual:
        assert _read_tags(response) == (*usual.groups(), None)


@pytest.mark.parametrize(
    "response",
    [
        f" <think>TSH > 10 mU/L and free T4 < 0.8 ng/dL. {REASONING}</think><answer>C</answer>",
        f" <think>{REASONING}</think><answer>C. Levothyroxine, < 1.6 ug/kg/day</answer>",
        f" <think>{REASONING} (a ratio <1)</think>\n<answer>(C)</answer><|im_end|>",
    ],
)
def test_a_less_than_sign_in_a_well_formed_response_changes_nothing(response):
    verdict = grade(response)
    assert (verdict.well_formed, verdict.reward, verdict.letter) == (True, 1.0, "C")


@settings(max_examples=400, deadline=None)
@given(think=st.text(st.sampled_from("ab. \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000\u200bé"), max_size=60))
def test_think_words_are_the_whitespace_separated_words(think):
    assert grade(f"<think>{think}</think><answer>C</answer>").think_words == len(think.split())


@pytest.mark.parametrize(
    "text, words",
    [
        ("答案是B。", 4),  # each CJK character a word; the full stop separates, and is no word
        ("TSH升高，T4降低。", 6),
        ("患者乏力、怕冷、体重增加", 10),
        ("甲状腺機能低下症です", 10),  # Japanese: kanji and kana
        ("La respuesta es C. ¡Claro!", 5),  # Latin scripts: whitespace words, as before
        ("ใช่ครับ ไม่ใช่", 2),  # Thai: one word per space-separated run (a documented limit)
        ("", 0),
    ],
)
def test_words_are_counted_in_every_script(text, words):
    assert count_words(text) == words


def test_the_minimum_thinking_length_holds_chinese_thinking_to_its_characters():
    thinking = "TSH升高、游离T4降低，为原发性甲减；抗TPO抗体阳性，提示桥本甲状腺炎。"
    verdict = grade(f" <think>{thinking}</think><answer>C</answer>", RewardConfig(min_think_words=20))
    assert verdict.think_words == 28 and verdict.reward == 1.0  # TSH, T4, TPO and 25 characters
    short = grade(" <think>甲减，选C。</think><answer>C</answer>", RewardConfig(min_think_words=20))
    assert short.think_words == 4 and short.reward == 0.0
    # A Chinese option of many characters is still a leak when the thinking only states it.
    option = "左旋甲状腺素钠片口服替代治疗并定期复查甲状腺功能"
    assert is_answer_leak(option, "C", option) and not is_answer_leak(thinking + option, "C", option)


def test_a_grade_is_a_frozen_dataclass_with_exactly_its_fields():
    for response in (WELL_FORMED[0], " <think></think><answer>C</answer>", "no tags"):
        verdict = grade(response)
        assert vars(verdict).keys() == {field.name for field in dataclasses.fields(Grade)}
        assert Grade(**vars(verdict)) == verdict and hash(Grade(**vars(verdict))) == hash(verdict)
        with pytest.raises(dataclasses.FrozenInstanceError):
            verdict.reward = 1.0
