"""Where the tests find the real data files: MED_RLVR_TEST_DATA (MedQA, MMLU-Pro), MED_RLVR_TEST_OOD_DATA (the rest).

Default: ../shared/data beside the checkout (its README lists the files). When the variable is set (.ci/run
sets it), a missing file FAILS the test: CI said the data is there. Without it, a missing default folder
skips the test with the reason. The data is read in place, never copied into the project.

The out-of-distribution releases (MedMCQA's dev.json, PubMedQA's ori_pqal.json and test_ground_truth.json,
MMLU's CSV release) are not in the shared folder: their tests run only when MED_RLVR_TEST_OOD_DATA names a
folder holding them (OOD_FILES), and then a missing file fails.
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
OOD_VARIABLE = "MED_RLVR_TEST_OOD_DATA"
OOD_GIVEN = os.environ.pop(OOD_VARIABLE, None)
# The original releases' paths: MedMCQA's data.zip, PubMedQA's repository (data/), MMLU's data.tar (data/test).
OOD_FILES = {
    "medmcqa": "medmcqa/dev.json",
    "pubmedqa": "pubmedqa/ori_pqal.json",
    "pubmedqa_ids": "pubmedqa/test_ground_truth.json",
    "mmlu": "mmlu/test",
}


def real_file(relative: str) -> Path:
    """The real data file `relative` (one of the names above), or a failure or skip saying where it was looked for."""
    path = ROOT / relative
    if not path.is_file():
        if GIVEN:
            pytest.fail(f"{VARIABLE}={GIVEN} but {path} is missing; point it at the shared data folder")
        pytest.skip(f"real data not found at {path}: set {VARIABLE} to the shared data folder")
    return path


def ood_file(name: str) -> Path:
    """The real release OOD_FILES[name] under MED_RLVR_TEST_OOD_DATA: a skip without the variable, a failure
    when it is set and the file is missing."""
    if not OOD_GIVEN:
        pytest.skip(f"{OOD_VARIABLE} is not set: it names a folder holding {', '.join(OOD_FILES.values())}")
    path = Path(OOD_GIVEN) / OOD_FILES[name]
    if not path.exists():
        pytest.fail(f"{OOD_VARIABLE}={OOD_GIVEN} but {path} is missing")
    return path
