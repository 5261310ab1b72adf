"""The Med-RLVR reward as verl's custom reward function (verl 0.9.1; docs/reuse.md):

    reward.custom_reward_function.path=pkg://med_rlvr_plugin.verl_reward   (or this file's path)
    reward.custom_reward_function.name=compute_score

verl gives the function the response alone (`solution_str`, decoded without special tokens), never the
prompt. The parquet that `data_prep/prepare.py --verl` writes keeps the grader's prompt text in
`extra_info["prompt"]`, and the query is rebuilt as that prompt + the response. The OpenRLHF reward
file's `grade_sample` grades it, once, so grading, configuration (the MED_RLVR_* variables of verl's
workers, docs/verifier.md, read at the first call) and metrics are the same in both frameworks.
"""

import dataclasses
import sys
from pathlib import Path

try:
    from med_rlvr_plugin.openrlhf_reward import grade_sample
    from med_rlvr_plugin.verifier import RewardConfig
except ImportError:
    # Loaded by path (verl's loader) from a checkout that is not installed: the package is this file's folder.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from med_rlvr_plugin.openrlhf_reward import grade_sample
    from med_rlvr_plugin.verifier import RewardConfig

SETTINGS = {field.name for field in dataclasses.fields(RewardConfig)}


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs
) -> dict:
    """verl's reward for one response: `score` (the reward), `acc` (1.0 when well formed and right: verl's
    core validation metric), `pred` (the letter named, "" when none: verl's majority vote) and every metric
    of the reward file's `extra_logs`. Every sample returns the same keys, as verl requires.

    Other keyword arguments, which some verl reward managers pass (a reward router's address), are ignored;
    `reward_kwargs` naming a reward setting are refused: the settings are the MED_RLVR_* variables.
    """
    if settings := sorted(SETTINGS & kwargs.keys()):
        raise ValueError(
            f"med-rlvr: reward_kwargs {settings}: set the reward through the MED_RLVR_* variables "
            "of verl's workers instead (docs/reuse.md)"
        )
    prompt = (extra_info or {}).get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(
            "med-rlvr: the row's extra_info has no 'prompt' (the grader's prompt text; verl does not "
            "pass the prompt): prepare the parquet with data_prep/prepare.py --verl"
        )
    score = grade_sample(prompt + solution_str, prompt, ground_truth)
    grade = score.grade
    return {"score": grade.reward, "acc": float(grade.correct), "pred": grade.letter or "", **score.metrics}
