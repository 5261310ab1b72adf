"""The Med-RLVR prompt templates: the one place their text lives.

Data prep renders every prompt file with these functions, and the verifier's tests and the launch dry run
render their examples with them too, so a prompt the verifier grades is always a prompt training sees.
Pure Python, no dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence

from med_rlvr_plugin.verifier import LETTERS

# The paper's base-model template (DeepSeek-R1-Zero style). A base model has no chat template, so the
# conversation framing and the tag instructions are plain text, and the prompt ends with "Assistant:"
# for the model to continue.
BASE_PREAMBLE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)

# The chat variant's instructions: the same tag format, addressed to the model. They go in the user
# message (no system message) because some chat templates reject a system role and instruct models such
# as Qwen2.5-Instruct keep the default system prompt they were tuned with.
CHAT_INSTRUCTIONS = (
    "Answer the following multiple-choice question. First think about the reasoning process in the mind, "
    "then give the answer. Enclose the reasoning process and the answer within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)


def render_question(question: str, options: Sequence[str]) -> str:
    """The question, its options as `X. text` lines, and the sentence naming the valid letters.

    Option text has its whitespace (newlines included) collapsed to single spaces, so each option is
    exactly one line, which is how the verifier reads options back out of a prompt.
    """
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options, but the templates name at most {len(LETTERS)} (A-J)")
    letters = LETTERS[: len(options)]
    lines = [question.strip()]
    lines += [f"{letter}. {' '.join(text.split())}" for letter, text in zip(letters, options, strict=True)]
    lines.append(f"Answer with one of the letters {', '.join(letters)}.")
    return "\n".join(lines)


def render_prompt(question: str, options: Sequence[str]) -> str:
    """The base-model prompt: preamble, `User: ` + question and options, then a last line `Assistant:`."""
    return f"{BASE_PREAMBLE}\nUser: {render_question(question, options)}\nAssistant:"


def render_chat_prompt(question: str, options: Sequence[str]) -> list[dict[str, str]]:
    """The chat variant: one user message, for OpenRLHF's `--data.apply_chat_template`."""
    return [{"role": "user", "content": f"{CHAT_INSTRUCTIONS}\n{render_question(question, options)}"}]
