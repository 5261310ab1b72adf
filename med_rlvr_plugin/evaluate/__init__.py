"""lm-eval task hooks for prepared prompt files, and the grading of one question's responses (METRICS).

The package makes the paper's accuracy table for any model or checkpoint: lm-evaluation-harness (0.4.13)
generates, our verifier grades. lm-eval does everything about generation: backends (hf, vllm), batching,
the request cache, sample logs. The package adds, one concern a module:
- here, the task hooks (`process_docs`, `doc_to_text`, `process_results`) for prepared prompt files, named
  by the task YAMLs in `lm_eval_tasks/` (`!function med_rlvr_plugin.evaluate.process_docs`) and by the
  tasks `run` builds for any file. `process_results` is `grade_texts`: `reward.score_sample` in lenient
  format (the paper's), plus accuracy in strict format, the relaxed letter and the reward under the
  training RewardConfig (MED_RLVR_* variables, the paper's by default). The log-likelihood variant of each
  task (`*_loglik`, `--mode loglik`) scores each option letter after the same prompt instead
  (`doc_to_choice`, `doc_to_target`, `process_loglik_docs`, `process_loglik_results`: `loglik_accuracy`);
- `statistics`: pure functions, `wilson_interval`, `bounded_interval`, `count_interval`, `pass_at_k`,
  `mcnemar_p` and `mcnemar_interval`, `paired_bootstrap`;
- `reports`: `report` and `compare` read lm-eval's sample logs and grade them again with the same
  `grade_texts`, using the prompt exactly as sent (after any chat template), so any lm-eval run, ours or
  the plain CLI's, gets the full table: Wilson intervals, subgroups, pass@k, paired tests (the logs are
  read by `med_rlvr_plugin.lm_eval_logs`, which analyze shares);
- `modes`: the log-likelihood logs graded again, report's both-measures table, and compare's paper block
  followed by the out-of-distribution block (`medrlvr_ood`: per-benchmark paired tests, macro average);
- `settings`: what a run grades and generates with (the run's manifest against the shell), and the
  machine's checks (CPU without CUDA, vLLM installed, a hub model reachable);
- `runner`: `run`, lm-eval on models (or a run's checkpoints) x prompt files, one folder per model;
- `steps`: accuracy by training step, the table and the plot;
- `__main__`: the command line, `python -m med_rlvr_plugin.evaluate run|report|compare`.
docs/evaluation.md has the commands, the metric definitions and an example table.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.prompts import LETTERS
from med_rlvr_plugin.reward import score_sample
from med_rlvr_plugin.verifier import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RewardConfig,
    config_from_env,
    parse_answer_letter,
    parse_label,
)

TASK_DIR = Path(__file__).resolve().parents[1] / "lm_eval_tasks"
TEMPLATE = TASK_DIR / "_medrlvr_template_yaml"
LOGLIK_TEMPLATE = TASK_DIR / "_medrlvr_loglik_template_yaml"
OOD_GROUP = TASK_DIR / "medrlvr_ood.yaml"
# Per-question metrics: key, what the report calls it, and kind. The keys are reward.METRICS' names (of the
# lenient-format score, the paper's) and evaluate's own three, ADDED_METRICS. A "rate" is a proportion of
# responses, the "mean" reward an average in [-1, 1] (both Wilson intervals over questions), a "count" an
# average number of words or characters (a log-scale t interval).
ADDED_METRICS = ("accuracy_strict", "relaxed_accuracy", "reward")
METRICS = (
    ("accuracy", "accuracy (lenient, the paper's)", "rate"),
    ("accuracy_strict", "accuracy (strict format)", "rate"),
    ("well_formed", "well formed (lenient)", "rate"),
    ("relaxed_accuracy", "relaxed accuracy (last answer block, any format)", "rate"),
    ("answer_leak", "answer leak", "rate"),
    ("preamble", "text before <think>", "rate"),
    ("reward", "mean reward (training config)", "mean"),
    ("think_words", "thinking words", "count"),
    ("response_chars", "response characters", "count"),
)
RATES = tuple(key for key, _, kind in METRICS if kind == "rate")


class EvalError(ToolError):
    """Input the evaluation cannot use; the message says where and what to do."""


# ---------------------------------------------------------------- rows and grading (pure)


def check_row(row: object, where: str) -> bool:
    """Raise EvalError unless `row` is a gradable prepared row; return whether its prompt is a chat.

    A chat prompt (`prepare.py --chat`) must be one user message: lm-eval renders a row to one user turn
    and applies the model's chat template itself (`--apply_chat_template`).
    """
    fix = "evaluate files written by data_prep/prepare.py (docs/data.md)"
    if not isinstance(row, dict):
        raise EvalError(f"{where}: not a JSON object; {fix}")
    if "prompt" not in row or "label" not in row:
        missing = " and ".join(repr(field) for field in ("prompt", "label") if field not in row)
        raise EvalError(f"{where}: no field {missing}; {fix}")
    prompt = row["prompt"]
    chat = isinstance(prompt, list)
    if chat and not (
        len(prompt) == 1
        and isinstance(prompt[0], dict)
        and prompt[0].get("role") == "user"
        and isinstance(prompt[0].get("content"), str)
    ):
        raise EvalError(f"{where}: field 'prompt': a chat prompt must be exactly one user message; {fix}")
    if not chat and not (isinstance(prompt, str) and prompt.strip()):
        raise EvalError(f"{where}: field 'prompt' must be non-empty text or a messages list; {fix}")
    try:
        parse_label(row["label"])
    except ValueError as error:
        raise EvalError(f"{where}: field 'label': {error}") from None
    return chat


def doc_to_text(doc: Mapping) -> str:
    """The text lm-eval sends: a base prompt as is, a chat prompt's user message (lm-eval wraps it)."""
    prompt = doc["prompt"]
    return prompt[0]["content"] if isinstance(prompt, list) else prompt


def relaxed_letter(completion: str) -> str | None:
    """The letter the last `<answer>...</answer>` block names, whatever the rest of the response looks like."""
    close = completion.rfind(ANSWER_CLOSE)
    start = completion.rfind(ANSWER_OPEN, 0, close) if close >= 0 else -1
    return parse_answer_letter(completion[start + len(ANSWER_OPEN) : close]) if start >= 0 else None


def grade_texts(prompt: str, texts: Sequence[str], label: object, config: RewardConfig) -> dict[str, float]:
    """Each metric of METRICS for one question, averaged over its responses `texts` to `prompt`.

    The metrics of reward.METRICS are `score_sample`'s in lenient format (the paper's); accuracy in strict
    format and the reward `config` (the training run's) gives are read off the same grade: strict format
    differs only in refusing text before `<think>` in an otherwise well-formed response, which then earns
    -1 (`verifier.grade_response` checks it after the tags, before the letter). Grading once instead of
    twice; tests/test_evaluate.py checks the two against `grade_response` in strict format.
    """
    gold = parse_label(label)
    lenient = _lenient(config)
    totals: Counter = Counter()
    for text in texts:
        score = score_sample(prompt + text, prompt, label, lenient)
        grade = score.grade
        refused = grade.well_formed and grade.preamble  # malformed in strict format
        totals.update(score.metrics)
        totals.update(
            {
                "accuracy_strict": grade.correct and not refused,
                "relaxed_accuracy": relaxed_letter(grade.completion) == gold,
                "reward": -1.0 if refused and config.format == "strict" else grade.reward,
            }
        )
    return {key: totals[key] / len(texts) for key, _, _ in METRICS}


@lru_cache(maxsize=8)
def _lenient(config: RewardConfig) -> RewardConfig:
    """`config` in lenient format; cached, since copying a dataclass costs a tenth of grading."""
    return replace(config, format="lenient")


# ---------------------------------------------------------------- lm-eval task hooks


@lru_cache(maxsize=1)
def training_config() -> RewardConfig:
    """The reward configuration of this process's MED_RLVR_* variables, as the reward file reads them."""
    return config_from_env(os.environ)


def process_docs(dataset):
    """lm-eval's hook on the loaded rows: stop before any generation when a row cannot be graded."""
    training_config()
    for index, row in enumerate(dataset):
        check_row(row, f"row {index + 1} of the task's data file")
    return dataset


def process_results(doc: Mapping, results: list, config: RewardConfig | None = None) -> dict[str, float]:
    """lm-eval's hook: `results` is [text], or [[text, ...]] with repeats and a take_first_k filter. `run`
    binds `config` (the training run's, from its manifest); the plain lm_eval CLI grades with the shell's."""
    texts = results[0] if isinstance(results[0], list) else results
    return grade_texts(doc_to_text(doc), texts, doc["label"], config or training_config())


# ---------------------------------------------------------------- log-likelihood variant (`*_loglik`)


def check_choices(row: Mapping, where: str) -> None:
    """EvalError unless a checked row (`check_row`) lists its options, the gold one among them: the
    log-likelihood variant scores one letter per option."""
    options = row.get("options")
    if not (isinstance(options, list) and 2 <= len(options) <= len(LETTERS)):
        raise EvalError(
            f"{where}: field 'options': the log-likelihood mode scores one letter per option and needs the "
            "options list data_prep/prepare.py writes"
        )
    if LETTERS.index(parse_label(row["label"])) >= len(options):
        raise EvalError(f"{where}: field 'label': {row['label']!r} names no option of the {len(options)}")


def doc_to_choice(doc: Mapping) -> list[str]:
    """The continuations scored: the row's option letters (lm-eval puts its target delimiter, " ", before)."""
    return list(LETTERS[: len(doc["options"])])


def doc_to_target(doc: Mapping) -> int:
    """The gold option's index among `doc_to_choice(doc)`."""
    return LETTERS.index(parse_label(doc["label"]))


def loglik_accuracy(doc: Mapping, logliks: Sequence[float]) -> float:
    """1.0 when the gold letter has the highest log-likelihood (the first such letter on a tie, as lm-eval's
    argmax), else 0.0."""
    return float(max(range(len(logliks)), key=logliks.__getitem__) == doc_to_target(doc))


def process_loglik_docs(dataset):
    """`process_docs` for the log-likelihood variant: every row must list its options too."""
    for index, row in enumerate(process_docs(dataset)):
        check_choices(row, f"row {index + 1} of the task's data file")
    return dataset


def process_loglik_results(doc: Mapping, results: list) -> dict[str, float]:
    """lm-eval's hook: `results` holds (log-likelihood, is greedy) per option letter."""
    return {"accuracy": loglik_accuracy(doc, [loglik for loglik, _ in results])}


@lru_cache(maxsize=1)
def ood_tasks() -> tuple[str, ...]:
    """The out-of-distribution benchmarks, as the lm-eval group `medrlvr_ood` lists them."""
    import yaml

    return tuple(yaml.safe_load(OOD_GROUP.read_text(encoding="utf-8"))["task"])
