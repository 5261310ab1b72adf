"""The dataset formatter on hand-written rows in each dataset's published format, and its command line."""

import dataclasses
import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.data import (
    SOURCES,
    DataError,
    PrepareOptions,
    format_row,
    prepare,
    read_rows,
    stated_letter,
    summary_path,
)
from med_rlvr_plugin.defaults import DEV_SIZE
from med_rlvr_plugin.files import write_together
from med_rlvr_plugin.prompts import render_chat_prompt, render_prompt

REPO = Path(__file__).resolve().parents[1]

# MedQA's original release (US, 5 options) and its hub mirror share these fields.
MEDQA_5 = {
    "question": "A 30-year-old woman has fatigue.\nHemoglobin 9 g/dL\nWhich of the following is the next step?",
    "answer": "Serum ferritin",
    "options": {
        "A": "Bone marrow biopsy",
        "B": "Reassurance",
        "C": "Colonoscopy",
        "D": "Iron infusion",
        "E": "Serum ferritin",
    },
    "meta_info": "step2&3",
    "answer_idx": "E",
    "metamap_phrases": ["30 year old woman", "fatigue"],
}
MEDQA_4 = {
    "question": "Which drug blocks cell wall synthesis?",
    "answer": "Ceftriaxone",
    "options": {"A": "Gentamicin", "B": "Ciprofloxacin", "C": "Ceftriaxone", "D": 'Trimethoprim\n"'},
    "meta_info": "step1",
    "answer_idx": "C",
    "metamap_phrases": [],
}
MMLU_PRO_7 = {
    "question_id": 7001,
    "question": "Which vitamin deficiency causes scurvy?",
    "options": ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D", "Vitamin E", "Vitamin K", "Folate"],
    "answer": "C",
    "answer_index": 2,
    "cot_content": "",
    "category": "health",
    "src": "ori_mmlu-nutrition",
}
MMLU_PRO_LAW = {
    **MMLU_PRO_7,
    "question_id": 7002,
    "question": "What is a tort?",
    "category": "law",
    "src": "ori_mmlu-law",
}
# MedMCQA: the hub copy counts `cop` from 0, the original release's JSON lines from 1. Explanations often
# open by stating the answer, which is evidence of the convention too.
MEDMCQA_HUB = [
    {
        "id": "a1",
        "question": "Atrophy follows chronic obstruction of the",
        "opa": "Ureter",
        "opb": "Liver",
        "opc": "Lung",
        "opd": "Skin",
        "cop": 0,
        "choice_type": "single",
        "exp": "Ans. is 'a' i.e., Ureter",
        "subject_name": "Pathology",
        "topic_name": None,
    },
    {
        "id": "a2",
        "question": "Normal adult heart rate is about",
        "opa": "20/min",
        "opb": "72/min",
        "opc": "150/min",
        "opd": "200/min",
        "cop": 1,
        "choice_type": "single",
        "exp": "Ans: (b) 72/min",
        "subject_name": "Physiology",
        "topic_name": "Heart",
    },
    {
        "id": "a3",
        "question": "Vitamin C deficiency causes",
        "opa": "Rickets",
        "opb": "Beriberi",
        "opc": "Pellagra",
        "opd": "Scurvy",
        "cop": 3,
        "choice_type": "single",
        "exp": "Ans. is 'd' i.e., Scurvy",
        "subject_name": "Biochemistry",
        "topic_name": "Vitamins",
    },
]
MEDMCQA_ORIGINAL = [{**row, "cop": row["cop"] + 1} for row in MEDMCQA_HUB]
PUBMEDQA = {
    "pubid": 12345678,
    "question": "Does aspirin reduce headache duration?",
    "context": {
        "contexts": ["We studied 40 adults\nwith tension headache.", "Aspirin shortened headaches by 2 hours."],
        "labels": ["METHODS", "RESULTS"],
        "meshes": ["Aspirin", "Headache"],
    },
    "long_answer": "Aspirin reduces headache duration.",
    "final_decision": "yes",
}

PREAMBLE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "data_prep" / "prepare.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)


def test_base_template_word_for_word():
    assert render_prompt("What is 2+2?\nThink.", ["3", "four\nexactly", "5"]) == (
        PREAMBLE + "\nUser: What is 2+2?\nThink.\nA. 3\nB. four exactly\nC. 5\n"
        "Answer with one of the letters A, B, C.\nAssistant:"
    )


def test_chat_template_is_one_user_message_with_the_same_question_block():
    [message] = render_chat_prompt("Which?", ["x", "y"])
    assert message["role"] == "user"
    assert message["content"].endswith("\nWhich?\nA. x\nB. y\nAnswer with one of the letters A, B.")
    assert "<think> </think>" in message["content"] and "<answer> </answer>" in message["content"]


def test_templates_refuse_more_than_ten_options():
    with pytest.raises(ValueError, match="at most 10"):
        render_prompt("Q", [str(i) for i in range(11)])


def test_medqa_five_options_original_release():
    out = format_row(MEDQA_5, SOURCES["medqa"])
    assert out["label"] == "E"
    assert out["options"] == ["Bone marrow biopsy", "Reassurance", "Colonoscopy", "Iron infusion", "Serum ferritin"]
    assert out["prompt"].endswith(
        "User: A 30-year-old woman has fatigue.\nHemoglobin 9 g/dL\nWhich of the following is the next step?\n"
        "A. Bone marrow biopsy\nB. Reassurance\nC. Colonoscopy\nD. Iron infusion\nE. Serum ferritin\n"
        "Answer with one of the letters A, B, C, D, E.\nAssistant:"
    )
    assert out["datasource"] == "medqa" and out["metadata"] == {"meta_info": "step2&3"}
    assert len(out["id"]) == 16


def test_medqa_option_newlines_collapse_and_id_follows_content():
    out = format_row(MEDQA_4, SOURCES["medqa"])
    assert '\nD. Trimethoprim "\nAnswer with one of the letters A, B, C, D.\n' in out["prompt"]
    assert format_row(dict(MEDQA_4), SOURCES["medqa"])["id"] == out["id"]
    changed = {**MEDQA_4, "options": {**MEDQA_4["options"], "A": "Vancomycin"}}
    assert format_row(changed, SOURCES["medqa"])["id"] != out["id"]


def test_mmlu_pro_fewer_than_ten_options():
    out = format_row(MMLU_PRO_7, SOURCES["mmlu_pro"])
    assert (out["label"], out["id"], out["metadata"]) == (
        "C",
        "7001",
        {"src": "ori_mmlu-nutrition", "category": "health"},
    )
    assert "\nG. Folate\nAnswer with one of the letters A, B, C, D, E, F, G.\nAssistant:" in out["prompt"]
    assert "\nH. " not in out["prompt"]


def test_chat_and_sft_rows():
    out = format_row(MMLU_PRO_7, SOURCES["mmlu_pro"], chat=True, sft=True)
    assert out["prompt"] == render_chat_prompt(MMLU_PRO_7["question"], MMLU_PRO_7["options"])
    assert out["response"] == [
        {"role": "assistant", "content": "<think> The correct option is C. Vitamin C </think> <answer>C</answer>"}
    ]
    base = format_row(MMLU_PRO_7, SOURCES["mmlu_pro"], sft=True)
    assert base["response"] == " <think> The correct option is C. Vitamin C </think> <answer>C</answer>"


def test_pubmedqa_contexts_in_question_and_yes_no_maybe_options():
    out = format_row(PUBMEDQA, SOURCES["pubmedqa"])
    assert out["question"] == (
        "METHODS: We studied 40 adults with tension headache.\nRESULTS: Aspirin shortened headaches by 2 hours.\n\n"
        "Does aspirin reduce headache duration?"
    )
    assert out["options"] == ["yes", "no", "maybe"] and out["label"] == "A"
    assert format_row({**PUBMEDQA, "final_decision": "maybe"}, SOURCES["pubmedqa"])["label"] == "C"
    assert out["id"] == "12345678" and out["metadata"] == {"meshes": ["Aspirin", "Headache"]}


@pytest.mark.parametrize(
    "dataset, row, field, reason",
    [
        ("medqa", {**MEDQA_4, "question": "  \n"}, "question", "question is empty"),
        (
            "medqa",
            {**MEDQA_4, "options": {"A": "Only one"}, "answer_idx": "A", "answer": "Only one"},
            "options",
            "1 options",
        ),
        ("medqa", {**MEDQA_4, "answer_idx": "E"}, "answer_idx", "'E' is not one of A, B, C, D"),
        ("medqa", {**MEDQA_4, "answer": "Gentamicin"}, "answer", "differs from option C"),
        ("medqa", {**MEDQA_4, "options": {"A": "x", "C": "y"}}, "options", "not consecutive letters"),
        ("medqa", {key: value for key, value in MEDQA_4.items() if key != "question"}, "question", "missing"),
        ("mmlu_pro", {**MMLU_PRO_7, "answer_index": 3}, "answer_index", "names D, but answer says C"),
        ("mmlu_pro", {**MMLU_PRO_7, "options": ["a", "", "c"]}, "options[1]", "option is empty"),
        ("mmlu_pro", {**MMLU_PRO_7, "options": [str(i) for i in range(11)]}, "options", "11 options"),
        ("pubmedqa", {**PUBMEDQA, "final_decision": "probably"}, "final_decision", "matches 0 options"),
        (
            "pubmedqa",
            {**PUBMEDQA, "context": {"contexts": ["a", "b"], "labels": ["X"]}},
            "context.labels",
            "one label per",
        ),
    ],
)
def test_bad_rows_name_field_and_reason(dataset, row, field, reason):
    with pytest.raises(DataError) as caught:
        format_row(row, SOURCES[dataset])
    assert caught.value.field == field and reason in caught.value.reason


def test_medmcqa_cop_out_of_range_and_test_split_hint():
    source = dataclasses.replace(SOURCES["medmcqa"], answer_index_base=0)
    assert format_row(MEDMCQA_HUB[1], source)["label"] == "B"
    with pytest.raises(DataError, match="test split"):
        format_row({**MEDMCQA_HUB[1], "cop": -1}, source)
    with pytest.raises(DataError, match="not an index of the 4 options counted from 0"):
        format_row({**MEDMCQA_HUB[1], "cop": 4}, source)


def test_bad_row_stops_the_run_with_file_line_field(tmp_path):
    source = write_jsonl(tmp_path / "dev.jsonl", [MEDQA_4, {**MEDQA_5, "answer_idx": "F"}])
    output = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as caught:
        prepare("medqa", output, input_path=source)
    message = str(caught.value)
    assert f"{source}:2: field 'answer_idx'" in message and "--skip-invalid" in message
    assert not output.exists() and list(tmp_path.iterdir()) == [source]


def test_skip_invalid_reports_each_row_and_the_count(tmp_path):
    rows = [MEDQA_4, {**MEDQA_4, "question": ""}, MEDQA_5, {**MEDQA_5, "answer": "Reassurance"}]
    source = write_jsonl(tmp_path / "dev.jsonl", rows)
    summary = prepare("medqa", tmp_path / "out.jsonl", input_path=source, skip_invalid=True)
    assert (summary["rows_read"], summary["rows_skipped"], summary["rows_written"]) == (4, 2, 2)
    assert [(row["location"], row["field"]) for row in summary["skipped"]] == [
        (f"{source}:2", "question"),
        (f"{source}:4", "answer"),
    ]
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["label"] for row in written] == ["C", "E"]
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text()) == summary


def test_medmcqa_hub_convention_from_a_cop_of_zero(tmp_path):
    source = write_jsonl(tmp_path / "dev.jsonl", MEDMCQA_HUB)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    labels = [json.loads(line)["label"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert labels == ["A", "B", "D"] and summary["cop_convention"].startswith("counted from 0")


def test_medmcqa_original_convention_from_a_cop_of_four(tmp_path):
    # The original release names its JSON lines files .json.
    source = write_jsonl(tmp_path / "dev.json", MEDMCQA_ORIGINAL)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["label"] for row in written] == ["A", "B", "D"]
    assert written[2]["metadata"] == {
        "subject_name": "Biochemistry",
        "topic_name": "Vitamins",
        "choice_type": "single",
    }
    assert summary["cop_convention"].startswith("counted from 1")


def test_medmcqa_ambiguous_cop_fails_until_a_flag_says(tmp_path):
    source = write_jsonl(tmp_path / "dev.json", [{**MEDMCQA_HUB[1], "cop": 2, "exp": ""}])
    with pytest.raises(DataError, match="--cop-base 0 or --cop-base 1"):
        prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source, cop_base=1)
    assert summary["label_distribution"] == {"B": 1} and "--cop-base 1" in summary["cop_convention"]


def test_medmcqa_mixed_conventions_fail(tmp_path):
    source = write_jsonl(tmp_path / "dev.json", [MEDMCQA_HUB[0], MEDMCQA_ORIGINAL[2]])
    with pytest.raises(DataError, match="mixes 0-based and 1-based"):
        prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)


def test_hub_loading_through_datasets_from_a_local_copy(tmp_path):
    # The hub code path, load_dataset(hub_path, config, split=...), pointed at a local folder of parquet
    # files: MedQA's options become a struct (padded with E: None for the 4-option row), PubMedQA's
    # context a nested struct, as on the hub.
    cases = (
        ("medqa", [MEDQA_4, MEDQA_5], [("C", 4), ("E", 5)]),
        ("pubmedqa", [PUBMEDQA, PUBMEDQA | {"final_decision": "no"}], [("A", 3), ("B", 3)]),
    )
    for name, rows, expected in cases:
        folder = tmp_path / name
        folder.mkdir()
        datasets.Dataset.from_list(rows).to_parquet(str(folder / "train-00000-of-00001.parquet"))
        source = dataclasses.replace(SOURCES[name], hub_path=str(folder), hub_config=None)
        located = read_rows(source, split="train")
        assert [location for location, _ in located] == [f"{folder}[train] row {i}" for i in range(len(rows))]
        formatted = [format_row(row, source) for _, row in located]
        assert [(out["label"], len(out["options"])) for out in formatted] == expected


def test_parquet_and_json_array_inputs(tmp_path):
    datasets.Dataset.from_list(MEDMCQA_HUB).to_parquet(str(tmp_path / "validation.parquet"))
    summary = prepare("medmcqa", tmp_path / "a.jsonl", input_path=tmp_path / "validation.parquet")
    assert summary["label_distribution"] == {"A": 1, "B": 1, "D": 1}
    (tmp_path / "health.json").write_text(json.dumps([MMLU_PRO_7, MMLU_PRO_LAW]))
    summary = prepare("mmlu_pro", tmp_path / "b.jsonl", input_path=tmp_path / "health.json", category="health")
    assert (summary["rows_read"], summary["rows_not_in_category"], summary["rows_written"]) == (2, 1, 1)
    assert json.loads((tmp_path / "b.jsonl").read_text())["datasource"] == "mmlu_pro_health"


def test_unknown_category_lists_the_ones_present(tmp_path):
    source = write_jsonl(tmp_path / "test.jsonl", [MMLU_PRO_7, MMLU_PRO_LAW])
    with pytest.raises(DataError, match="the input has: health, law"):
        prepare("mmlu_pro", tmp_path / "out.jsonl", input_path=source, category="Health")


def test_json_lines_split_only_on_newlines(tmp_path):
    # U+2028 may stand unescaped inside a JSON string; it must not end the line.
    row = {**MEDQA_4, "question": "First part\u2028second part?"}
    source = tmp_path / "dev.jsonl"
    source.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [location for location, _ in read_rows(SOURCES["medqa"], source)] == [f"{source}:1"]


def test_damaged_json_line_names_the_line(tmp_path):
    source = tmp_path / "dev.jsonl"
    source.write_text(json.dumps(MEDQA_4) + "\n" + '{"question": "cut off\n')
    with pytest.raises(DataError, match=f"{source}:2: not valid JSON"):
        prepare("medqa", tmp_path / "out.jsonl", input_path=source)


def test_duplicates_are_reported_and_kept(tmp_path):
    spaced = {**MEDQA_4, "question": "  which drug BLOCKS cell wall\nsynthesis? "}
    source = write_jsonl(tmp_path / "dev.jsonl", [MEDQA_4, MEDQA_5, spaced])
    summary = prepare("medqa", tmp_path / "out.jsonl", input_path=source)
    assert summary["duplicates"] == 1 and summary["rows_written"] == 3
    assert summary["duplicate_rows"][0]["location"] == f"{source}:3"
    assert summary["duplicate_rows"][0]["same_as"] == f"{source}:1"


def test_exclude_drops_questions_of_another_prepared_file(tmp_path):
    test_file = tmp_path / "test.jsonl"
    prepare("medqa", test_file, input_path=write_jsonl(tmp_path / "test_src.jsonl", [MEDQA_5]))
    contaminated = {**MEDQA_5, "question": MEDQA_5["question"].upper().replace("\n", "  ")}
    train = write_jsonl(tmp_path / "train_src.jsonl", [MEDQA_4, contaminated])
    summary = prepare("medqa", tmp_path / "train.jsonl", input_path=train, exclude=[test_file])
    assert (summary["rows_excluded"], summary["excluded_by_file"], summary["rows_written"]) == (
        1,
        {str(test_file): 1},
        1,
    )
    with pytest.raises(DataError, match="--exclude takes files written by prepare.py"):
        prepare("medqa", tmp_path / "again.jsonl", input_path=train, exclude=[train])
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(test_file.read_text() + "\n{not json\n")
    with pytest.raises(ToolError, match=f"^{damaged}:3: not JSON .*; --exclude takes files written by prepare.py$"):
        prepare("medqa", tmp_path / "again.jsonl", input_path=train, exclude=[damaged])


def test_output_is_deterministic_and_shuffle_is_seeded(tmp_path):
    rows = [{**MEDQA_4, "question": f"Question {i}?"} for i in range(30)]
    source = write_jsonl(tmp_path / "train_src.jsonl", rows)
    prepare("medqa", tmp_path / "a.jsonl", input_path=source, shuffle_seed=7, limit=20)
    prepare("medqa", tmp_path / "b.jsonl", input_path=source, shuffle_seed=7, limit=20)
    summary = prepare("medqa", tmp_path / "c.jsonl", input_path=source, shuffle_seed=8, limit=20)
    prepare("medqa", tmp_path / "d.jsonl", input_path=source)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    a, c, d = (
        [json.loads(line)["question"] for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in "acd"
    )
    assert len(a) == 20 and a != c and d == [f"Question {i}?" for i in range(30)]
    assert set(a) < set(d) and sorted(a) != a
    assert (summary["rows_cut_by_limit"], summary["rows_written"]) == (10, 20)


def test_existing_output_is_not_overwritten_silently(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    with pytest.raises(DataError, match="--overwrite"):
        prepare("medqa", output, input_path=source)
    assert output.read_text() == "precious\n"
    prepare("medqa", output, input_path=source, overwrite=True)
    assert json.loads(output.read_text())["label"] == "C"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    output = tmp_path / "out.jsonl"
    output.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_together({output: ["new\n" * 100_000, "\ud800"]})  # a lone surrogate cannot be encoded
    assert output.read_text() == "old\n" and list(tmp_path.iterdir()) == [output]


def test_flags_that_do_not_apply_are_refused(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    for flags, message in (
        ({"category": "health"}, "mmlu_pro and mmlu only"),
        ({"cop_base": 1}, "medmcqa only"),
        ({"split": "test"}, "drop --split"),
        ({"limit": 0}, "at least 1"),
    ):
        with pytest.raises(DataError, match=message):
            prepare("medqa", tmp_path / "out.jsonl", input_path=source, **flags)
    with pytest.raises(DataError, match="must end in .jsonl"):
        prepare("medqa", tmp_path / "out.json", input_path=source)


@pytest.mark.parametrize(
    "dataset, options, message",
    [
        ("medqa_us", {}, "unknown dataset 'medqa_us'; choose one of medqa, mmlu_pro, medmcqa, pubmedqa"),
        ("medqa", {"output": "out.json"}, "out.json: the --output name must end in .jsonl (OpenRLHF picks"),
        ("medqa", {"dev_output": "dev.parquet"}, "dev.parquet: the --dev-output name must end in .jsonl"),
        ("medqa", {"verl": True}, "out.jsonl: the --output name must end in .parquet (verl reads parquet)"),
        ("medqa", {"output": "out.parquet", "verl": True, "sft": True}, "--verl writes verl's RL layout"),
        ("medqa", {"split": "test"}, "--split selects a hub split; with --input the file is the split"),
        ("medqa", {"category": "health"}, "--category applies to mmlu_pro and mmlu only, not medqa"),
        ("mmlu_pro", {"cop_base": 0}, "--cop-base applies to medmcqa only, not mmlu_pro"),
        ("medqa", {"ids": "ids.json"}, "--ids selects rows by id, and medqa rows have no id field"),
        ("medqa", {"limit": 0}, "--limit must be at least 1, got 0"),
        ("medqa", {"dev_output": "dev.jsonl", "dev_size": 0}, "--dev-size must be at least 1, got 0"),
    ],
)
def test_prepare_options_refuse_before_any_file_is_read(tmp_path, dataset, options, message):
    options = {"output": "out.jsonl", "input_path": tmp_path / "missing.jsonl", **options}
    with pytest.raises(DataError) as caught:
        PrepareOptions(dataset, **options)
    assert str(caught.value).startswith(message)
    with pytest.raises(DataError) as through_prepare:
        prepare(dataset, **options)
    assert str(through_prepare.value) == str(caught.value) and list(tmp_path.iterdir()) == []


def test_prepare_options_normalise_what_the_pipeline_reads():
    options = PrepareOptions("medqa", "out.parquet", verl=True, exclude=["a.jsonl"], dev_output="dev.parquet")
    assert (options.output, options.dev_output, options.chat, options.exclude) == (
        Path("out.parquet"),
        Path("dev.parquet"),
        True,
        ("a.jsonl",),
    )
    assert options.dev_size == DEV_SIZE and options == dataclasses.replace(options)


@pytest.mark.integration
def test_command_line(tmp_path):
    source = write_jsonl(tmp_path / "phrases_no_exclude_test.jsonl", [MEDQA_4, MEDQA_5, {**MEDQA_4, "answer": "x"}])
    output = tmp_path / "medqa_test.jsonl"
    done = run_cli("medqa", "--input", str(source), "--output", str(output), "--skip-invalid", "--chat")
    assert done.returncode == 0, done.stderr
    assert f"skipped {source}:3: field 'answer'" in done.stdout and "rows_written: 2" in done.stdout
    assert [json.loads(line)["prompt"][0]["role"] for line in output.read_text().splitlines()] == ["user", "user"]

    failed = run_cli("medqa", "--input", str(source), "--output", str(tmp_path / "other.jsonl"))
    assert failed.returncode == 1 and f"{source}:3: field 'answer'" in failed.stderr
    assert not (tmp_path / "other.jsonl").exists()
    assert run_cli("medqa", "--output", str(output), "--seed", "3").returncode == 2  # --seed needs --shuffle


@pytest.mark.integration
def test_command_line_errors_follow_the_house_convention(tmp_path):
    """A refused flag combination is a usage error (exit 2, after the usage line); bad input or an output
    that cannot be written is exit 1 with one line; every error line reads `med-rlvr prepare: error:`."""
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    refused = run_cli("medqa", "--input", str(source), "--verl", "--sft", "--output", str(tmp_path / "o.parquet"))
    assert refused.returncode == 2 and refused.stderr.startswith("usage: "), refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "med-rlvr prepare: error: --verl writes verl's RL layout, which has no SFT target: drop --sft or --verl"
    )
    (tmp_path / "a_file").write_text("")
    unwritable = run_cli("medqa", "--input", str(source), "--output", str(tmp_path / "a_file" / "o.jsonl"))
    assert unwritable.returncode == 1 and unwritable.stderr.startswith("med-rlvr prepare: error: cannot write")
    assert len(unwritable.stderr.splitlines()) == 1, unwritable.stderr
    seed = run_cli("medqa", "--output", str(tmp_path / "o.jsonl"), "--seed", "3")
    assert seed.returncode == 2 and seed.stderr.splitlines()[-1].startswith("med-rlvr prepare: error: --seed has")


def test_written_files_get_ordinary_permissions(tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    write_together({tmp_path / "out.jsonl": ["x\n"]})
    assert (tmp_path / "out.jsonl").stat().st_mode == reference.stat().st_mode


# Issue 8: nothing silently wrong.


def medmcqa_rows(cops, explanations=None) -> list[dict]:
    """MedMCQA rows with these `cop` values and explanations ("" when none), all other fields valid."""
    explanations = explanations or [""] * len(cops)
    return [
        {
            "id": f"m{index}",
            "question": f"Question {index}?",
            "opa": "w",
            "opb": "x",
            "opc": "y",
            "opd": "z",
            "cop": cop,
            "choice_type": "single",
            "exp": exp,
            "subject_name": "Anatomy",
            "topic_name": None,
        }
        for index, (cop, exp) in enumerate(zip(cops, explanations, strict=True))
    ]


def test_cop_base_that_contradicts_the_file_stops_and_never_offers_to_skip(tmp_path):
    source = write_jsonl(tmp_path / "dev.json", medmcqa_rows([0, 1, 2, 3, 0, 1, 2, 3, 0]))
    for skip_invalid in (False, True):
        with pytest.raises(DataError, match="--cop-base 1 contradicts") as caught:
            prepare("medmcqa", tmp_path / "out.jsonl", input_path=source, cop_base=1, skip_invalid=skip_invalid)
        assert "--skip-invalid" not in str(caught.value) and f"{source}:1" in str(caught.value)
        assert "pass --cop-base 0, or no --cop-base" in str(caught.value)
    assert not (tmp_path / "out.jsonl").exists()
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    assert summary["label_distribution"] == {"A": 3, "B": 2, "C": 2, "D": 2}
    assert summary["cop_evidence"]["from_0"]["rows"] == 3 and summary["cop_evidence"]["from_1"]["rows"] == 0


def test_one_corrupt_row_does_not_decide_the_convention(tmp_path):
    # Ten valid 1-based rows (cop 1 to 3, readable either way) and one corrupt cop 0.
    cops = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 0]
    bare = write_jsonl(tmp_path / "bare.json", medmcqa_rows(cops))
    with pytest.raises(DataError, match="--cop-base 0 or --cop-base 1") as caught:
        prepare("medmcqa", tmp_path / "out.jsonl", input_path=bare)
    assert f"{bare}:11" in str(caught.value)
    with pytest.raises(DataError, match="--cop-base 1 contradicts"):
        prepare("medmcqa", tmp_path / "out.jsonl", input_path=bare, cop_base=1)
    # With explanations stating the answers, the ten rows speak for counting from 1 and the corrupt row
    # against it: a contradiction, whichever way a flag points.
    explained = write_jsonl(
        tmp_path / "explained.json",
        medmcqa_rows(cops, [f"Ans. is '{'abcd'[cop - 1]}' i.e., text" for cop in cops[:-1]] + [""]),
    )
    for cop_base in (None, 0, 1):
        with pytest.raises(DataError) as caught:
            prepare("medmcqa", tmp_path / "out.jsonl", input_path=explained, cop_base=cop_base)
        assert f"{explained}:11" in str(caught.value) and f"{explained}:1" in str(caught.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_rows_of_both_releases_without_decisive_values_stop(tmp_path):
    # cop 1 to 3 only, so no value settles it; the explanations say half the rows count from 0, half from 1.
    zero_based = medmcqa_rows([1, 2, 3], ["Ans. B", "Ans. C", "Ans. D"])
    one_based = medmcqa_rows([1, 2, 3], ["Ans. A", "Ans. B", "Ans. C"])
    rows = zero_based + [{**row, "id": f"o{i}", "question": f"Other {i}?"} for i, row in enumerate(one_based)]
    source = write_jsonl(tmp_path / "dev.json", rows)
    with pytest.raises(DataError, match="mixes 0-based and 1-based"):
        prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)


def test_explanations_that_disagree_with_the_convention_are_reported(tmp_path):
    rows = medmcqa_rows([4, 4, 4, 2], ["Ans. is 'd' i.e. z", "Answer: D.", "Ans-d", "Ans. is 'c' i.e., y"])
    source = write_jsonl(tmp_path / "dev.json", rows)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    assert summary["label_distribution"] == {"B": 1, "D": 3} and summary["cop_convention"].startswith("counted from 1")
    assert summary["cop_explanation_disagreements"] == 1
    assert summary["cop_explanation_disagreement_rows"] == [
        {"location": f"{source}:4", "label": "B", "explanation_says": "C"}
    ]
    done = run_cli("medmcqa", "--input", str(source), "--output", str(tmp_path / "cli.jsonl"))
    assert done.returncode == 0 and f"{source}:4" in done.stdout and "explanation" in done.stdout


@pytest.mark.parametrize(
    "text, letter",
    [
        ("Ans. is 'a' i.e., Ureter", "A"),
        ("Ans. is \u2018b\u2019 i.e. Liver", "B"),
        ("Ans: (c) Lung", "C"),
        ("Answer- D. Skin", "D"),
        ("Ans-b", "B"),
        ("Ans. c i.e. Pellagra", "C"),
        ("Ans is a rare condition of the ureter", None),
        ("Ans. A 30-year-old man", None),
        ("The ureter obstructs, so A is right", None),
        ("", None),
        (None, None),
    ],
)
def test_stated_letter_reads_only_an_explicit_answer(text, letter):
    assert stated_letter(text) == letter


def test_parquet_cop_convention_follows_the_evidence_not_the_format(tmp_path):
    datasets.Dataset.from_list(MEDMCQA_ORIGINAL).to_parquet(str(tmp_path / "original.parquet"))
    summary = prepare("medmcqa", tmp_path / "a.jsonl", input_path=tmp_path / "original.parquet")
    assert summary["label_distribution"] == {"A": 1, "B": 1, "D": 1}
    assert summary["cop_convention"].startswith("counted from 1")
    datasets.Dataset.from_list(medmcqa_rows([2, 3])).to_parquet(str(tmp_path / "bare.parquet"))
    with pytest.raises(DataError, match="--cop-base 0 or --cop-base 1"):
        prepare("medmcqa", tmp_path / "b.jsonl", input_path=tmp_path / "bare.parquet")


def test_duplicate_keys_in_a_json_line_are_rejected_with_line_and_key(tmp_path):
    source = tmp_path / "dev.jsonl"
    source.write_text(
        json.dumps(MEDQA_4)
        + "\n"
        + '{"question": "Q?", "options": {"A": "x", "A": "y", "B": "z"}, "answer_idx": "B", "answer": "z"}\n'
    )
    with pytest.raises(DataError, match=f"^{source}:2: key 'A' appears twice"):
        prepare("medqa", tmp_path / "out.jsonl", input_path=source)


def test_duplicate_keys_in_a_pretty_printed_file_name_the_object_line(tmp_path):
    text = json.dumps([MMLU_PRO_7, MMLU_PRO_LAW], indent=2)
    text = text.replace('"question_id": 7002,', '"question_id": 7002,\n    "category": "x",', 1)
    (tmp_path / "test.json").write_text(text)
    line = text[: text.index('"question_id": 7002')].count("\n")  # the line of the object's opening brace
    with pytest.raises(DataError, match=f"^{tmp_path / 'test.json'}:{line}: key 'category' appears twice"):
        prepare("mmlu_pro", tmp_path / "out.jsonl", input_path=tmp_path / "test.json")


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    original = source.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(source)
    test_file = tmp_path / "test.jsonl"
    prepare("medqa", test_file, input_path=write_jsonl(tmp_path / "test_src.jsonl", [MEDQA_5]))
    for output, flags, message in (
        (source, {}, "is the input"),
        (tmp_path / "link.jsonl", {}, "is the input"),
        (test_file, {"exclude": [test_file]}, "is an --exclude file"),
        (tmp_path / "train.jsonl", {"dev_output": tmp_path / "train.jsonl"}, "--dev-output is the --output"),
    ):
        with pytest.raises(DataError, match=message):
            prepare("medqa", output, input_path=source, overwrite=True, **flags)
    assert source.read_bytes() == original and not (tmp_path / "train.jsonl").exists()


PUBMEDQA_ORIGINAL = {
    "12345678": {
        "QUESTION": PUBMEDQA["question"],
        "CONTEXTS": PUBMEDQA["context"]["contexts"],
        "LABELS": PUBMEDQA["context"]["labels"],
        "MESHES": PUBMEDQA["context"]["meshes"],
        "YEAR": "2001",
        "reasoning_required_pred": "yes",
        "reasoning_free_pred": "yes",
        "final_decision": "yes",
        "LONG_ANSWER": PUBMEDQA["long_answer"],
    },
    "87654321": {
        "QUESTION": "Is coffee harmful?",
        "CONTEXTS": ["We followed 100 drinkers."],
        "LABELS": ["METHODS"],
        "MESHES": ["Coffee"],
        "YEAR": "2003",
        "reasoning_required_pred": "no",
        "reasoning_free_pred": "no",
        "final_decision": "no",
        "LONG_ANSWER": "No.",
    },
}


@pytest.mark.parametrize("indent", [None, 4])
def test_pubmedqa_original_release_reads_as_the_hub_layout(tmp_path, indent):
    (tmp_path / "ori_pqal.json").write_text(json.dumps(PUBMEDQA_ORIGINAL, indent=indent))
    prepare("pubmedqa", tmp_path / "out.jsonl", input_path=tmp_path / "ori_pqal.json")
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written[0] == format_row(PUBMEDQA, SOURCES["pubmedqa"])
    assert (written[1]["id"], written[1]["label"], written[1]["question"]) == (
        "87654321",
        "B",
        "METHODS: We followed 100 drinkers.\n\nIs coffee harmful?",
    )


def test_pubmedqa_standard_test_split_from_the_ground_truth_file(tmp_path):
    (tmp_path / "ori_pqal.json").write_text(json.dumps(PUBMEDQA_ORIGINAL))
    truth = tmp_path / "test_ground_truth.json"
    truth.write_text(json.dumps({"87654321": "no"}))
    summary = prepare("pubmedqa", tmp_path / "test.jsonl", input_path=tmp_path / "ori_pqal.json", ids=truth)
    assert [json.loads(line)["id"] for line in (tmp_path / "test.jsonl").read_text().splitlines()] == ["87654321"]
    assert (summary["ids_file"], summary["rows_not_in_ids"]) == (str(truth), 1)
    truth.write_text(json.dumps({"87654321": "yes"}))
    with pytest.raises(DataError, match="87654321.*'yes'.*'no'"):
        prepare("pubmedqa", tmp_path / "bad.jsonl", input_path=tmp_path / "ori_pqal.json", ids=truth)
    truth.write_text(json.dumps({"87654321": "no", "11111111": "yes"}))
    with pytest.raises(DataError, match=r"ids the input does not have \(1\): 11111111"):
        prepare("pubmedqa", tmp_path / "bad.jsonl", input_path=tmp_path / "ori_pqal.json", ids=truth)


def test_json_of_an_unknown_layout_says_what_it_found_and_expects(tmp_path):
    (tmp_path / "squad.json").write_text(json.dumps({"version": "1.1", "data": [MEDQA_4]}, indent=2))
    with pytest.raises(DataError, match="keys data, version.*expected") as caught:
        prepare("medqa", tmp_path / "out.jsonl", input_path=tmp_path / "squad.json")
    assert "damaged" not in str(caught.value)
    (tmp_path / "keyed.json").write_text(json.dumps({"q1": MEDQA_4, "q2": MEDQA_5}))
    with pytest.raises(DataError, match="keyed by id.*expected"):
        prepare("medqa", tmp_path / "out.jsonl", input_path=tmp_path / "keyed.json")
    # One question, pretty-printed, is one row.
    (tmp_path / "one.json").write_text(json.dumps(MEDQA_5, indent=2))
    assert prepare("medqa", tmp_path / "out.jsonl", input_path=tmp_path / "one.json")["label_distribution"] == {"E": 1}


def test_files_that_are_not_utf8_json_get_one_line_saying_what_to_do(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    cafe = json.dumps({**MEDQA_5, "question": "Caf\u00e9?"}, ensure_ascii=False)
    latin1.write_bytes(f"{json.dumps(MEDQA_4)}\n{cafe}\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text(json.dumps(MEDQA_4) + "\n", encoding="utf-16")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    broken_gzip = tmp_path / "broken.jsonl.gz"
    broken_gzip.write_bytes(gzip.compress((json.dumps(MEDQA_4) + "\n").encode())[:-12])
    for path, message in (
        (latin1, f"{latin1}:2: not UTF-8"),
        (utf16, f"{utf16}: UTF-16 text"),
        (broken, f"{broken}: not a readable parquet file"),
        (broken_gzip, f"{broken_gzip}: damaged gzip file"),
    ):
        done = run_cli("medqa", "--input", str(path), "--output", str(tmp_path / "out.jsonl"))
        assert done.returncode == 1 and done.stderr.startswith(f"med-rlvr prepare: error: {message}"), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_gzip_and_upper_case_names_are_read(tmp_path):
    (tmp_path / "dev.jsonl.gz").write_bytes(gzip.compress((json.dumps(MEDQA_4) + "\n").encode()))
    assert prepare("medqa", tmp_path / "a.jsonl", input_path=tmp_path / "dev.jsonl.gz")["label_distribution"] == {
        "C": 1
    }
    source = write_jsonl(tmp_path / "DEV.JSONL", [MEDQA_5])
    assert prepare("medqa", tmp_path / "b.jsonl", input_path=source)["label_distribution"] == {"E": 1}


def test_skip_invalid_with_every_row_failing_shows_the_reasons(tmp_path):
    rows = [{**MEDQA_4, "answer_idx": "F"}] * 3 + [{**MEDQA_4, "question": ""}]
    source = write_jsonl(tmp_path / "dev.jsonl", rows)
    with pytest.raises(DataError) as caught:
        prepare("medqa", tmp_path / "out.jsonl", input_path=source, skip_invalid=True)
    message = str(caught.value)
    assert "4 read, 4 skipped" in message
    assert f"3 rows: field 'answer_idx', e.g. {source}:1: gold letter 'F' is not one of A, B, C, D" in message
    assert f"1 row: field 'question', e.g. {source}:4: question is empty" in message


def test_too_many_options_say_the_same_as_a_dict_or_a_list():
    as_dict = {**MEDQA_4, "options": {letter: f"option {letter}" for letter in "ABCDEFGHIJK"}}
    as_list = {**MMLU_PRO_7, "options": [f"option {i}" for i in range(11)]}
    for row, dataset in ((as_dict, "medqa"), (as_list, "mmlu_pro")):
        with pytest.raises(DataError) as caught:
            format_row(row, SOURCES[dataset])
        assert (caught.value.field, caught.value.reason) == ("options", "11 options; need 2 to 10")


def test_unwritable_output_folder_is_found_before_reading_and_named(tmp_path):
    bad_input = write_jsonl(tmp_path / "src.jsonl", [{**MEDQA_4, "answer_idx": "F"}])
    (tmp_path / "a_file").write_text("")
    # A folder path through a file; and sysfs, which refuses new files even to root (os.access says yes).
    targets = [tmp_path / "a_file" / "out.jsonl"] + [Path("/sys/med_rlvr_out.jsonl")] * Path("/sys/kernel").is_dir()
    for output in targets:
        with pytest.raises(ToolError, match=f"^cannot write {output}") as caught:
            prepare("medqa", output, input_path=bad_input)
        assert ".tmp" not in str(caught.value)


def test_output_and_summary_are_written_both_or_neither(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    output = tmp_path / "out.jsonl"
    output.write_text("old\n")
    (tmp_path / "out.jsonl.summary.json").mkdir()  # the summary cannot be written where a folder stands
    with pytest.raises(ToolError, match="out.jsonl.summary.json"):
        prepare("medqa", output, input_path=source, overwrite=True)
    assert output.read_text() == "old\n"
    # The writer itself: a second file that cannot be put in place puts the first one back.
    first, second = tmp_path / "first.jsonl", tmp_path / "second"
    first.write_text("old first\n")
    second.mkdir()
    with pytest.raises(OSError):
        write_together({first: ["new first\n"], second: ["new second\n"]})
    assert (
        first.read_text() == "old first\n"
        and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    )


def test_identical_option_texts_are_reported(tmp_path):
    twin = {**MEDQA_4, "options": {"A": "Gentamicin", "B": "gentamicin ", "C": "Ceftriaxone", "D": "Trimethoprim"}}
    source = write_jsonl(tmp_path / "dev.jsonl", [MEDQA_4, twin])
    summary = prepare("medqa", tmp_path / "out.jsonl", input_path=source)
    assert summary["rows_written"] == 2 and summary["identical_options"] == 1
    assert summary["identical_option_rows"] == [{"location": f"{source}:2", "options": ["A", "B"]}]
    done = run_cli("medqa", "--input", str(source), "--output", str(tmp_path / "cli.jsonl"))
    assert f"identical options {source}:2: A, B" in done.stdout


def test_stale_temporaries_of_the_same_output_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])  # only its process id matters: it no longer runs
    dead.wait()
    stale = [tmp_path / f".out.jsonl.{dead.pid}.tmp", tmp_path / f".out.jsonl.summary.json.{dead.pid}.bak.tmp"]
    alive = tmp_path / f".out.jsonl.{os.getppid()}.tmp"  # a running process's: left alone
    other = tmp_path / f".other.jsonl.{dead.pid}.tmp"  # another output's: left alone
    for path in [*stale, alive, other]:
        path.write_text("partial")
    summary = prepare("medqa", tmp_path / "out.jsonl", input_path=write_jsonl(tmp_path / "src.jsonl", [MEDQA_4]))
    assert sorted(summary["stale_temporaries_removed"]) == sorted(map(str, stale))
    assert not any(path.exists() for path in stale) and alive.exists() and other.exists()


@pytest.mark.integration
def test_hub_without_network_fails_at_once_without_retries(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    output = tmp_path / "data" / "medqa" / "o.jsonl"  # folders the run creates, and must remove when it fails
    command = [sys.executable, str(REPO / "data_prep" / "prepare.py"), "medqa", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 1 and "cannot reach the Hugging Face hub" in done.stderr, done.stderr
    assert "Retrying" not in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
    assert not (tmp_path / "data").exists()


def test_a_failed_run_removes_the_folders_it_created_and_only_those(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [{**MEDQA_4, "question": ""}])
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="field 'question'"):
        prepare(
            "medqa", tmp_path / "data/new/deeper/out.jsonl", input_path=source, dev_output=tmp_path / "dev/d.jsonl"
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "src.jsonl"]
    assert not any((tmp_path / "data").iterdir())  # the folder that was there stays, emptied of what the run made


def test_jsonl_and_parquet_of_one_stem_each_keep_their_own_summary(tmp_path):
    """docs/reuse.md's verl files beside docs/data.md's: no "already there", and the launcher's test-set
    check still reads the .jsonl file's own summary, not the parquet's."""
    from med_rlvr_plugin.launcher.checks import LaunchError, check_not_test_sets

    split_test = write_jsonl(tmp_path / "split_test.jsonl", [MEDQA_4])
    split_train = write_jsonl(tmp_path / "split_train.jsonl", [MEDQA_4])
    prepare("medqa", tmp_path / "health.jsonl", input_path=split_test)
    prepare("medqa", tmp_path / "health.parquet", input_path=split_train, verl=True)
    summaries = {
        suffix: json.loads(summary_path(tmp_path / f"health{suffix}").read_text()) for suffix in (".jsonl", ".parquet")
    }
    assert {suffix: summary["input"] for suffix, summary in summaries.items()} == {
        ".jsonl": str(split_test),
        ".parquet": str(split_train),
    }
    assert summaries[".parquet"]["layout"] == "verl" and summaries[".jsonl"]["layout"] == "openrlhf"
    with pytest.raises(LaunchError, match="health.jsonl is a test set"):
        check_not_test_sets(str(tmp_path / "health.jsonl"))


# Issue 7: a dev split carved from train, for checkpoint selection without the test set.


def numbered_medqa(count: int, prefix: str = "Question") -> list[dict]:
    return [{**MEDQA_4, "question": f"{prefix} {i}?"} for i in range(count)]


def read_questions(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text().splitlines()]


def test_dev_split_is_seeded_and_disjoint_from_train_and_excluded_files(tmp_path):
    test_file = tmp_path / "test.jsonl"
    prepare("medqa", test_file, input_path=write_jsonl(tmp_path / "test_src.jsonl", numbered_medqa(3)))
    source = write_jsonl(tmp_path / "train_src.jsonl", numbered_medqa(30))  # questions 0-2 are test questions
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    summary = prepare("medqa", train, input_path=source, exclude=[test_file], dev_output=dev, dev_size=5)
    train_q, dev_q, test_q = read_questions(train), read_questions(dev), read_questions(test_file)
    assert (len(train_q), len(dev_q)) == (22, 5) and not set(dev_q) & (set(train_q) | set(test_q))
    assert set(train_q) | set(dev_q) | set(test_q) == {f"Question {i}?" for i in range(30)}
    assert dev_q == sorted(dev_q, key=lambda q: int(q.split()[1][:-1]))  # source order
    assert (summary["rows_excluded"], summary["rows_moved_to_dev"], summary["rows_written"]) == (3, 5, 22)
    assert (summary["dev_output"], summary["dev_seed"]) == (str(dev), 0)
    dev_summary = json.loads((tmp_path / "dev.jsonl.summary.json").read_text())
    assert (dev_summary["rows_written"], dev_summary["dev_seed"], dev_summary["train_output"]) == (5, 0, str(train))
    assert dev_summary["disjoint_from"] == [str(train), str(test_file)]
    # The same seed gives the same dev file; another seed another one.
    prepare(
        "medqa",
        tmp_path / "t2.jsonl",
        input_path=source,
        exclude=[test_file],
        dev_output=tmp_path / "d2.jsonl",
        dev_size=5,
    )
    prepare(
        "medqa",
        tmp_path / "t3.jsonl",
        input_path=source,
        exclude=[test_file],
        dev_output=tmp_path / "d3.jsonl",
        dev_size=5,
        dev_seed=1,
    )
    assert (tmp_path / "d2.jsonl").read_bytes() == dev.read_bytes() != (tmp_path / "d3.jsonl").read_bytes()


def test_dev_split_keeps_every_copy_of_a_question_out_of_train(tmp_path):
    rows = numbered_medqa(10)
    copies = [{**row, "options": {**row["options"], "A": "Amikacin"}} for row in rows]  # same questions again
    source = write_jsonl(tmp_path / "src.jsonl", rows + copies)
    summary = prepare(
        "medqa", tmp_path / "train.jsonl", input_path=source, dev_output=tmp_path / "dev.jsonl", dev_size=4
    )
    train_q, dev_q = read_questions(tmp_path / "train.jsonl"), read_questions(tmp_path / "dev.jsonl")
    assert len(dev_q) == len(set(dev_q)) == 4 and not set(dev_q) & set(train_q) and len(train_q) == 12
    assert (summary["rows_moved_to_dev"], summary["rows_dropped_as_copies_of_dev_questions"]) == (4, 4)


def test_shuffle_and_limit_apply_to_what_dev_leaves(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", numbered_medqa(30))
    summary = prepare(
        "medqa",
        tmp_path / "train.jsonl",
        input_path=source,
        dev_output=tmp_path / "dev.jsonl",
        dev_size=5,
        shuffle_seed=3,
        limit=10,
    )
    assert (summary["rows_moved_to_dev"], summary["rows_cut_by_limit"], summary["rows_written"]) == (5, 15, 10)
    assert not set(read_questions(tmp_path / "dev.jsonl")) & set(read_questions(tmp_path / "train.jsonl"))


def test_dev_split_refusals_and_both_or_neither(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", numbered_medqa(5))
    with pytest.raises(DataError, match="--dev-size 5 leaves no training rows"):
        prepare("medqa", tmp_path / "train.jsonl", input_path=source, dev_output=tmp_path / "dev.jsonl", dev_size=5)
    with pytest.raises(DataError, match="--dev-size must be at least 1"):
        prepare("medqa", tmp_path / "train.jsonl", input_path=source, dev_output=tmp_path / "dev.jsonl", dev_size=0)
    (tmp_path / "train.jsonl").write_text("old train\n")
    (tmp_path / "dev.jsonl").write_text("old dev\n")
    (tmp_path / "dev.jsonl.summary.json").mkdir()
    with pytest.raises(ToolError, match="dev.jsonl.summary.json"):
        prepare(
            "medqa",
            tmp_path / "train.jsonl",
            input_path=source,
            dev_output=tmp_path / "dev.jsonl",
            dev_size=2,
            overwrite=True,
        )
    assert (tmp_path / "train.jsonl").read_text() == "old train\n" and (
        tmp_path / "dev.jsonl"
    ).read_text() == "old dev\n"
    assert not (tmp_path / "train.jsonl.summary.json").exists()


@pytest.mark.integration
def test_dev_split_command_line(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", numbered_medqa(20))
    train, dev = tmp_path / "medqa_train.jsonl", tmp_path / "medqa_dev.jsonl"
    done = run_cli(
        "medqa",
        "--input",
        str(source),
        "--output",
        str(train),
        "--dev-output",
        str(dev),
        "--dev-size",
        "6",
        "--seed",
        "4",
    )
    assert done.returncode == 0, done.stderr
    assert "rows_moved_to_dev: 6" in done.stdout and f"dev: {dev} (6 rows, seed 4)" in done.stdout
    assert json.loads((tmp_path / "medqa_dev.jsonl.summary.json").read_text())["dev_seed"] == 4
    assert run_cli("medqa", "--output", str(train), "--dev-size", "3").returncode == 2  # --dev-size needs --dev-output


@pytest.mark.integration
def test_docs_offline_route_runs_as_written(tmp_path):
    """docs/data.md's offline block, run by bash on files in the published formats at the published paths."""
    text = (REPO / "docs" / "data.md").read_text()
    block = text[text.index("## Where the raw files are published") :].split("```bash\n", 1)[1].split("```", 1)[0]
    medqa = tmp_path / "raw/data_clean/questions/US/4_options"
    medqa.mkdir(parents=True)
    test_rows = numbered_medqa(3, "Test question")
    write_jsonl(medqa / "phrases_no_exclude_test.jsonl", test_rows)
    write_jsonl(medqa / "phrases_no_exclude_train.jsonl", numbered_medqa(DEV_SIZE + 20, "Train question") + test_rows)
    health = [{**MMLU_PRO_7, "question_id": index, "category": "health"} for index in range(4)]
    datasets.Dataset.from_list([*health, MMLU_PRO_LAW]).to_parquet(str(tmp_path / "raw/test-00000-of-00001.parquet"))
    (tmp_path / "data_prep").symlink_to(REPO / "data_prep")
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {path.name: len(path.read_text().splitlines()) for path in (tmp_path / "data").glob("*.jsonl")}
    assert counts == {
        "medqa_test.jsonl": 3,
        "medqa_dev.jsonl": DEV_SIZE,
        "medqa_train.jsonl": 20,
        "medqa_train_sft.jsonl": 20,
        "mmlu_pro_health.jsonl": 4,
    }
