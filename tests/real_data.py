"""Where the tests find the real MedQA and MMLU-Pro files: one setting, MED_RLVR_TEST_DATA.

Default: ../shared/data beside the checkout (its README lists the files). When the variable is set (.ci/run
sets it), a missing file FAILS the test: CI said the data is there. Without it, a missing default folder
skips the test with the reason. The data is read in place, never copied into the project.
"""

import os
from pathlib import Path

import pytest

VARIABLE = "MED_RLVR_TEST_DATA"
# Read once and taken out of the environment (conftest.py imports this module first): the MED_RLVR_ prefix
# belongs to the reward's variables, which refuse any other name, and every reward file, server and job a
# test starts inherits this process's environment.
GIVEN = os.environ.pop(VARIABLE, None)
ROOT = Path(GIVEN or Path(__file__).resolve().parents[2] / "shared" / "data")
MEDQA_DEV = "medqa/us_4opt_dev.jsonl"
MEDQA_TEST = "medqa/us_4opt_test.jsonl"
MMLU_PRO_HEALTH = "mmlu_pro/test_health.jsonl"


def real_file(relative: str) -> Path:
    """The real data file `relative` (one of the names above), or a failure or skip saying where it was looked for."""
    path = ROOT / relative
    if not path.is_file():
        if GIVEN:
            pytest.fail(f"{VARIABLE}={GIVEN} but {path} is missing; point it at the shared data folder")
        pytest.skip(f"real data not found at {path}: set {VARIABLE} to the shared data folder")
    return path
