"""Evaluation's two measures and the out-of-distribution block: the log-likelihood hooks and logs, report's
both-measures table, compare's paper block + OOD block (per-benchmark paired tests, macro average) from
hand-written lm-eval logs, the shipped task YAML, and the documented commands end to end on the tiny model
(`--mode both` over the paper's and the OOD files, plain lm_eval on the task groups)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from med_rlvr_plugin import analyze, evaluate
from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.data import SOURCES, format_row, read_rows
from med_rlvr_plugin.evaluate import EvalError, doc_to_choice, doc_to_target, loglik_accuracy, process_loglik_results
from med_rlvr_plugin.evaluate.__main__ import main
from med_rlvr_plugin.evaluate.reports import compare, report
from med_rlvr_plugin.evaluate.runner import default_tasks, mode_configs, prompt_tasks
from med_rlvr_plugin.launcher import SAMPLE_QUESTIONS, SAMPLE_SOURCE, sample_rows
from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.rollouts import BadLines
from med_rlvr_plugin.verifier import RewardConfig
from tests.real_data import MEDQA_TEST, MMLU_PRO_HEALTH, real_file

REPO = Path(__file__).resolve().parents[1]
STAMP = "2026-12-05T10-00-00.000001"
OOD = ("medrlvr_medmcqa", "medrlvr_pubmedqa", "medrlvr_mmlu_medical")


def row(index: int, label: str = "A", options: int = 4, **metadata) -> dict:
    texts = ["First", "Second", "Third", "Fourth", "Fifth"][:options]
    return {
        "prompt": render_prompt(f"Question {index}?", texts),
        "label": label,
        "datasource": "medqa",
        "id": f"q{index}",
        "question": f"Question {index}?",
        "options": texts,
        "metadata": metadata,
    }


def generate_line(index: int, doc: dict, letter: str) -> dict:
    """A generate_until sample of lm-eval 0.4.13 (as tests/test_evaluate.py writes them)."""
    text = f" <think>Reasoning {index}.</think> <answer>{letter}</answer>"
    return {
        "doc_id": index,
        "doc": doc,
        "arguments": {"gen_args_0": {"arg_0": doc["prompt"], "arg_1": {"until": [], "do_sample": False}}},
        "resps": [[text]],
        "filtered_resps": [text],
    }


def loglik_line(index: int, doc: dict, logliks: list[float]) -> dict:
    """A multiple_choice sample as lm-eval 0.4.13's EvaluationTracker writes it: a request per option
    (prompt, " LETTER"), each response (log-likelihood, is greedy) turned into text by sanitize_list."""
    letters = doc_to_choice(doc)
    return {
        "doc_id": index,
        "doc": doc,
        "target": str(doc_to_target(doc)),
        "arguments": {
            f"gen_args_{i}": {"arg_0": doc["prompt"], "arg_1": f" {letter}"} for i, letter in enumerate(letters)
        },
        "resps": [[[str(loglik), "False"]] for loglik in logliks],
        "filtered_resps": [[str(loglik), "False"] for loglik in logliks],
        "filter": "none",
        "metrics": ["accuracy"],
        "accuracy": loglik_accuracy(doc, logliks),
    }


def write_log(folder: Path, task: str, lines: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def model_logs(folder: Path, right: dict[str, list[bool]]) -> Path:
    """Sample logs of one model: task -> which questions it gets right (gold A; wrong: B, or B most likely)."""
    for task, answers in right.items():
        docs = [row(index) for index in range(len(answers))]
        if task.endswith("_loglik"):
            lines = [
                loglik_line(i, doc, [-1.0, -2.0, -3.0, -4.0] if ok else [-2.0, -1.0, -3.0, -4.0])
                for i, (doc, ok) in enumerate(zip(docs, answers, strict=True))
            ]
        else:
            lines = [
                generate_line(i, doc, "A" if ok else "B")
                for i, (doc, ok) in enumerate(zip(docs, answers, strict=True))
            ]
        write_log(folder, task, lines)
    return folder


# ---------------------------------------------------------------- hooks and task files


def test_loglik_hooks_score_the_option_letters():
    doc = row(0, label="C", options=5)
    assert doc_to_choice(doc) == ["A", "B", "C", "D", "E"] and doc_to_target(doc) == 2
    assert process_loglik_results(doc, [(-3.0, False), (-2.0, False), (-0.5, True), (-9.0, False), (-1.0, False)]) == {
        "accuracy": 1.0
    }
    assert loglik_accuracy(doc, [-1.0, -2.0, -1.0, -3.0, -4.0]) == 0.0  # a tie goes to the first letter, as argmax
    with pytest.raises(EvalError, match="field 'options'"):
        evaluate.check_choices({**doc, "options": "ABC"}, "x.jsonl:1")
    with pytest.raises(EvalError, match="field 'label': 'E' names no option of the 3"):
        evaluate.check_choices({**row(0, options=3), "label": "E"}, "x.jsonl:1")


@pytest.mark.parametrize(("source", "relative"), [("medqa", MEDQA_TEST), ("mmlu_pro", MMLU_PRO_HEALTH)])
def test_loglik_hooks_on_every_real_row(source, relative):
    """Every real MedQA test and MMLU-Pro health row (up to 10 options): one letter per option shown in the
    prompt, the gold letter's index among them."""
    for where, raw in read_rows(SOURCES[source], real_file(relative)):
        doc = format_row(raw, SOURCES[source])
        evaluate.check_choices(doc, where)
        letters = doc_to_choice(doc)
        assert [line[0] for line in doc["prompt"].splitlines() if line[1:3] == ". "][-len(letters) :] == letters
        assert letters[doc_to_target(doc)] == doc["label"]


def test_every_shipped_task_has_a_loglik_variant_and_the_ood_group_lists_the_three():
    configs = {path.name: yaml.safe_load(path.read_text()) for path in evaluate.TASK_DIR.glob("*.yaml")}
    tasks = {config["task"]: config for config in configs.values() if "group" not in config}
    generate = default_tasks()
    assert sorted(generate) == sorted(["medrlvr_medqa", "medrlvr_mmlu_pro_health", *OOD])
    for name, data_file in generate.items():
        variant = tasks[name + "_loglik"]
        assert variant["include"] == "_medrlvr_loglik_template_yaml"
        assert variant["dataset_kwargs"]["data_files"]["test"] == data_file
    groups = {config["group"]: config for config in configs.values() if "group" in config}
    assert groups["medrlvr_ood"]["task"] == list(OOD) == list(evaluate.ood_tasks())
    assert groups["medrlvr_ood_loglik"]["task"] == [name + "_loglik" for name in OOD]
    assert generate["medrlvr_pubmedqa"] == "data/pubmedqa_test.jsonl"


def test_run_defaults_to_the_paper_s_tasks_and_names_the_ood_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("medqa_test", "mmlu_pro_health", "medmcqa_dev", "pubmedqa_test", "mmlu_medical"):
        (tmp_path / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sample_rows()))
    assert list(prompt_tasks(())) == ["medrlvr_medqa", "medrlvr_mmlu_pro_health"]
    files = ["data/medmcqa_dev.jsonl", "data/pubmedqa_test.jsonl", "data/mmlu_medical.jsonl"]
    assert list(prompt_tasks(files)) == list(OOD)
    settings = {"n_samples": 1, "temperature": 0.0, "max_gen_toks": 8}
    both = mode_configs("medrlvr_pubmedqa", Path(files[1]), "both", settings)
    assert [config["task"] for config in both] == ["medrlvr_pubmedqa", "medrlvr_pubmedqa_loglik"]
    assert both[1]["output_type"] == "multiple_choice" and both[1]["dataset_kwargs"]["data_files"]["test"] == files[1]
    assert [c["task"] for c in mode_configs("x", Path(files[1]), "loglik", settings)] == ["x_loglik"]
    rows = [r | {"options": []} for r in sample_rows()]
    (tmp_path / "bare.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EvalError, match=r"bare.jsonl:1: field 'options'"):
        mode_configs("bare", tmp_path / "bare.jsonl", "loglik", settings)


def test_loglik_mode_refuses_generation_flags(capsys):
    for flags in (["--n-samples", "4"], ["--temperature", "1.0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "m", "--output-dir", "x", "--mode", "loglik", *flags])
        assert exit_info.value.code == 2
        assert "--mode loglik generates nothing" in capsys.readouterr().err


# ---------------------------------------------------------------- report and compare from hand-written logs


def test_report_shows_both_measures_and_grades_the_logged_logliks(tmp_path):
    folder = model_logs(
        tmp_path / "base",
        {"medrlvr_medqa": [False] * 5, "medrlvr_medqa_loglik": [True, True, True, False, False]},
    )
    summary = report(folder, RewardConfig())
    assert summary["tasks"]["medrlvr_medqa_loglik"]["metrics"] == {
        "accuracy": pytest.approx({"value": 0.6, "low": 0.2307, "high": 0.8824}, abs=1e-4)
    }
    markdown = (folder / "report.md").read_text()
    assert "| metric | medrlvr_medqa |" in markdown  # the per-metric table holds the generate task only
    assert "| medrlvr_medqa | 0.0 [0.0, 43.4] (n 5) | 60.0 [23.1, 88.2] (n 5) |" in markdown


def test_loglik_only_report_and_analyze_skipping_loglik_logs(tmp_path):
    folder = model_logs(tmp_path / "base", {"medrlvr_medqa_loglik": [True, False]})
    markdown = (report(folder, RewardConfig()) and (folder / "report.md").read_text()).split("\n\n")
    assert markdown[0] == "## base" and markdown[1].startswith("### Both measures")
    assert "| medrlvr_medqa | - | 50.0 [9.5, 90.5] (n 2) |" in markdown[-1]
    model_logs(folder, {"medrlvr_medqa": [True, True]})
    # analyze grades responses: the log-likelihood logs beside them hold none and are left out
    assert list(analyze.read_eval_logs([tmp_path], BadLines(strict=True))) == [("base", "medrlvr_medqa")]


def test_report_splits_mmlu_medical_by_subject(tmp_path):
    docs = [row(i, subject=subject) for i, subject in enumerate(["anatomy", "anatomy", "medical_genetics"])]
    write_log(tmp_path / "m", "medrlvr_mmlu_medical", [generate_line(i, doc, "A") for i, doc in enumerate(docs)])
    report(tmp_path / "m", RewardConfig())
    markdown = (tmp_path / "m" / "report.md").read_text()
    assert "### medrlvr_mmlu_medical by subject" in markdown and "| medical_genetics | 1 | 100.0 [" in markdown


def test_report_refuses_a_loglik_log_of_other_choices(tmp_path):
    line = loglik_line(0, row(0), [-1.0, -2.0, -3.0, -4.0])
    line["arguments"]["gen_args_3"]["arg_1"] = " Fourth"
    write_log(tmp_path / "m", "medrlvr_medqa_loglik", [line])
    with pytest.raises(EvalError, match=r"samples_medrlvr_medqa_loglik_.*:1: scored .* not the row's option letters"):
        report(tmp_path / "m", RewardConfig())
    line["resps"] = line["resps"][:3]
    write_log(tmp_path / "m", "medrlvr_medqa_loglik", [line])
    with pytest.raises(ToolError, match=r":1: not a logged multiple_choice sample .*one log-likelihood per option"):
        report(tmp_path / "m", RewardConfig())


def test_compare_prints_the_paper_block_then_the_ood_block(tmp_path):
    ten = 10
    base = {task: [i < 3 for i in range(ten)] for task in ("medrlvr_medqa", *OOD)}
    base |= {f"{task}_loglik": [i < 5 for i in range(ten)] for task in ("medrlvr_medqa", *OOD)}
    better = {task: [i < 8 for i in range(ten)] for task in base}
    better["medrlvr_pubmedqa"] = [i < 3 for i in range(ten)]
    table = compare(
        [model_logs(tmp_path / "base", base), model_logs(tmp_path / "rlvr", better)], config=RewardConfig()
    )
    markdown = table["markdown"]
    paper, ood = markdown.split(
        "## Out of distribution (medrlvr_ood: medrlvr_medmcqa, medrlvr_pubmedqa, medrlvr_mmlu_medical)"
    )
    assert "| model | medrlvr_medqa | difference | p | n | medrlvr_medqa_loglik | difference | p | n |" in paper
    assert "medrlvr_medmcqa" not in paper
    generate, loglik = ood.split("### log-likelihood")
    assert (
        "| model | medrlvr_medmcqa | difference | p | n | medrlvr_pubmedqa | difference | p | n "
        "| medrlvr_mmlu_medical |" in generate
    )
    # McNemar per benchmark: 5 discordant pairs all one way, p = 2 / 2^5
    assert re.search(r"\| rlvr \| 80\.0 \[49\.0, 94\.3\] \| \+50\.0 \[[^]]+\] \| 0\.062 \| 10 \|", generate)
    assert "_loglik | difference | p | n |" in loglik
    assert loglik.startswith("\n\naccuracy by log-likelihood (the option letter scored highest after the prompt")
    assert "| base | 30.0 | (baseline) | 50.0 | (baseline) |" in loglik  # the macro averages
    assert "| rlvr | 63.3 | +33.3 | 80.0 | +30.0 |" in loglik
    assert table["ood"]["macro_average"]["rlvr"] == pytest.approx({"generate": 19 / 30, "loglik": 0.8})
    # another metric: no loglik columns, the OOD block of that metric
    strict = compare([tmp_path / "base", tmp_path / "rlvr"], "accuracy_strict", RewardConfig())["markdown"]
    assert "_loglik" not in strict and "| rlvr | 63.3 | +33.3 |" in strict


def test_compare_macro_average_needs_every_benchmark(tmp_path):
    base = model_logs(tmp_path / "base", {task: [True, False] for task in OOD})
    partial = model_logs(tmp_path / "partial", {task: [True, True] for task in OOD[:2]})
    markdown = compare([base, partial], config=RewardConfig())["markdown"]
    assert "| partial | - |  |" in markdown and "| base | 50.0 | (baseline) |" in markdown
    assert "| model | macro average, generate | difference, generate |\n" in markdown  # no loglik logs
    assert "## Out of distribution" in markdown and "| model | medrlvr_medqa" not in markdown


# ---------------------------------------------------------------- the documented commands on the tiny model


def perturbed_copy(model: Path, folder: Path) -> Path:
    """The tiny model with other random weights: a second model whose answers differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    copy = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        for parameter in copy.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    copy.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    return folder


def prepare_ood(workdir: Path) -> None:
    """The OOD files by docs/data.md's commands, from the hand-written releases in tests/fixtures/ood."""
    shutil.copytree(REPO / "tests" / "fixtures" / "ood", workdir / "releases")
    commands = [
        ["medmcqa", "--input", "releases/medmcqa/dev.json", "--output", "data/medmcqa_dev.jsonl"],
        [
            "pubmedqa",
            "--input",
            "releases/pubmedqa/ori_pqal.json",
            "--ids",
            "releases/pubmedqa/test_ground_truth.json",
            "--output",
            "data/pubmedqa_test.jsonl",
        ],
        ["mmlu", "--input", "releases/mmlu/test", "--output", "data/mmlu_medical.jsonl"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, str(REPO / "data_prep" / "prepare.py"), *command],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr


DOCS_EXAMPLE = re.compile(r"```bash\n([^`]*)```\n\n<!-- example: extended table -->\n```text\n(.*?)```", re.DOTALL)


@pytest.mark.integration
def test_documented_extended_table_on_the_tiny_model(tmp_path, tiny_qwen2, monkeypatch, capsys):
    """docs/evaluation.md's example commands, as the page writes them: `run --mode both` on two models over
    the paper's files and the OOD files, then `compare`: the paper block, the OOD block and both measures,
    in the layout of the page's example."""
    commands, example = DOCS_EXAMPLE.search((REPO / "docs" / "evaluation.md").read_text()).groups()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("medqa_test.jsonl", "mmlu_pro_health.jsonl"):
        (tmp_path / "data" / name).write_text("".join(json.dumps(r) + "\n" for r in sample_rows()))
    prepare_ood(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(tiny_qwen2)
    perturbed_copy(tiny_qwen2, tmp_path / "models" / "rlvr")
    for command in commands.replace("\\\n", " ").splitlines():
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "med_rlvr_plugin.evaluate"], command
        capsys.readouterr()
        assert main(argv[3:]) == 0, command
    printed = capsys.readouterr().out
    assert printed == Path("eval/paper/table.md").read_text() + "\n"
    for name in ("base", "rlvr"):
        summary = json.loads(Path(f"eval/paper/{name}/summary.json").read_text())
        results = {}
        for path in Path(f"eval/paper/{name}").glob("results_*.json"):
            results |= json.loads(path.read_text())["results"]
        for task in ("medrlvr_medqa", *OOD):
            for variant in (task, task + "_loglik"):
                # lm-eval's own aggregate of the task hooks equals report's grading of the logs
                assert results[variant]["accuracy,none"] == summary["tasks"][variant]["metrics"]["accuracy"]["value"]
        assert "Both measures" in Path(f"eval/paper/{name}/report.md").read_text()

    def layout(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(("| model", "## ", "### "))]

    shutil.copy("eval/paper/table.md", tmp_path.parent / "extended_table.md")  # to update the page's example
    assert layout(example) == layout(printed)


@pytest.mark.integration
def test_loglik_mode_on_a_chat_file(tmp_path, tiny_qwen2):
    """A `--chat` file: lm-eval applies the chat template and scores "A", "B", ... with no delimiter after the
    generation prompt; report grades the logged log-likelihoods as lm-eval did."""
    rows = [format_row(question, SAMPLE_SOURCE, chat=True) for question in SAMPLE_QUESTIONS]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["--limit", "2", "--device", "cpu", "--model-args", "dtype=float32", "--batch-size", "1"]
    argv = ["run", str(tiny_qwen2), "--data", str(tmp_path / "chat.jsonl"), "--mode", "loglik", *flags]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / tiny_qwen2.name
    line = json.loads(next(folder.glob("samples_medrlvr_chat_loglik_*.jsonl")).read_text().splitlines()[0])
    requests = line["arguments"]
    assert [requests[f"gen_args_{i}"]["arg_1"] for i in range(len(requests))] == ["A", "B", "C", "D"]
    assert requests["gen_args_0"]["arg_0"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    results = json.loads(next(folder.glob("results_*.json")).read_text())["results"]
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["tasks"]) == ["medrlvr_chat_loglik"]
    assert (
        results["medrlvr_chat_loglik"]["accuracy,none"]
        == summary["tasks"]["medrlvr_chat_loglik"]["metrics"]["accuracy"]["value"]
    )


@pytest.mark.integration
def test_plain_lm_eval_runs_the_ood_groups(tmp_path, tiny_qwen2, monkeypatch):
    """`lm_eval --tasks medrlvr_ood,medrlvr_ood_loglik` (docs/evaluation.md): the groups resolve to the three
    benchmarks each, and their aggregate is the macro average; report reads the logs."""
    from lm_eval.__main__ import cli_evaluate

    monkeypatch.chdir(tmp_path)
    prepare_ood(tmp_path)
    argv = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_qwen2},dtype=float32", "--device", "cpu"]
    argv += ["--include_path", str(evaluate.TASK_DIR), "--tasks", "medrlvr_ood,medrlvr_ood_loglik", "--limit", "2"]
    argv += ["--gen_kwargs", "max_gen_toks=4", "--output_path", "cli_out", "--log_samples"]
    monkeypatch.setattr(sys, "argv", argv)
    cli_evaluate()
    folder = next((tmp_path / "cli_out").iterdir())
    results = json.loads(next(folder.glob("results_*.json")).read_text())["results"]
    for group, suffix in (("medrlvr_ood", ""), ("medrlvr_ood_loglik", "_loglik")):
        members = [results[task + suffix]["accuracy,none"] for task in OOD]
        assert results[group]["accuracy,none"] == pytest.approx(sum(members) / 3)
    summary = report(folder, RewardConfig())
    assert sorted(summary["tasks"]) == sorted([*OOD, *(task + "_loglik" for task in OOD)])
