"""The reward in other frameworks, for real: TRL's GRPOTrainer trains two steps on CPU with it, and verl
0.9.1's own loader, reward manager and dataset run it on a parquet file written by data prep.

verl runs in a child interpreter: importing it sets process-wide logging and environment variables.
"""

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet
import pytest
import torch

from med_rlvr_plugin.data import DataError, prepare, summary_path
from med_rlvr_plugin.launcher import SAMPLE_QUESTIONS
from med_rlvr_plugin.openrlhf_reward import reward_func
from med_rlvr_plugin.prompts import render_chat_prompt
from med_rlvr_plugin.verl_reward import compute_score
from tests.test_data import run_cli, write_jsonl
from tests.tokenizer_fixtures import QWEN_CHAT_TEMPLATE, qwen25_tokenizer

REPO = Path(__file__).resolve().parents[1]
VERL_FILE = REPO / "med_rlvr_plugin" / "verl_reward.py"
LOG_KEYS = set(reward_func(["x"], ["x"], ["A"])["extra_logs"])  # the reward file's metrics, whatever they are
# The built-in sample's questions in MedQA's published format (the hub copy also names the answer's text).
MEDQA_ROWS = [{**question, "answer": question["options"][question["answer_idx"]]} for question in SAMPLE_QUESTIONS]
# Each response with its expected (score, acc, pred) under the default (paper's) configuration.
RESPONSES = {
    "<think>Reasoning about each option in turn.</think>\n<answer>{gold}</answer>": (1.0, 1.0, "{gold}"),
    "<think>Reasoning about each option in turn.</think> <answer>{wrong}</answer>": (0.0, 0.0, "{wrong}"),
    "The answer is {gold}.": (-1.0, 0.0, ""),
}


def prepared(tmp_path: Path, name: str, **options) -> Path:
    source = write_jsonl(tmp_path / "medqa_source.jsonl", MEDQA_ROWS)
    return Path(prepare("medqa", tmp_path / name, input_path=source, verl=True, **options)["output"])


def test_prepare_verl_writes_verls_rl_layout(tmp_path):
    path = prepared(tmp_path, "medqa.parquet")
    rows = pyarrow.parquet.read_table(path).to_pylist()
    assert [row["data_source"] for row in rows] == ["medqa"] * len(MEDQA_ROWS)
    for index, (row, source) in enumerate(zip(rows, MEDQA_ROWS, strict=True)):
        messages = render_chat_prompt(source["question"], list(source["options"].values()))
        assert row["prompt"] == messages
        assert row["reward_model"] == {"style": "rule", "ground_truth": source["answer_idx"]}
        assert row["extra_info"]["index"] == index and row["extra_info"]["question"] == source["question"]
        assert row["extra_info"]["prompt"] == messages[0]["content"]  # what the grader reads the options from
    summary = json.loads(summary_path(path).read_text())
    assert summary["layout"] == "verl" and summary["prompt_format"] == "chat" and summary["rows_written"] == 6


@pytest.mark.integration
def test_prepare_verl_cli_with_a_dev_split_and_exclude_of_a_verl_file(tmp_path):
    source = write_jsonl(tmp_path / "medqa_source.jsonl", MEDQA_ROWS)
    test = prepared(tmp_path, "test.parquet", limit=2)
    result = run_cli(
        "medqa",
        "--input",
        str(source),
        "--verl",
        "--output",
        str(tmp_path / "train.parquet"),
        "--exclude",
        str(test),
        "--dev-output",
        str(tmp_path / "dev.parquet"),
        "--dev-size",
        "1",
    )
    assert result.returncode == 0, result.stderr
    questions = {
        name: [row["extra_info"]["question"] for row in pyarrow.parquet.read_table(tmp_path / name).to_pylist()]
        for name in ("test.parquet", "train.parquet", "dev.parquet")
    }
    assert len(questions["train.parquet"]) == 3 and len(questions["dev.parquet"]) == 1
    assert sorted(sum(questions.values(), [])) == sorted(row["question"] for row in MEDQA_ROWS)  # disjoint, complete


@pytest.mark.parametrize(
    "options, message",
    [
        ({"output": "medqa.jsonl"}, "the --output name must end in .parquet (verl reads parquet)"),
        ({"output": "medqa.parquet", "sft": True}, "--verl writes verl's RL layout, which has no SFT target"),
        ({"output": "medqa.parquet", "exclude": ["source.jsonl"]}, "source.jsonl:1: not a prepared row"),
    ],
)
def test_prepare_verl_refuses_what_does_not_fit(tmp_path, options, message):
    source = write_jsonl(tmp_path / "source.jsonl", MEDQA_ROWS)
    options = {**options, "output": tmp_path / options["output"]}
    if "exclude" in options:
        options["exclude"] = [source]
    with pytest.raises(DataError, match=re.escape(message)):
        prepare("medqa", input_path=source, verl=True, **options)


def expected(row: dict, template: str) -> tuple[str, tuple]:
    """A response to a verl row and its expected (score, acc, pred)."""
    gold = row["reward_model"]["ground_truth"]
    wrong = "A" if gold != "A" else "B"
    score, acc, pred = RESPONSES[template]
    return template.format(gold=gold, wrong=wrong), (score, acc, pred.format(gold=gold, wrong=wrong))


def verl_child(parquet: str, tokenizer_dir: str, cache_dir: str) -> None:
    """In a fresh interpreter: verl's RLHFDataset reads the parquet; `load_reward_manager` loads
    compute_score by file path and by `pkg://`; its naive manager grades each response to each row (a
    batch of one, decoded from token ids, padding after the end-of-turn token). Prints JSON results."""
    import numpy as np
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dataset = RLHFDataset(
        data_files=[parquet],
        tokenizer=tokenizer,
        config=OmegaConf.create({"max_prompt_length": 1024, "cache_dir": cache_dir}),
    )
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id

    async def grade_all(path: str) -> list:
        config = OmegaConf.create(
            {
                "reward": {
                    "custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": {}},
                    "reward_manager": {"source": "register", "name": "naive"},
                }
            }
        )
        manager = load_reward_manager(config, tokenizer)  # inside the loop: the manager keeps the running loop
        results = []
        for index in range(len(dataset)):
            row = dataset[index]
            prompt = tokenizer(
                tokenizer.apply_chat_template(row["raw_prompt"], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )["input_ids"]
            for template in RESPONSES:
                response_text, _ = expected(row, template)
                response = tokenizer(response_text, add_special_tokens=False)["input_ids"] + [end]
                data = DataProto.from_dict(
                    tensors={
                        "prompts": torch.tensor([prompt]),
                        "responses": torch.tensor([response + [pad] * 3]),
                        "input_ids": torch.tensor([prompt + response + [pad] * 3]),
                        "attention_mask": torch.tensor([[1] * (len(prompt) + len(response)) + [0] * 3]),
                    },
                    non_tensors={
                        key: np.array([row[key]], dtype=object)
                        for key in ("data_source", "reward_model", "extra_info")
                    },
                )
                output = await manager.run_single(data)
                results.append(
                    {
                        "index": row["index"],
                        "template": template,
                        "reward": output["reward_score"],
                        "info": output["reward_extra_info"],
                    }
                )
        return results

    print(json.dumps([asyncio.run(grade_all(path)) for path in (str(VERL_FILE), "pkg://med_rlvr_plugin.verl_reward")]))


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("verl") is None, reason="verl is not installed (setup.sh installs it)")
def test_verl_loads_and_runs_compute_score_through_its_reward_manager(tmp_path):
    parquet = prepared(tmp_path, "medqa.parquet")
    qwen25_tokenizer().save_pretrained(tmp_path / "tokenizer")
    arguments = ", ".join(repr(str(path)) for path in (parquet, tmp_path / "tokenizer", tmp_path / "cache"))
    code = f"from tests.test_reuse import verl_child; verl_child({arguments})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    by_path, by_package = json.loads(result.stdout.strip().splitlines()[-1])
    rows = pyarrow.parquet.read_table(parquet).to_pylist()
    assert len(by_path) == len(rows) * len(RESPONSES) and by_package == by_path
    for graded in by_path:
        _, (score, acc, pred) = expected(rows[graded["index"]], graded["template"])
        info = graded["info"]
        assert graded["reward"] == score
        assert set(info) == {"score", "acc", "pred"} | LOG_KEYS  # the same keys on every sample
        assert (info["score"], info["acc"], info["pred"]) == (score, acc, pred)
        assert info["well_formed"] == float(score > -1) and info["prompt_not_found"] == 0.0


def test_compute_score_as_verl_documents_the_call():
    """The call verl 0.9.1's reward managers make (keywords only, extra_info with two keys added), and what
    it refuses; verl itself runs it in the test above."""
    prompt = render_chat_prompt("Which drug reverses opioid overdose?", ["Flumazenil", "Naloxone"])[0]["content"]
    extra_info = {"index": 0, "prompt": prompt, "num_turns": None, "rollout_reward_scores": {}}
    result = compute_score(
        data_source="medqa",
        solution_str="<think>Opioids.</think> <answer>B</answer>",
        ground_truth="B",
        extra_info=extra_info,
        reward_router_address=None,
    )
    assert result == {"score": 1.0, "acc": 1.0, "pred": "B", **{key: result[key] for key in LOG_KEYS}}
    assert result["think_words"] == 1.0 and result["answer_leak"] == 0.0
    with pytest.raises(
        ValueError, match=r"reward_kwargs \['scheme'\]: set the reward through the MED_RLVR_\* variables"
    ):
        compute_score(
            data_source="medqa", solution_str="x", ground_truth="B", extra_info=extra_info, scheme="penalized"
        )
    with pytest.raises(ValueError, match="extra_info has no 'prompt'.*prepare.py --verl"):
        compute_score(data_source="medqa", solution_str="x", ground_truth="B", extra_info={"index": 0})


# A tiny Qwen2 that writes one answer whatever it is asked: each token's embedding is one-hot, the
# attention and MLP outputs are zero, so the last hidden state is the current token, and the output
# layer maps each token of this chain to the next. After the prompt's last word (`Assistant:`, or the
# chat template's `assistant`) it writes "<think> reasoning </think> <answer> A </answer>" and stops.
CHAIN = {
    "Assistant:": "<think>",
    "assistant": "<think>",
    "<think>": "reasoning",
    "reasoning": "</think>",
    "</think>": "<answer>",
    "<answer>": "A",
    "A": "</answer>",
    "</answer>": "<|im_end|>",
}


def scripted_model() -> tuple:
    """(model, tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = list(dict.fromkeys(["[UNK]", "<|endoftext|>", "<|im_start|>", "<|im_end|>", *CHAIN, *CHAIN.values()]))
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=len(vocab),
        intermediate_size=len(vocab),
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(len(vocab)))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for word, following in CHAIN.items():
            model.lm_head.weight[vocab[following], vocab[word]] = 30.0
    return model, tokenizer


@pytest.mark.integration
@pytest.mark.parametrize("chat", [False, True], ids=["plain-text", "conversational"])
def test_grpo_trainer_trains_two_steps_with_our_reward(tmp_path, chat):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from med_rlvr_plugin.data import SOURCES, format_row
    from med_rlvr_plugin.trl_reward import med_rlvr_reward

    # Two prepared rows, whose gold letters are A (the model's answer: reward 1) and B (wrong: 0).
    rows = [
        format_row(question, SOURCES["medqa"], chat=chat) for question in MEDQA_ROWS if question["answer_idx"] in "AB"
    ][:2]
    assert sorted(row["label"] for row in rows) == ["A", "B"]
    dataset = Dataset.from_list(
        [{"prompt": row["prompt"], "label": row["label"], "datasource": row["datasource"]} for row in rows]
    )
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        seed=0,
    )
    model, tokenizer = scripted_model()
    trainer = GRPOTrainer(
        model=model, reward_funcs=med_rlvr_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "rewards/med_rlvr_reward/mean" in entry]
    assert len(steps) == 2  # each step: one prompt, four completions
    assert sorted(step["rewards/med_rlvr_reward/mean"] for step in steps) == [0.0, 1.0]
    for step in steps:
        assert {f"med_rlvr/{key}" for key in LOG_KEYS} <= set(step)
        assert step["med_rlvr/accuracy"] == step["rewards/med_rlvr_reward/mean"]
        assert step["med_rlvr/well_formed"] == 1.0 and step["med_rlvr/think_words"] == 1.0


def test_trl_reward_without_a_label_column_names_the_columns_it_got():
    from med_rlvr_plugin.trl_reward import med_rlvr_reward

    with pytest.raises(ValueError, match="no `label` column .*; its columns: answer, datasource. Prepare it"):
        med_rlvr_reward(
            prompts=["p"],
            completions=["c"],
            answer=["A"],
            datasource=["medqa"],
            completion_ids=[[1]],
            trainer_state=None,
            log_metric=print,
        )


def lookup(term: str) -> str:
    """Look a term up in the formulary.

    Args:
        term: the drug or condition
    """
    return term


@pytest.mark.parametrize("template", ["qwen2_5_chat_template", "qwen3_chat_template"])
def test_trl_reward_reads_the_thinking_trls_response_schema_moves_out_of_the_content(template):
    """With `tools=`, GRPOTrainer parses each completion with `add_response_schema`'s schema and TRL's
    `parse_response` (TRL 1.16, run here as the trainer runs them): `<think>...</think>` goes to
    `reasoning_content`; the reward puts it back and grades the completion as the text it was."""
    import copy

    from trl import chat_template_utils

    from med_rlvr_plugin.trl_reward import med_rlvr_reward

    tokenizer = copy.deepcopy(qwen25_tokenizer())  # the shared one must not change
    tokenizer.chat_template = getattr(chat_template_utils, template)
    chat_template_utils.add_response_schema(tokenizer)
    prompt = render_chat_prompt(MEDQA_ROWS[0]["question"], MEDQA_ROWS[0]["options"])
    gold = MEDQA_ROWS[0]["answer_idx"]
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tools=[lookup], return_dict=False)
    texts = [
        f"<think>\nThe findings point to {gold}.\n</think>\n\n<answer>{gold}</answer>",  # right
        "<think>Too early to say.</think> <answer>Z</answer>",  # malformed: no option Z
        f"<answer>{gold}</answer>",  # malformed: no thinking
    ]
    completions = [
        [chat_template_utils.parse_response(tokenizer, tokenizer(text + "<|im_end|>")["input_ids"], prefix, [lookup])]
        for text in texts
    ]
    assert completions[0][0]["reasoning_content"] == f"The findings point to {gold}."
    assert "<think>" not in completions[0][0]["content"]
    rewards = med_rlvr_reward(prompts=[prompt] * 3, completions=completions, label=[gold] * 3)
    assert rewards == med_rlvr_reward(prompts=[prompt] * 3, completions=texts, label=[gold] * 3) == [1.0, -1.0, -1.0]


@pytest.mark.integration
def test_adapters_import_quietly_with_a_stray_variable_and_refuse_it_at_first_use():
    """Importing an adapter reads no configuration: a stray MED_RLVR_* variable (a typo, or another tool's)
    neither prints nor raises then. The first graded sample raises the reward file's message naming it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MED_RLVR_")}
    env |= {"MED_RLVR_SEED": "1", "PYTHONPATH": str(REPO)}
    for module in ("trl_reward", "verl_reward", "serve", "openrlhf_reward"):
        result = subprocess.run(
            [sys.executable, "-c", f"import med_rlvr_plugin.{module}"], env=env, capture_output=True, text=True
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), module
    use = "from med_rlvr_plugin.trl_reward import med_rlvr_reward; med_rlvr_reward(['A. x'], ['y'], label=['A'])"
    result = subprocess.run([sys.executable, "-c", use], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "ValueError: unknown variable MED_RLVR_SEED; valid:" in result.stderr
