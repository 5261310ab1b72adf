"""The dataset formatter on hand-written rows in each dataset's published format, and its command line."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from med_rlvr_plugin.data import SOURCES, DataError, format_row, prepare, read_rows, write_atomically
from med_rlvr_plugin.prompts import render_chat_prompt, render_prompt

REPO = Path(__file__).resolve().parents[1]

# MedQA's original release (US, 5 options) and its hub mirror share these fields.
MEDQA_5 = {
    "question": "A 30-year-old woman has fatigue.\nHemoglobin 9 g/dL\nWhich of the following is the next step?",
    "answer": "Serum ferritin",
    "options": {"A": "Bone marrow biopsy", "B": "Reassurance", "C": "Colonoscopy", "D": "Iron infusion", "E": "Serum ferritin"},
    "meta_info": "step2&3",
    "answer_idx": "E",
    "metamap_phrases": ["30 year old woman", "fatigue"],
}
MEDQA_4 = {
    "question": "Which drug blocks cell wall synthesis?",
    "answer": "Ceftriaxone",
    "options": {"A": "Gentamicin", "B": "Ciprofloxacin", "C": "Ceftriaxone", "D": "Trimethoprim\n\""},
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
MMLU_PRO_LAW = {**MMLU_PRO_7, "question_id": 7002, "question": "What is a tort?", "category": "law", "src": "ori_mmlu-law"}
# MedMCQA: the hub copy counts `cop` from 0, the original release's JSON lines from 1.
MEDMCQA_HUB = [
    {"id": "a1", "question": "Atrophy follows chronic obstruction of the", "opa": "Ureter", "opb": "Liver",
     "opc": "Lung", "opd": "Skin", "cop": 0, "choice_type": "single", "exp": "", "subject_name": "Pathology",
     "topic_name": None},
    {"id": "a2", "question": "Normal adult heart rate is about", "opa": "20/min", "opb": "72/min",
     "opc": "150/min", "opd": "200/min", "cop": 1, "choice_type": "single", "exp": "", "subject_name": "Physiology",
     "topic_name": "Heart"},
]
MEDMCQA_ORIGINAL = [
    {**MEDMCQA_HUB[0], "cop": 1},
    {**MEDMCQA_HUB[1], "cop": 2},
    {"id": "a3", "question": "Vitamin C deficiency causes", "opa": "Rickets", "opb": "Beriberi", "opc": "Pellagra",
     "opd": "Scurvy", "cop": 4, "choice_type": "single", "exp": "", "subject_name": "Biochemistry",
     "topic_name": "Vitamins"},
]
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
    assert "\nD. Trimethoprim \"\nAnswer with one of the letters A, B, C, D.\n" in out["prompt"]
    assert format_row(dict(MEDQA_4), SOURCES["medqa"])["id"] == out["id"]
    changed = {**MEDQA_4, "options": {**MEDQA_4["options"], "A": "Vancomycin"}}
    assert format_row(changed, SOURCES["medqa"])["id"] != out["id"]


def test_mmlu_pro_fewer_than_ten_options():
    out = format_row(MMLU_PRO_7, SOURCES["mmlu_pro"])
    assert (out["label"], out["id"], out["metadata"]) == ("C", "7001", {"src": "ori_mmlu-nutrition", "category": "health"})
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
        ("medqa", {**MEDQA_4, "options": {"A": "Only one"}, "answer_idx": "A", "answer": "Only one"}, "options", "1 options"),
        ("medqa", {**MEDQA_4, "answer_idx": "E"}, "answer_idx", "'E' is not one of A, B, C, D"),
        ("medqa", {**MEDQA_4, "answer": "Gentamicin"}, "answer", "differs from option C"),
        ("medqa", {**MEDQA_4, "options": {"A": "x", "C": "y"}}, "options", "not consecutive letters"),
        ("medqa", {key: value for key, value in MEDQA_4.items() if key != "question"}, "question", "missing"),
        ("mmlu_pro", {**MMLU_PRO_7, "answer_index": 3}, "answer_index", "names D, but answer says C"),
        ("mmlu_pro", {**MMLU_PRO_7, "options": ["a", "", "c"]}, "options[1]", "option is empty"),
        ("mmlu_pro", {**MMLU_PRO_7, "options": [str(i) for i in range(11)]}, "options", "11 options"),
        ("pubmedqa", {**PUBMEDQA, "final_decision": "probably"}, "final_decision", "matches 0 options"),
        ("pubmedqa", {**PUBMEDQA, "context": {"contexts": ["a", "b"], "labels": ["X"]}}, "context.labels", "one label per"),
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
    assert json.loads((tmp_path / "out.summary.json").read_text()) == summary


def test_medmcqa_hub_convention_from_a_cop_of_zero(tmp_path):
    source = write_jsonl(tmp_path / "dev.jsonl", MEDMCQA_HUB)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    labels = [json.loads(line)["label"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert labels == ["A", "B"] and summary["cop_convention"].startswith("counted from 0")


def test_medmcqa_original_convention_from_a_cop_of_four(tmp_path):
    # The original release names its JSON lines files .json.
    source = write_jsonl(tmp_path / "dev.json", MEDMCQA_ORIGINAL)
    summary = prepare("medmcqa", tmp_path / "out.jsonl", input_path=source)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["label"] for row in written] == ["A", "B", "D"]
    assert written[2]["metadata"] == {"subject_name": "Biochemistry", "topic_name": "Vitamins", "choice_type": "single"}
    assert summary["cop_convention"].startswith("counted from 1")


def test_medmcqa_ambiguous_cop_fails_until_a_flag_says(tmp_path):
    source = write_jsonl(tmp_path / "dev.json", [{**MEDMCQA_HUB[1], "cop": 2}])
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
    assert summary["label_distribution"] == {"A": 1, "B": 1}
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
    assert (summary["rows_excluded"], summary["excluded_by_file"], summary["rows_written"]) == (1, {str(test_file): 1}, 1)
    with pytest.raises(DataError, match="--exclude takes files written by prepare.py"):
        prepare("medqa", tmp_path / "again.jsonl", input_path=train, exclude=[train])


def test_output_is_deterministic_and_shuffle_is_seeded(tmp_path):
    rows = [{**MEDQA_4, "question": f"Question {i}?"} for i in range(30)]
    source = write_jsonl(tmp_path / "train_src.jsonl", rows)
    prepare("medqa", tmp_path / "a.jsonl", input_path=source, shuffle_seed=7, limit=20)
    prepare("medqa", tmp_path / "b.jsonl", input_path=source, shuffle_seed=7, limit=20)
    summary = prepare("medqa", tmp_path / "c.jsonl", input_path=source, shuffle_seed=8, limit=20)
    prepare("medqa", tmp_path / "d.jsonl", input_path=source)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    a, c, d = ([json.loads(line)["question"] for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in "acd")
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
        write_atomically(output, "new\n" * 100_000 + "\ud800")  # a lone surrogate cannot be encoded
    assert output.read_text() == "old\n" and list(tmp_path.iterdir()) == [output]


def test_flags_that_do_not_apply_are_refused(tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [MEDQA_4])
    for flags, message in (
        ({"category": "health"}, "mmlu_pro only"),
        ({"cop_base": 1}, "medmcqa only"),
        ({"split": "test"}, "drop --split"),
        ({"limit": 0}, "at least 1"),
    ):
        with pytest.raises(DataError, match=message):
            prepare("medqa", tmp_path / "out.jsonl", input_path=source, **flags)
    with pytest.raises(DataError, match="must end in .jsonl"):
        prepare("medqa", tmp_path / "out.json", input_path=source)


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


def test_written_files_get_ordinary_permissions(tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    write_atomically(tmp_path / "out.jsonl", "x\n")
    assert (tmp_path / "out.jsonl").stat().st_mode == reference.stat().st_mode
