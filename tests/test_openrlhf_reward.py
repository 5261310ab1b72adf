"""The reward file as OpenRLHF 0.11.2 runs it: loaded by path by the real SingleTurnAgentExecutor, which
tokenizes the prompt, truncates it, asks the engine for a continuation, decodes prompt + response with
special tokens, and calls `reward_func` from a thread pool. Only the vLLM engine is a stand-in."""

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from med_rlvr_plugin.prompts import render_chat_prompt, render_prompt
from tests.tokenizer_fixtures import qwen25_tokenizer

openrlhf_agent = pytest.importorskip("openrlhf.utils.agent", reason="openrlhf 0.11.2 is not installed")

REWARD_FILE = str(Path(__file__).resolve().parents[1] / "med_rlvr_plugin" / "openrlhf_reward.py")
BEHAVIOUR_KEYS = {
    "behaviour_format_failure",
    "behaviour_step_by_step_exploit",
    "behaviour_direct_answer_hacker",
    "behaviour_verbose_formatter",
    "behaviour_concise_structurer",
}
LOG_KEYS = {
    "accuracy",
    "well_formed",
    "preamble",
    "answer_leak",
    "think_words",
    "response_chars",
    "prompt_not_found",
    *BEHAVIOUR_KEYS,
}
# Questions written for these tests (not taken from any dataset); the gold letter is the last field.
QUESTIONS = [
    (
        "A 6-year-old has a honey-crusted facial rash. Which organism most likely causes it?",
        ["Staphylococcus aureus", "Candida albicans", "Herpes simplex virus", "Trichophyton rubrum"],
        "A",
    ),
    (
        "A 60-year-old smoker has hyponatremia and a central lung mass. Which tumor is most likely?",
        ["Adenocarcinoma", "Small cell carcinoma", "Squamous cell carcinoma", "Carcinoid", "Mesothelioma"],
        "B",
    ),
]


class CannedEngine:
    """Stands in for a vLLM engine (which needs a GPU): continues any prompt with a fixed response + EOS."""

    def __init__(self, tokenizer, response: str):
        self.token_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.text = response

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.prompt_token_ids = prompt_token_ids
        await asyncio.sleep(0)  # let the other requests interleave, as with a real engine
        output = SimpleNamespace(token_ids=self.token_ids, text=self.text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def run_executor(monkeypatch, samples, environ=None, max_length=4096):
    """Grade (prompt, label, response) samples concurrently through OpenRLHF's executor; its outputs."""
    for name, value in (environ or {}).items():
        monkeypatch.setenv(name, value)
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=REWARD_FILE)
    tokenizer = qwen25_tokenizer()
    params = SimpleNamespace(max_tokens=256, logprobs=None)

    async def run_all():
        return await asyncio.gather(
            *(
                executor.execute(prompt, label, params, max_length, tokenizer, CannedEngine(tokenizer, response))
                for prompt, label, response in samples
            )
        )

    return asyncio.run(run_all())


def responses_for(gold: str, wrong: str):
    """(response, neutral reward, penalized reward, accuracy) cases covering each verdict."""
    return [
        (f" <think>The findings point to option {gold}.</think> <answer>{gold}</answer>", 1.0, 1.0, 1.0),
        (f"<think>\nReasoning about each option in turn.\n</think>\n<answer>({gold})</answer>", 1.0, 1.0, 1.0),
        (f" <think>The findings point to option {wrong}.</think> <answer>{wrong}</answer>", 0.0, -1.0, 0.0),
        (f" The answer is {gold}.", -1.0, -1.0, 0.0),
        (f" <think>Hmm.</think> <answer>{gold} or {wrong}</answer>", -1.0, -1.0, 0.0),
    ]


@pytest.mark.parametrize("scheme, column", [("neutral", 1), ("penalized", 2)])
def test_executor_loads_the_file_by_path_and_grades_concurrent_samples(monkeypatch, scheme, column):
    samples, expected = [], []
    for question, options, gold in QUESTIONS:
        prompt = render_prompt(question, options)
        for case in responses_for(gold, "C" if gold != "C" else "D") * 10:
            samples.append((prompt, gold, case[0]))
            expected.append((case[column], case[3]))
    outputs = run_executor(monkeypatch, samples, {"MED_RLVR_REWARD_SCHEME": scheme})
    assert [(out["reward"], out["extra_logs"]["accuracy"]) for out in outputs] == expected
    assert [out["scores"] for out in outputs] == [accuracy for _, accuracy in expected]
    assert all(set(out["extra_logs"]) == LOG_KEYS for out in outputs)
    assert all(out["extra_logs"]["prompt_not_found"] == 0.0 for out in outputs)


def test_prompt_truncated_from_the_left_by_openrlhf(monkeypatch):
    question, options, gold = QUESTIONS[1]
    prompt = render_prompt(question, options)
    response = f" <think>Paraneoplastic SIADH suggests option {gold}.</think> <answer>{gold}</answer>"
    tokenizer = qwen25_tokenizer()
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # max_length - max_tokens leaves room for only part of the prompt: OpenRLHF keeps its last tokens.
    outputs = run_executor(monkeypatch, [(prompt, gold, response)], max_length=256 + prompt_tokens // 2)
    assert len(outputs[0]["observation_tokens"]) < prompt_tokens
    assert outputs[0]["reward"] == 1.0 and outputs[0]["extra_logs"]["prompt_not_found"] == 0.0


def test_prompt_truncated_to_its_last_two_tokens_by_openrlhf(monkeypatch):
    tokenizer = qwen25_tokenizer()
    question, options, gold = QUESTIONS[0]
    base = render_prompt(question, options)
    chat = tokenizer.apply_chat_template(
        render_chat_prompt(question, options), tokenize=False, add_generation_prompt=True
    )
    samples = [
        # Only "Assistant:" survives, and the response repeats it after a preamble that strict format rejects.
        (base, gold, f" Let me think. Assistant: <think>Impetigo.</think> <answer>{gold}</answer>"),
        # Only "assistant\n" survives.
        (chat, gold, f"<think>Impetigo.</think>\n<answer>{gold}</answer><|im_end|>"),
    ]
    outputs = run_executor(monkeypatch, samples, {"MED_RLVR_FORMAT": "strict"}, max_length=256 + 2)
    assert [out["observation_tokens"][:2] for out in outputs] == [
        tokenizer(text, add_special_tokens=False)["input_ids"][-2:] for text in (base, chat)
    ]
    assert [
        (out["reward"], out["extra_logs"]["preamble"], out["extra_logs"]["prompt_not_found"]) for out in outputs
    ] == [
        (-1.0, 1.0, 0.0),
        (1.0, 0.0, 0.0),
    ]


def test_chat_template_prompts_and_templates_that_open_the_think_block(monkeypatch):
    tokenizer = qwen25_tokenizer()
    question, options, gold = QUESTIONS[0]
    chat = tokenizer.apply_chat_template(
        render_chat_prompt(question, options), tokenize=False, add_generation_prompt=True
    )
    opened = chat + "<think>\n"
    outputs = run_executor(
        monkeypatch,
        [
            (chat, gold, f"<think>Impetigo.</think>\n<answer>{gold}</answer><|im_end|>"),
            (opened, gold, f"Impetigo.\n</think>\n<answer>{gold}</answer><|im_end|>"),
            (opened, gold, f"<think>Impetigo.</think>\n<answer>{gold}</answer><|im_end|>"),  # a second <think>
            (chat, gold, f"<think>Impetigo.</think>\n<answer>{gold}</answer><|im_end|>\n<|im_start|>user\nthanks"),
        ],
        {"MED_RLVR_FORMAT": "strict"},
    )
    assert [out["reward"] for out in outputs] == [1.0, 1.0, -1.0, -1.0]


def test_answer_leak_and_preamble_are_logged_and_the_leak_penalty_applies(monkeypatch):
    question, options, gold = QUESTIONS[0]
    prompt = render_prompt(question, options)
    samples = [
        (
            prompt,
            gold,
            f" Step 1: the rash is honey-crusted. Step 2: impetigo. <think>ok</think> <answer>{gold}</answer>",
        ),
        (prompt, gold, f" <think>{gold}. {options[0]}</think> <answer>{gold}</answer>"),
    ]
    outputs = run_executor(monkeypatch, samples, {"MED_RLVR_LEAK_PENALTY": "0.5"})
    assert [out["reward"] for out in outputs] == [1.0, 0.5]
    assert [out["extra_logs"]["preamble"] for out in outputs] == [1.0, 0.0]
    assert [out["extra_logs"]["answer_leak"] for out in outputs] == [0.0, 1.0]


def test_forgotten_label_key_is_reported_on_stderr_and_never_becomes_a_reward(monkeypatch, capfd):
    prompt = render_prompt(*QUESTIONS[0][:2])
    outputs = run_executor(monkeypatch, [(prompt, "", " <think>x</think> <answer>A</answer>")])
    # OpenRLHF swallows the exception (INFO log) and leaves the reward unset.
    assert outputs[0]["reward"] is None
    assert "--data.label_key" in capfd.readouterr().err


def test_bad_configuration_fails_when_openrlhf_loads_the_file(monkeypatch):
    monkeypatch.setenv("MED_RLVR_REWARD_SCHEME", "negative")
    with pytest.raises(ValueError, match="valid: neutral, penalized"):
        openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=REWARD_FILE)


@pytest.mark.integration
def test_file_loads_by_path_without_the_package_on_sys_path(tmp_path):
    # -I -S: no site-packages, no cwd on sys.path, so the file must find its own package folder.
    import subprocess
    import sys

    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('reward_func', {REWARD_FILE!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "prompt = 'User: q\\nA. x\\nB. y\\nAssistant:'\n"
        "print(module.reward_func([prompt + ' <think>y</think><answer>B</answer>'], [prompt], ['B'])['rewards'])\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"
