"""Evaluation runs (issue 16): the run's own settings from its manifest, one folder and one cache per model,
the errors a CPU user meets first, the steps plot, and the generation arguments that reach transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from med_rlvr_plugin.evaluate import EvalError, runner
from med_rlvr_plugin.evaluate.__main__ import main
from med_rlvr_plugin.evaluate.reports import report
from med_rlvr_plugin.evaluate.settings import describe, resolve_device, run_settings
from med_rlvr_plugin.evaluate.steps import read_stages, steps_figure, write_steps
from med_rlvr_plugin.launcher import sample_rows
from med_rlvr_plugin.plots import pyplot
from med_rlvr_plugin.verifier import RewardConfig
from tests.test_evaluate import error_line, newest_samples, right_or_wrong, workdir  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PENALIZED_STRICT = {"MED_RLVR_REWARD_SCHEME": "penalized", "MED_RLVR_FORMAT": "strict"}


def manifest(
    run_dir: Path, env: dict | None = PENALIZED_STRICT, tokens: int | None = 2048, base: str = "base"
) -> Path:
    """A launcher manifest.json with what evaluate reads: the reward env, rollout max_new_tokens, base model."""
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"actor": {"model_name_or_path": base}, "rollout": {"max_new_tokens": tokens} if tokens else {}}
    record = {"kind": "ppo", "reward": {"env": env} if env is not None else None, "settings": settings}
    (run_dir / "manifest.json").write_text(json.dumps(record))
    return run_dir


# ---------------------------------------------------------------- the run's settings


def test_the_manifest_gives_the_reward_and_max_new_tokens(tmp_path):
    run = manifest(tmp_path / "run")
    chosen = run_settings(run, None, None, environ={})  # a fresh shell
    assert chosen.config == RewardConfig(scheme="penalized", format="strict")
    assert (chosen.max_gen_toks, chosen.base_model) == (2048, "base")
    assert "scheme=penalized" in describe(chosen) and str(run / "manifest.json") in describe(chosen)
    # the shell agreeing with the run is no conflict
    assert run_settings(run, 2048, None, environ=PENALIZED_STRICT).config == chosen.config
    # an SFT run records no reward: the shell's, said so
    sft = run_settings(manifest(tmp_path / "sft", env=None, tokens=None), None, None, environ={})
    assert sft.config == RewardConfig() and sft.max_gen_toks == 1024 and "this shell's reward" in describe(sft)
    # no manifest: the shell's and the flags', said so
    bare = run_settings(tmp_path, 512, None, environ={"MED_RLVR_LEAK_PENALTY": "0.5"})
    assert bare.config == RewardConfig(leak_penalty=0.5) and bare.max_gen_toks == 512
    assert f"no manifest.json in {tmp_path}" in describe(bare)


def test_a_shell_that_contradicts_the_manifest_is_refused_naming_both(tmp_path):
    run = manifest(tmp_path / "run")
    shell = {"MED_RLVR_REWARD_SCHEME": "neutral"}
    with pytest.raises(EvalError) as caught:
        run_settings(run, 1024, None, environ=shell)
    message = str(caught.value)
    assert "scheme neutral (this shell) vs penalized (the run)" in message
    assert "format lenient (this shell) vs strict (the run)" in message
    assert "--max-gen-toks 1024 vs the run's max_new_tokens 2048" in message
    assert "pass --settings manifest" in message
    assert run_settings(run, 1024, "manifest", environ=shell).config.scheme == "penalized"
    chosen = run_settings(run, 1024, "shell", environ=shell)
    assert (chosen.config.scheme, chosen.max_gen_toks) == ("neutral", 1024)


def test_run_refuses_the_contradiction_before_any_model_loads(tmp_path, tiny_qwen2, monkeypatch, capsys):
    run = manifest(tmp_path / "run")
    (run / "ckpt").mkdir()
    (run / "ckpt" / "global_step10_hf").symlink_to(tiny_qwen2)
    monkeypatch.setenv("MED_RLVR_REWARD_SCHEME", "neutral")
    assert main(["run", "--run-dir", str(run), "--data", str(prompt_file(tmp_path))]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and error_line(err[0], "scheme neutral (this shell) vs penalized (the run)")
    assert not (run / "eval").exists()


def prompt_file(folder: Path) -> Path:
    path = folder / "medqa_test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in sample_rows()))
    return path


# ---------------------------------------------------------------- one folder and one cache per model


def test_one_cache_whatever_the_spelling_of_the_model_path(tmp_path, tiny_qwen2, monkeypatch):
    monkeypatch.chdir(tiny_qwen2.parent)
    spellings = [tiny_qwen2.name, f"./{tiny_qwen2.name}", str(tiny_qwen2), f"{tiny_qwen2.name}/../{tiny_qwen2.name}"]
    assert len({runner.model_fingerprint("hf", "dtype=float32", model) for model in spellings}) == 1
    assert runner.model_path(spellings[1]) == str(tiny_qwen2.resolve())
    other = runner.model_fingerprint("hf", "dtype=bfloat16", tiny_qwen2.name)
    assert other != runner.model_fingerprint("hf", "dtype=float32", tiny_qwen2.name)


def test_a_folder_holding_another_model_is_not_merged_into(tmp_path, tiny_qwen2, capsys):
    sft, ppo = tmp_path / "runs" / "sft" / "model", tmp_path / "runs" / "ppo" / "model"
    for model in (sft, ppo):
        model.mkdir(parents=True)
        (model / "config.json").write_text((tiny_qwen2 / "config.json").read_text())
    out = tmp_path / "eval"
    (out / "model").mkdir(parents=True)
    record = {"config": {"model": "hf", "model_args": f"pretrained={sft},dtype=float32"}}
    (out / "model" / "results_2026-12-01T10-00-00.000001.json").write_text(json.dumps(record))
    runner.check_owner(out / "model", str(sft))  # the same model again: its own folder
    assert main(["run", str(ppo), "--data", str(prompt_file(tmp_path)), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert error_line(err, f"{out / 'model'} holds the evaluation of another model, {sft}")
    assert sorted(path.name for path in (out / "model").iterdir()) == ["results_2026-12-01T10-00-00.000001.json"]


def test_report_refuses_logs_of_two_models_in_one_folder(tmp_path):
    folder = right_or_wrong(tmp_path / "model", [True, False])
    log = next(folder.glob("samples_*.jsonl"))
    stamp = log.name.removeprefix("samples_medrlvr_medqa_").removesuffix(".jsonl")
    other = log.with_name(log.name.replace("medrlvr_medqa", "medrlvr_mmlu_pro_health").replace(stamp, stamp + "1"))
    other.write_text(log.read_text())
    for name, model in ((f"results_{stamp}.json", "/runs/sft/model"), (f"results_{stamp}1.json", "/runs/ppo/model")):
        (folder / name).write_text(json.dumps({"config": {"model": "hf", "model_args": f"pretrained={model}"}}))
    with pytest.raises(EvalError, match="come from different models .*/runs/sft/model.*/runs/ppo/model"):
        report(folder, RewardConfig())


# ---------------------------------------------------------------- errors a CPU user meets first


def test_without_cuda_the_hf_backend_runs_on_the_cpu(capsys):
    assert resolve_device("hf", None) == "cpu"  # this machine has no GPU
    assert "no CUDA GPU on this machine; generating on the CPU" in capsys.readouterr().err
    assert resolve_device("hf", "cuda:1") == "cuda:1" and resolve_device("vllm", None) is None


def test_a_hub_model_out_of_reach_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MED_RLVR_")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    command = ["run", "no-such-org/no-such-model", "--data", str(prompt_file(tmp_path)), "--output-dir", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "med_rlvr_plugin.evaluate", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and error_line(lines[0], "model no-such-org/no-such-model: not a local folder"), lines
    assert "huggingface-cli download no-such-org/no-such-model" in lines[0]
    assert not out.exists()


def test_a_killed_run_s_scratch_folders_are_removed(tmp_path, capsys):
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale, running = tmp_path / f".lm_eval-{finished.pid}-abc", tmp_path / f".lm_eval-{os.getppid()}-def"
    for folder in (stale, running):
        (folder / "sub").mkdir(parents=True)
    runner.remove_stale_scratch(tmp_path)
    assert not stale.exists() and running.exists()
    assert f"removed {stale}, left by an interrupted run" in capsys.readouterr().err


# ---------------------------------------------------------------- the steps plot


def test_steps_plot_integer_steps_base_at_zero_equal_values_visible_and_stages(tmp_path):
    rows = []
    for label, step, right in [
        ("base", 0, [True] + [False] * 4),
        ("global_step1_hf", 1, [True] * 2 + [False] * 3),
        ("global_step3_hf", 3, [True] * 3 + [False] * 2),
        ("model", None, [True] * 4 + [False]),
    ]:
        summary = report(right_or_wrong(tmp_path / label, right), RewardConfig())
        summary["tasks"]["medrlvr_mmlu_pro_health"] = summary["tasks"]["medrlvr_medqa"]  # equal values
        rows.append((label, step, summary))
    timeline = tmp_path / "analysis" / "timeline.json"
    timeline.parent.mkdir()
    stages = [
        {"name": "Format Failure", "first": 0, "last": 1, "shares": {}},
        {"name": "Verbose Formatter", "first": 2, "last": 3, "shares": {}},
    ]
    timeline.write_text(json.dumps({"axis": "training step", "stages": stages}))
    write_steps(tmp_path, list(reversed(rows)), timeline)
    assert [entry["step"] for entry in json.loads((tmp_path / "steps.json").read_text())] == [0, 1, 3, None]
    assert "| base | 0 | 20.0 [3.6, 62.4] |" in (tmp_path / "steps.md").read_text()

    accuracy = [(label, step, {t: e["metrics"]["accuracy"] for t, e in s["tasks"].items()}) for label, step, s in rows]

    figure, curves = steps_figure(accuracy, read_stages(timeline))
    strip, axes = figure.axes
    assert [text.get_text() for text in strip.texts] == ["1", "2"]  # the stages' numbers on the strip
    assert len(curves) == 4  # two tasks, each by step and its final model
    figure.canvas.draw()
    ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    medqa, health = [line for line in axes.get_lines() if line.get_marker() in tuple("osD^v<>")]
    assert list(medqa.get_ydata()) == list(health.get_ydata())  # equal values ...
    assert medqa.get_marker() != health.get_marker() and list(medqa.get_xdata()) != list(health.get_xdata())
    levels = [line for line in axes.get_lines() if line.get_label().endswith("(final)")]
    assert len(levels) == 2 and levels[0].get_ydata()[0] == levels[1].get_ydata()[0]  # equal final levels ...
    # ... dash in each other's gaps: matplotlib's (offset, pattern) of each line, offsets a dash apart
    (first, pattern), (second, _) = (line._dash_pattern for line in levels)
    assert abs(first - second) == pattern[0]
    assert min(medqa.get_xdata()) < 0.5  # ... and the base model at step 0
    pyplot().close(figure)
    assert read_stages(tmp_path / "none.json") == []


# ---------------------------------------------------------------- sampling as training samples


@pytest.mark.integration
def test_hf_sampling_reaches_transformers_without_top_k_or_top_p(workdir, tiny_qwen2, monkeypatch):  # noqa: F811
    """--n-samples through the HF backend: the arguments lm-eval hands to generate, and the logits processors
    transformers builds from them: temperature 1.0 and nothing else, as vLLM samples in training."""
    from lm_eval.models.huggingface import HFLM
    from transformers.generation.utils import GenerationMixin

    arguments, processors = [], []
    model_generate, get_processors = HFLM._model_generate, GenerationMixin._get_logits_processor

    def record_arguments(self, context, max_length, stop, **kwargs):
        arguments.append({key: value for key, value in kwargs.items() if key != "attention_mask"})
        return model_generate(self, context, max_length, stop, **kwargs)

    def record_processors(self, *args, **kwargs):
        built = get_processors(self, *args, **kwargs)
        processors.append(sorted(type(processor).__name__ for processor in built))
        return built

    monkeypatch.setattr(HFLM, "_model_generate", record_arguments)
    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", record_processors)
    command = ["run", str(tiny_qwen2), "--data", "data/medqa_test.jsonl", "--limit", "1", "--n-samples", "2"]
    options = ["--max-gen-toks", "3", "--model-args", "dtype=float32", "--output-dir", str(workdir / "out")]
    assert main([*command, *options]) == 0
    assert arguments and all(
        call == {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} for call in arguments
    ), arguments
    assert processors and all(not any("TopK" in name or "TopP" in name for name in built) for built in processors)
    sample = newest_samples(workdir / "out" / tiny_qwen2.name, "medrlvr_medqa")[0]
    assert len(sample["resps"][0]) == 2
    assert sample["arguments"]["gen_args_0"]["arg_1"] | {"until": []} == {
        "until": [],
        "max_gen_toks": 3,
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }


@pytest.mark.integration
def test_a_model_that_fails_to_load_leaves_no_folder(tmp_path, tiny_qwen2, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_qwen2 / "config.json").read_text())  # no weights, no tokenizer
    out = tmp_path / "eval" / "new"
    command = ["run", str(broken), "--data", str(prompt_file(tmp_path)), "--output-dir", str(out), "--limit", "1"]
    assert main(command) == 1
    assert error_line(capsys.readouterr().err, "")
    assert not (tmp_path / "eval").exists()  # the folders this run created are gone
