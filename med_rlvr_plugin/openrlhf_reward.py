"""The Med-RLVR reward for OpenRLHF 0.11.2: `--reward.remote_url med_rlvr_plugin/openrlhf_reward.py`.

OpenRLHF loads this file by path in every rollout actor and calls `reward_func([query], [prompt], [label])`
once per generated sample, from a thread pool. The configuration comes from environment variables read
once, when the file is loaded (docs/verifier.md, "Reward configuration"):

    MED_RLVR_REWARD_SCHEME        neutral (default, the paper's) | penalized (wrong answers earn -1)
    MED_RLVR_FORMAT               lenient (default, the paper's) | strict (nothing may precede <think>)
    MED_RLVR_LEAK_PENALTY         float >= 0, default 0 (off): subtracted when <think> merely states the answer
    MED_RLVR_MIN_THINK_WORDS      int >= 0, default 0 (off): shorter thinking blocks lose ...
    MED_RLVR_SHORT_THINK_PENALTY  float >= 0, default 1.0: ... this much

A bad value fails the load with a message listing the valid ones. Under `ray job submit`, set them as the
job's runtime-env `env_vars` (the launch scripts do): a variable the entrypoint merely exports does not
reach the rollout actors.
"""

import os
import sys
from pathlib import Path

try:
    from med_rlvr_plugin.verifier import config_from_env, grade_response
except ImportError:
    # Loaded by path from a checkout that is neither installed nor a Ray job's working_dir (which is on
    # PYTHONPATH): the package is the folder this file sits in.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from med_rlvr_plugin.verifier import config_from_env, grade_response

CONFIG = config_from_env(os.environ)
print(f"med-rlvr reward: {CONFIG}", file=sys.stderr, flush=True)
_reported = set()  # messages already printed once in this process (set.add is atomic under the GIL)


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        print(message, file=sys.stderr, flush=True)


def reward_func(queries: list[str], prompts: list[str], labels: list, **kwargs) -> dict:
    """Rewards for OpenRLHF samples: a float per sample (the float itself for OpenRLHF's batch of one).

    `scores` is 1.0 for a well-formed correct response, else 0.0 (OpenRLHF's dynamic filtering reads it).
    `extra_logs` has the same keys on every sample; OpenRLHF averages them per step into `train/<key>`.
    A label naming no option letter is a configuration error: it is printed to stderr, because OpenRLHF
    logs a reward function's exceptions only at INFO level, and raised.
    """
    rewards, scores, logs = [], [], {}
    for query, prompt, label in zip(queries, prompts, labels, strict=True):
        try:
            grade = grade_response(query, prompt, label, CONFIG)
        except ValueError as error:
            _report_once(str(error))
            raise
        if not grade.prompt_found:
            _report_once(
                "med-rlvr: the prompt was not found at the start of the query (the tokenizer's decode does not "
                "reproduce it); the response is taken to follow the prompt's last line. Watch train/prompt_not_found."
            )
        rewards.append(grade.reward)
        scores.append(float(grade.correct))
        sample_logs = {
            "accuracy": grade.correct,
            "well_formed": grade.well_formed,
            "preamble": grade.preamble,
            "answer_leak": grade.answer_leak,
            "think_words": grade.think_words,
            "response_chars": len(grade.completion),
            "prompt_not_found": not grade.prompt_found,
        }
        for key, value in sample_logs.items():
            logs.setdefault(key, []).append(float(value))
    if len(rewards) == 1:
        return {"rewards": rewards[0], "scores": scores[0], "extra_logs": {key: values[0] for key, values in logs.items()}}
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}
