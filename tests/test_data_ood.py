"""The out-of-distribution sets: MedMCQA dev, PubMedQA's test split and MMLU's six medical subjects (the new
`mmlu` source, hub and CSV layouts) prepared by the documented commands from hand-written files in each
release's layout (tests/fixtures/ood), --exclude against training data, and the real sizes when the real
releases are given (MED_RLVR_TEST_OOD_DATA, tests/real_data.py)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from med_rlvr_plugin.data import SOURCES, DataError, format_row, prepare, read_rows
from tests.real_data import ood_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "ood"
MEDICAL = SOURCES["mmlu"].subsets


def prepared(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prepare_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "data_prep" / "prepare.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


# docs/data.md's commands for the OOD files, run in a folder holding the releases' files as the page names them.
OOD_COMMANDS = [
    ["medmcqa", "--input", "dev.json", "--output", "data/medmcqa_dev.jsonl"],
    [
        "pubmedqa",
        "--input",
        "ori_pqal.json",
        "--ids",
        "test_ground_truth.json",
        "--output",
        "data/pubmedqa_test.jsonl",
    ],
    ["mmlu", "--input", "mmlu/test", "--output", "data/mmlu_medical.jsonl"],
]


def releases(folder: Path) -> Path:
    """The hand-written releases where docs/data.md's commands read them: dev.json, ori_pqal.json and
    test_ground_truth.json at the top, MMLU's CSV folder as mmlu/test."""
    for name in ("medmcqa/dev.json", "pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json"):
        shutil.copy(FIXTURES / name, folder)
    shutil.copytree(FIXTURES / "mmlu", folder / "mmlu")
    return folder


def test_documented_commands_are_these():
    page = (REPO / "docs" / "data.md").read_text()
    for command in OOD_COMMANDS:
        assert "python data_prep/prepare.py " + " ".join(command) in page


def test_documented_commands_prepare_the_three_ood_sets(tmp_path):
    releases(tmp_path)
    for command in OOD_COMMANDS:
        done = prepare_cli(*command, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    medmcqa = prepared(tmp_path / "data" / "medmcqa_dev.jsonl")
    assert [row["label"] for row in medmcqa] == ["A", "B", "D", "C"]  # cop counted from 1, as the release does
    pubmedqa = prepared(tmp_path / "data" / "pubmedqa_test.jsonl")
    assert [(row["id"], row["label"], row["options"]) for row in pubmedqa] == [
        ("12345678", "A", ["yes", "no", "maybe"]),
        ("34567890", "C", ["yes", "no", "maybe"]),
    ]
    assert pubmedqa[0]["question"].startswith("METHODS: We studied 40 adults")  # the context is in the prompt
    mmlu = prepared(tmp_path / "data" / "mmlu_medical.jsonl")
    # the six medical subjects in the registry's order, two questions each; virology_test.csv is left out
    assert [row["metadata"]["subject"] for row in mmlu] == [subject for subject in MEDICAL for _ in range(2)]
    assert [row["label"] for row in mmlu[:4]] == ["B", "B", "C", "B"]
    assert {row["datasource"] for row in mmlu} == {"mmlu"}
    # a quoted field with a line break inside is one question
    assert mmlu[5]["question"] == "In the lac operon, the repressor binds to the\noperator when"
    assert mmlu[5]["prompt"].endswith("D. cAMP is high\nAnswer with one of the letters A, B, C, D.\nAssistant:")


def hub_copy(folder: Path, rows_by_subject: dict[str, list[dict]]) -> Path:
    """cais/mmlu's layout: a folder per subject config with its split's parquet file, configs in README.md."""
    card = ["---", "configs:"]
    for subject, rows in rows_by_subject.items():
        (folder / subject).mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(folder / subject / "test-00000-of-00001.parquet"))
        card += [f"- config_name: {subject}", "  data_files:", "  - split: test", f"    path: {subject}/test-*"]
    (folder / "README.md").write_text("\n".join(card + ["---", ""]))
    return folder


def test_mmlu_hub_layout_and_csv_release_give_identical_rows(tmp_path):
    source = SOURCES["mmlu"]
    from_csv = read_rows(source, FIXTURES / "mmlu" / "test")
    assert from_csv[0][0] == f"{FIXTURES / 'mmlu' / 'test' / 'anatomy_test.csv'}:1"
    assert from_csv[5][0].endswith("college_biology_test.csv:2")  # the record's first line
    by_subject: dict[str, list[dict]] = {}
    for _, row in from_csv:
        # the hub's rows: question, subject, choices, answer (an index from 0)
        by_subject.setdefault(row["subject"], []).append(
            {
                "question": row["question"],
                "subject": row["subject"],
                "choices": row["choices"],
                "answer": row["answer"],
            }
        )
    hub = dataclasses.replace(source, hub_path=str(hub_copy(tmp_path / "mmlu", by_subject)))
    from_hub = read_rows(hub, split="test")
    assert from_hub[2][0] == f"{tmp_path / 'mmlu'}/clinical_knowledge[test] row 0"  # one config after another
    assert [format_row(row, hub) for _, row in from_hub] == [format_row(row, source) for _, row in from_csv]


def test_mmlu_one_subject_file_or_category(tmp_path):
    one = prepare("mmlu", tmp_path / "virology.jsonl", input_path=FIXTURES / "mmlu" / "test" / "virology_test.csv")
    assert one["rows_written"] == 1
    summary = prepare("mmlu", tmp_path / "anatomy.jsonl", input_path=FIXTURES / "mmlu" / "test", category="anatomy")
    assert (summary["rows_read"], summary["rows_written"]) == (12, 2)
    assert {row["datasource"] for row in prepared(tmp_path / "anatomy.jsonl")} == {"mmlu_anatomy"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("anatomy_test.csv", "Q?,a,b,c,d\n", r"anatomy_test.csv:1: 5 columns; the release has 6"),
        ("anatomy_test.csv", "Q?,a,b,c,d,A\nR?,a,b,c,d,E\n", r"anatomy_test.csv:2: answer 'E' \(the last column\)"),
        ("anatomy_test.csv", b"Q\xe9?,a,b,c,d,A\n", r"anatomy_test.csv:1: not UTF-8"),
        ("anatomy.csv", "Q?,a,b,c,d,A\n", r"anatomy.csv: a CSV file of the release is named SUBJECT_test.csv"),
    ],
)
def test_mmlu_csv_errors_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=message):
        prepare("mmlu", tmp_path / "out.jsonl", input_path=path)


def test_mmlu_folder_must_hold_each_medical_subject_once(tmp_path):
    shutil.copytree(FIXTURES / "mmlu" / "test", tmp_path / "test")
    (tmp_path / "test" / "anatomy_test.csv").rename(tmp_path / "test" / "anatomy.txt")
    shutil.copy(tmp_path / "test" / "college_biology_test.csv", tmp_path / "test" / "college_biology_val.csv")
    with pytest.raises(DataError, match=r"found anatomy 0, clinical_knowledge 1, college_biology 2, "):
        prepare("mmlu", tmp_path / "out.jsonl", input_path=tmp_path / "test")


def test_exclude_checks_the_ood_sets_against_training_data(tmp_path):
    """A training file that holds an OOD question: preparing the OOD set with --exclude drops it (and the
    other way round, the training file drops the OOD set's questions), counted per file."""
    releases(tmp_path)
    for command in OOD_COMMANDS:
        assert prepare_cli(*command, cwd=tmp_path).returncode == 0
    train = tmp_path / "data" / "train.jsonl"
    rows = [prepared(tmp_path / "data" / name)[1] for name in ("medmcqa_dev.jsonl", "mmlu_medical.jsonl")]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = prepare("mmlu", tmp_path / "mmlu_clean.jsonl", input_path=tmp_path / "mmlu" / "test", exclude=[train])
    assert (summary["rows_excluded"], summary["rows_written"]) == (1, 11)
    summary = prepare("medmcqa", tmp_path / "medmcqa_clean.jsonl", input_path=tmp_path / "dev.json", exclude=[train])
    assert summary["excluded_by_file"] == {str(train): 1}
    ood = [tmp_path / "data" / name for name in ("medmcqa_dev.jsonl", "pubmedqa_test.jsonl", "mmlu_medical.jsonl")]
    summary = prepare("pubmedqa", tmp_path / "train.jsonl", input_path=tmp_path / "ori_pqal.json", exclude=ood)
    assert summary["excluded_by_file"] == {str(ood[0]): 0, str(ood[1]): 2, str(ood[2]): 0}


def test_real_ood_releases_have_the_published_sizes(tmp_path):
    """MedMCQA dev 4,183 questions, PubMedQA's test split 500, MMLU's six medical subjects 1,089."""
    medmcqa = prepare("medmcqa", tmp_path / "medmcqa.jsonl", input_path=ood_file("medmcqa"))
    pubmedqa = prepare(
        "pubmedqa", tmp_path / "pubmedqa.jsonl", input_path=ood_file("pubmedqa"), ids=ood_file("pubmedqa_ids")
    )
    mmlu = prepare("mmlu", tmp_path / "mmlu.jsonl", input_path=ood_file("mmlu"))
    sizes = [summary["rows_written"] for summary in (medmcqa, pubmedqa, mmlu)]
    assert sizes == [4183, 500, 1089]
    subjects = [row["metadata"]["subject"] for row in prepared(tmp_path / "mmlu.jsonl")]
    assert [subjects.count(subject) for subject in MEDICAL] == [135, 265, 144, 173, 100, 272]
