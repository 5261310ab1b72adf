"""Prepared files on the real MedQA and MMLU-Pro data, read back by OpenRLHF's own loaders and graded by the
verifier."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from openrlhf.datasets import PromptDataset
from openrlhf.datasets.sft_dataset import preprocess_data as sft_preprocess_data
from openrlhf.datasets.utils import blending_datasets
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from med_rlvr_plugin.data import prepare
from med_rlvr_plugin.prompts import LETTERS
from med_rlvr_plugin.verifier import grade_response
from tests.real_data import MEDQA_DEV, MEDQA_TEST, MMLU_PRO_HEALTH, real_file

# Qwen2.5's chat template, reduced to what a prompt without tools uses.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gold_letters() -> list[str]:
    """The gold letters of the MedQA test set then MMLU-Pro health, straight from the source files."""
    medqa = [row["answer_idx"] for row in read_jsonl(real_file(MEDQA_TEST))]
    return medqa + [row["answer"] for row in read_jsonl(real_file(MMLU_PRO_HEALTH))]


def strategy(chat: bool) -> SimpleNamespace:
    """The parts of OpenRLHF's DeepSpeed strategy that blending_datasets and PromptDataset read."""
    data = SimpleNamespace(input_key="prompt", label_key="label", apply_chat_template=chat)
    return SimpleNamespace(
        args=SimpleNamespace(data=data, use_ms=False), print=lambda *args: None, is_rank_0=lambda: True
    )


def qwen_style_tokenizer() -> PreTrainedTokenizerFast:
    # Only the chat template is rendered (tokenize=False), so a one-word vocabulary is enough.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def options_block(options: list[str]) -> str:
    """What follows the question in both templates, written out from the contract: option lines, valid letters."""
    letters = LETTERS[: len(options)]
    lines = [f"{letter}. {' '.join(text.split())}" for letter, text in zip(letters, options, strict=True)]
    return "\n" + "\n".join(lines) + f"\nAnswer with one of the letters {', '.join(letters)}."


@pytest.mark.parametrize("path, count", [(MEDQA_DEV, 1272), (MEDQA_TEST, 1273)])
def test_real_medqa_every_question_survives(tmp_path, path, count):
    source = read_jsonl(real_file(path))
    summary = prepare("medqa", tmp_path / "out.jsonl", input_path=real_file(path))
    written = read_jsonl(tmp_path / "out.jsonl")
    assert len(source) == summary["rows_read"] == summary["rows_written"] == len(written) == count
    assert summary["rows_skipped"] == summary["duplicates"] == 0
    for row, out in zip(source, written, strict=True):
        assert out["label"] == row["answer_idx"]
        # Each option is one `X. text` line, its text with whitespace collapsed as the template promises.
        assert list(row["options"]) == ["A", "B", "C", "D"]
        assert out["prompt"].endswith(
            row["question"].strip() + options_block(list(row["options"].values())) + "\nAssistant:"
        )
    assert len({out["id"] for out in written}) == count


def test_real_mmlu_pro_health_letters_and_labels(tmp_path):
    source = read_jsonl(real_file(MMLU_PRO_HEALTH))
    summary = prepare("mmlu_pro", tmp_path / "out.jsonl", input_path=real_file(MMLU_PRO_HEALTH), category="health")
    written = read_jsonl(tmp_path / "out.jsonl")
    assert summary["rows_read"] == summary["rows_written"] == len(written) == 818
    assert sum(summary["option_count_distribution"].values()) == 818
    short = 0
    for row, out in zip(source, written, strict=True):
        letters = LETTERS[: len(row["options"])]
        assert out["label"] == row["answer"] == letters[row["answer_index"]]
        assert out["prompt"].endswith(row["question"].strip() + options_block(row["options"]) + "\nAssistant:")
        assert out["id"] == str(row["question_id"]) and out["datasource"] == "mmlu_pro_health"
        short += len(letters) < 10
    assert short == 220  # rows with fewer than 10 options in the October 2024 data


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    """The paper's two test sets, base and chat, as prepared files."""
    folder = tmp_path_factory.mktemp("eval")
    for chat in (False, True):
        suffix = "_chat" if chat else ""
        prepare("medqa", folder / f"medqa_test{suffix}.jsonl", input_path=real_file(MEDQA_TEST), chat=chat)
        prepare(
            "mmlu_pro",
            folder / f"mmlu_pro_health{suffix}.jsonl",
            input_path=real_file(MMLU_PRO_HEALTH),
            category="health",
            chat=chat,
        )
    return folder


def test_openrlhf_reads_base_prompts_unchanged(eval_files):
    files = [eval_files / "medqa_test.jsonl", eval_files / "mmlu_pro_health.jsonl"]
    # Both test sets in one --eval.dataset, as the paper evaluates; OpenRLHF concatenates them.
    data = blending_datasets(",".join(map(str, files)), None, strategy(chat=False), dataset_split="train")
    dataset = PromptDataset(data, None, strategy(chat=False))
    written = read_jsonl(files[0]) + read_jsonl(files[1])
    assert len(dataset) == len(written) == 1273 + 818
    for index, (row, gold) in enumerate(zip(written, gold_letters(), strict=True)):
        datasource, prompt, label, image = dataset[index]
        assert (prompt, label, image) == (row["prompt"], gold, None)
        assert prompt.startswith("A conversation between User and Assistant.") and prompt.endswith("\nAssistant:")
        assert datasource == ("medqa" if index < 1273 else "mmlu_pro_health")


def test_openrlhf_applies_the_chat_template(eval_files):
    files = ",".join(str(eval_files / name) for name in ("medqa_test_chat.jsonl", "mmlu_pro_health_chat.jsonl"))
    data = blending_datasets(files, None, strategy(chat=True), dataset_split="train")
    dataset = PromptDataset(data, qwen_style_tokenizer(), strategy(chat=True))
    written = read_jsonl(eval_files / "medqa_test_chat.jsonl") + read_jsonl(eval_files / "mmlu_pro_health_chat.jsonl")
    assert len(dataset) == len(written) == 1273 + 818
    for index, (row, gold) in enumerate(zip(written, gold_letters(), strict=True)):
        _, prompt, label, _ = dataset[index]
        [message] = row["prompt"]
        assert prompt == f"{QWEN_SYSTEM}<|im_start|>user\n{message['content']}<|im_end|>\n<|im_start|>assistant\n"
        assert message["content"].endswith("\n" + row["question"] + options_block(row["options"]))
        assert label == gold


@pytest.mark.parametrize("chat", [False, True])
def test_verifier_grades_responses_to_prepared_prompts(eval_files, chat):
    suffix = "_chat" if chat else ""
    path = eval_files / f"mmlu_pro_health{suffix}.jsonl"
    data = blending_datasets(str(path), None, strategy(chat), dataset_split="train")
    dataset = PromptDataset(data, qwen_style_tokenizer(), strategy(chat))
    end = "<|im_end|>" if chat else "<|endoftext|>"  # OpenRLHF decodes with special tokens left in
    for index in range(0, len(dataset), 37):
        _, prompt, label, _ = dataset[index]
        wrong = "A" if label != "A" else "B"
        for letter, reward in ((label, 1.0), (wrong, 0.0)):
            query = f"{prompt} <think> Weighing each option. </think> <answer>{letter}</answer>{end}"
            assert grade_response(query, prompt, label).reward == reward
        assert grade_response(f"{prompt} {label}{end}", prompt, label).reward == -1.0


@pytest.mark.parametrize("chat", [False, True])
def test_sft_file_reads_in_openrlhf_and_its_target_earns_full_reward(tmp_path, chat):
    output = tmp_path / "sft.jsonl"
    prepare("medqa", output, input_path=real_file(MEDQA_DEV), sft=True, chat=chat, limit=50)
    tokenizer = qwen_style_tokenizer()
    apply_chat_template = tokenizer.apply_chat_template if chat else None
    for row in read_jsonl(output):
        prompt, response = sft_preprocess_data(row, None, "prompt", "response", apply_chat_template)
        assert response.startswith(" <think>" if not chat else "<think>")
        assert grade_response(prompt + response, prompt, row["label"]).reward == 1.0


def test_real_dev_split_is_disjoint_and_reads_as_eval_data(tmp_path):
    # The real dev file stands in for train (the train split is not in ../shared/data): the test set is
    # excluded, then a dev split is carved out, as the paper's files are made.
    test_file, train, dev = tmp_path / "medqa_test.jsonl", tmp_path / "medqa_train.jsonl", tmp_path / "medqa_dev.jsonl"
    prepare("medqa", test_file, input_path=real_file(MEDQA_TEST))
    summary = prepare(
        "medqa", train, input_path=real_file(MEDQA_DEV), exclude=[test_file], dev_output=dev, dev_size=300
    )
    question_sets = [
        {" ".join(row["question"].lower().split()) for row in read_jsonl(path)} for path in (train, dev, test_file)
    ]
    assert [len(questions) for questions in question_sets] == [1272 - 300, 300, 1273]
    assert all(not a & b for i, a in enumerate(question_sets) for b in question_sets[i + 1 :])
    assert summary["rows_excluded"] == 0 and summary["rows_moved_to_dev"] == 300
    # As --eval.dataset: OpenRLHF reads every dev row with the gold letter of its source row.
    gold = {row["question"].strip(): row["answer_idx"] for row in read_jsonl(real_file(MEDQA_DEV))}
    data = blending_datasets(str(dev), None, strategy(chat=False), dataset_split="train")
    dataset = PromptDataset(data, None, strategy(chat=False))
    written = read_jsonl(dev)
    assert len(dataset) == 300
    for index, row in enumerate(written):
        assert dataset[index][2] == gold[row["question"]] == row["label"]
