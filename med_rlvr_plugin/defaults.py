"""Defaults that more than one tool, script or page states: each value once, here.

The shell scripts, the lm-eval task YAML and the docs' tables cannot import them; tests/test_defaults.py
checks that each of those states the same value.
"""

MAX_NEW_TOKENS = 1024  # tokens a response may have: training's --rollout.max_new_tokens, evaluation's max_gen_toks
DEV_SIZE = 500  # questions prepare.py --dev-output carves out of MedQA train for periodic eval
MEDQA_TRAIN_ROWS = 10_178  # MedQA-USMLE 4-option train split (GBaker/MedQA-USMLE-4-options)
ROLLOUT_MAX_MB = 256  # per-process cap of the rollout-sample file (MED_RLVR_ROLLOUT_MAX_MB)
CHECKPOINTS = 10  # checkpoints over a training run (launch --checkpoints)
EVAL_SHARE = 0.1  # periodic eval's generation as a share of training's (launch --eval-share)
EVALS = 5  # periodic evals at least over a training run (launch --evals)
