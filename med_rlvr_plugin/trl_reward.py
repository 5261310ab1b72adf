"""The Med-RLVR reward as a TRL `GRPOTrainer` reward function (TRL 1.16; docs/reuse.md):

    from med_rlvr_plugin.trl_reward import med_rlvr_reward
    GRPOTrainer(model=..., reward_funcs=med_rlvr_reward, train_dataset=rows with `prompt` and `label`, ...)

TRL calls it with keyword arguments: `prompts`, `completions` (decoded without special tokens) and each
dataset column as a list with one entry per completion (a conversational completion's messages are
joined, each message's `reasoning_content`, which TRL's response schema fills when `tools=` is given, put
back inside `<think>...</think>` before its content); the gold letter comes from the `label` column
(rows written by data_prep/prepare.py have it). A plain-text prompt is the grader's prompt as it is; for a
conversational prompt (a list of messages) the grader's prompt is the messages' contents, one per line,
which hold the option lines the verifier reads. The OpenRLHF reward file's `grade_sample` grades, so
grading, configuration (the MED_RLVR_* variables, docs/verifier.md, read at the first call) and metrics
are the same: each of its `extra_logs` keys is logged as `med_rlvr/<key>`, beside TRL's own
`rewards/med_rlvr_reward/mean`.
"""

from med_rlvr_plugin.openrlhf_reward import grade_sample
from med_rlvr_plugin.verifier import THINK_CLOSE, THINK_OPEN

# What TRL itself passes besides the dataset's columns.
TRL_KWARGS = {"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


def med_rlvr_reward(prompts: list, completions: list, label: list | None = None, **kwargs) -> list[float]:
    """One reward per completion; the reward file's `extra_logs` go to TRL's `log_metric` when it passes one."""
    if label is None:
        columns = ", ".join(sorted(kwargs.keys() - TRL_KWARGS)) or "none besides prompt"
        raise ValueError(
            f"med-rlvr: the dataset has no `label` column (the gold option letter); its columns: "
            f"{columns}. Prepare it with data_prep/prepare.py, or rename the letter's column to `label`"
        )
    texts = [
        prompt if isinstance(prompt, str) else "\n".join(message["content"] for message in prompt)
        for prompt in prompts
    ]
    responses = [text if isinstance(text, str) else "".join(map(_text, text)) for text in completions]
    scores = [
        grade_sample(prompt + response, prompt, gold)
        for prompt, response, gold in zip(texts, responses, label, strict=True)
    ]
    if log_metric := kwargs.get("log_metric"):
        for score in scores:  # one value per completion: TRL averages them over the logging step
            for key, value in score.metrics.items():
                log_metric(f"med_rlvr/{key}", value)
    return [score.grade.reward for score in scores]


def _text(message: dict) -> str:
    """A completion message's text as the model wrote it. With `tools=`, TRL parses each completion with
    the chat template's response schema, which moves a leading `<think>...</think>` into
    `reasoning_content` (`thinking` for some families): the thinking goes back in its tags."""
    thinking = message.get("reasoning_content") or message.get("thinking")
    return f"{THINK_OPEN}{thinking}{THINK_CLOSE}{message['content'] or ''}" if thinking else message["content"] or ""
