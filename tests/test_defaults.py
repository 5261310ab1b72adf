"""Every place that states a shared default states the value in med_rlvr_plugin/defaults.py.

Shell scripts, the lm-eval task YAML and the docs' tables cannot import Python, so each is read here: a
pattern per place, which must match at least once, and each match must be the default.
"""

import re
from pathlib import Path

import pytest

from med_rlvr_plugin.defaults import (
    CHECKPOINTS,
    DEV_SIZE,
    EVAL_SHARE,
    EVALS,
    MAX_NEW_TOKENS,
    MEDQA_TRAIN_ROWS,
    ROLLOUT_MAX_MB,
)

REPO = Path(__file__).resolve().parent.parent
PLACES = [
    ("launch/train_ppo_medqa.sh", r"--rollout\.max_new_tokens (\d+)", MAX_NEW_TOKENS),
    ("launch/eval_checkpoint.sh", r"--max-gen-toks N +\(default: the run's [^,]*, else (\d+)", MAX_NEW_TOKENS),
    ("med_rlvr_plugin/lm_eval_tasks/_medrlvr_template_yaml", r"\n  max_gen_toks: (\d+)", MAX_NEW_TOKENS),
    ("docs/launch.md", r"\| length \| `--data\.max_len \d+`, `--rollout\.max_new_tokens (\d+)`", MAX_NEW_TOKENS),
    ("docs/evaluation.md", r"`--max-gen-toks` \(default (\d+)", MAX_NEW_TOKENS),
    ("docs/data.md", r"`--dev-size` questions \(default (\d+)\)", DEV_SIZE),
    ("docs/launch.md", r"\(([\d,]+) training and \d+ dev prompts\)", MEDQA_TRAIN_ROWS - DEV_SIZE),
    ("docs/launch.md", r"\([\d,]+ training and (\d+) dev prompts\)", DEV_SIZE),
    ("docs/data.md", r"has only `train` \(([\d,]+) questions\)", MEDQA_TRAIN_ROWS),
    ("docs/verifier.md", r"\| `MED_RLVR_ROLLOUT_MAX_MB` \| MiB > 0 \| `(\d+)` \|", ROLLOUT_MAX_MB),
    (
        "med_rlvr_plugin/openrlhf_reward.py",
        r"MED_RLVR_ROLLOUT_MAX_MB +per-process file cap in MiB \(default (\d+)\)",
        ROLLOUT_MAX_MB,
    ),
    ("launch/train_ppo_medqa.sh", r"--checkpoints N +checkpoints over the run[^(]*\(default (\d+)\)", CHECKPOINTS),
    ("launch/train_sft_medqa.sh", r"--checkpoints N +checkpoints over the run[^(]*\(default (\d+)\)", CHECKPOINTS),
    ("docs/launch.md", r"`--checkpoints` \(default (\d+)\)", CHECKPOINTS),
    ("docs/launch.md", r"\| checkpoints \| (\d+) over the run", CHECKPOINTS),
    ("launch/train_ppo_medqa.sh", r"--eval-share F +periodic eval may cost[^(]*\(default ([\d.]+)\)", EVAL_SHARE),
    ("docs/launch.md", r"`--eval-share` \(default ([\d.]+)\)", EVAL_SHARE),
    ("launch/train_ppo_medqa.sh", r"--evals N +periodic evals at least[^(]*\(default (\d+)\)", EVALS),
    ("docs/launch.md", r"`--evals` \(default (\d+)\)", EVALS),
]


@pytest.mark.parametrize("path, pattern, default", PLACES, ids=lambda value: value if isinstance(value, str) else "")
def test_each_place_states_the_shared_default(path: str, pattern: str, default: float) -> None:
    found = re.findall(pattern, (REPO / path).read_text(encoding="utf-8"))
    assert found, f"{path}: no longer says /{pattern}/; update this test to where it states the default"
    assert {float(value.replace(",", "")) for value in found} == {default}, f"{path}: {found}, defaults.py: {default}"
