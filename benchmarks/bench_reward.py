"""Per-call time of the grading rule and of the OpenRLHF reward file, each beside a floor measured in the same run.

Two floors, timed alternately with what they are set against, so that load from other jobs falls on both:

- The pure floor, for `verifier.grade_response` alone: the rule's shape in the fastest published medical
  multiple-choice graders, in plain Python (the prompt and a trailing `<|endoftext|>` cut off, one format
  `fullmatch` regex, the answer block it captures, one `findall` for letters, a float returned).
- The tensor floor, for the reward file: the shape of the common peer reward functions (one compiled regex
  for the format, one for the answer) with the returned values built as tensors, whose cost hides the
  rule's own.

Ours does more (prompt location, also of a prompt truncated from the left, special-token stripping, the
full format rule, the answer grammar, the leak check; the reward file adds the behaviour class and twelve
logged metrics). Targets: `grade_response` at most 1.5x the pure floor on realistic responses, and the
reward file within 3x of the tensor floor; `grade_response` on a 1 MB adversarial response or prompt
option line under 10 ms on an idle machine (the reward file under 50 ms); time growing linearly with
length (each doubling of the input about doubles the time); rollout sampling (docs/dynamics.md) at a
share of 0.1 within 1.25x of sampling off (a drawn call adds its JSON line and one write). Also: the word
count of thinking in Chinese and in Spanish (`count_words`, each CJK character a word) beside `str.split`,
the whitespace count it replaced.

    python benchmarks/bench_reward.py [--repeats 2000]
"""

import argparse
import importlib.util
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from med_rlvr_plugin.prompts import render_prompt
from med_rlvr_plugin.verifier import count_words, grade_response

REWARD_FILE = Path(__file__).resolve().parents[1] / "med_rlvr_plugin" / "openrlhf_reward.py"
PROMPT = render_prompt(
    "A 52-year-old man has crushing chest pain for 40 minutes, diaphoresis, and ST elevation in leads II, III "
    "and aVF. Which coronary artery is most likely occluded?",
    ["Left anterior descending", "Left circumflex", "Right coronary", "Left main", "Posterior descending"],
)
SENTENCE = "ST elevation in the inferior leads points to the right coronary artery, which supplies the inferior wall. "
# Option wording full of near-hedges the answer grammar must scan past: letters, "or", "and", "(G) of".
WORDING = "Hepatitis B and C or E. coli (hemophilia A) with free energy (G) of the vessel "

FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.S)
ANSWER = re.compile(r"<answer>\s*\(?([A-J])\)?\s*</answer>")


# The pure floor: one format regex over the whole response that also captures the answer block, then the
# letters in that block; the first letter decides. No prompt search, no special tokens beyond one.
PURE_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>(.*?)</answer>", re.S)
PURE_LETTER = re.compile(r"\b([A-J])\b")


def pure_floor(query: str, prompt: str, label: str) -> float:
    response = query[len(prompt) :].removesuffix("<|endoftext|>").strip()
    match = PURE_FORMAT.fullmatch(response)
    if match is None:
        return -1.0
    letters = PURE_LETTER.findall(match.group(1))
    return 1.0 if letters and letters[0] == label else 0.0


def floor_reward(queries, prompts, labels, **kwargs):
    response = queries[0][len(prompts[0]) :].replace("<|endoftext|>", "").strip()
    well_formed = FORMAT.match(response) is not None
    match = ANSWER.search(response)
    correct = well_formed and match is not None and match.group(1) == labels[0]
    reward = 1.0 if correct else (0.0 if well_formed else -1.0)
    return {
        "rewards": torch.tensor(reward),
        "scores": torch.tensor(float(correct)),
        "extra_logs": {"accuracy": torch.tensor(float(correct))},
    }


def load_reward_func(environ: dict[str, str] | None = None):
    """The reward file's reward_func, loaded under these extra environment variables (read at load)."""
    spec = importlib.util.spec_from_file_location("reward_func", REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ, environ or {}):
        spec.loader.exec_module(module)
    return module.reward_func


def per_call_seconds(function, query: str, repeats: int, prompt: str = PROMPT) -> list[float]:
    """Times of `repeats` calls of a reward function (OpenRLHF's batch of one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function([query], [prompt], ["C"])
        times.append(time.perf_counter() - start)
    return times


def paired_medians(ours, floor, args: tuple, repeats: int) -> tuple[float, float]:
    """Median seconds per call of `ours(*args)` and `floor(*args)`, called alternately."""
    ours_times, floor_times = [], []
    for _ in range(repeats):
        for function, times in ((ours, ours_times), (floor, floor_times)):
            start = time.perf_counter()
            function(*args)
            times.append(time.perf_counter() - start)
    return statistics.median(ours_times), statistics.median(floor_times)


def grade_seconds(query: str, repeats: int, prompt: str = PROMPT) -> list[float]:
    """Times of `repeats` calls of `grade_response` on one query."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        grade_response(query, prompt, "C")
        times.append(time.perf_counter() - start)
    return times


def adversarial(size: int) -> dict[str, str]:
    """Responses of about `size` characters built to hurt regex engines and naive parsers."""
    return {
        "repeated <think>": "<think>" * (size // 7),
        "tags, no closing": ("<think></think><answer>" * (size // 22))[:size],
        "parentheses in answer": "<think>x</think><answer>" + "(" * size + "</answer>",
        "whitespace in answer": "<think>x</think><answer>Answer" + " " * size + "!</answer>",
        "trailing specials": "<think>x</think><answer>C</answer>" + "<|im_end|>\n" * (size // 11) + "x",
        "long thinking": "<think>" + SENTENCE * (size // len(SENTENCE)) + "</think><answer>C</answer>",
        "trailing whitespace": "<think>x</think><answer>C</answer>" + " \n\u00a0" * (size // 3),
        "invisible answer": "<think>x</think><answer>" + "\u200b\u200e\ufeff" * (size // 3) + "C</answer>",
        "long option wording": "<think>x</think><answer>C. " + (WORDING * (size // len(WORDING))) + "</answer>",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000, help="calls per realistic response length")
    args = parser.parse_args()
    reward_func = load_reward_func()
    realistic(reward_func, args.repeats)
    truncated(reward_func, args.repeats)
    new_prompts(reward_func, args.repeats)
    adapters(reward_func, args.repeats)
    sampling(reward_func, args.repeats)
    word_counts(args.repeats)
    adversarial_inputs(reward_func)


def realistic(reward_func, repeats: int) -> None:
    print("realistic responses: median per call (us), each beside its floor, called alternately")
    columns = f"{'ours':>8} {'floor':>8} {'ratio':>6}"
    print(f"{'':>21} {'grade_response vs pure floor':<28} reward file vs tensor floor")
    print(f"{'think words':>12} {'chars':>8} {columns}     {columns}")
    for sentences in (3, 15, 60, 240):
        response = f"<think>{SENTENCE * sentences}</think>\n<answer>C</answer><|endoftext|>"
        query = PROMPT + response
        rule, pure = paired_medians(grade_response, pure_floor, (query, PROMPT, "C"), repeats)
        ours, floor = paired_medians(reward_func, floor_reward, ([query], [PROMPT], ["C"]), repeats)
        words = len(SENTENCE.split()) * sentences
        print(
            f"{words:>12} {len(response):>8} {rule * 1e6:>8.1f} {pure * 1e6:>8.1f} {rule / pure:>6.2f}     "
            f"{ours * 1e6:>8.1f} {floor * 1e6:>8.1f} {ours / floor:>6.2f}"
        )


def truncated(reward_func, repeats: int) -> None:
    # The floor cannot find a truncated prompt, so ours is set beside its own time on the whole prompt.
    print("\nleft-truncated prompt (OpenRLHF keeps its last tokens), 255 think words: median per call (us)")
    response = f"<think>{SENTENCE * 15}</think>\n<answer>C</answer><|endoftext|>"
    for label, kept in (("whole prompt", len(PROMPT)), ("half survives", len(PROMPT) // 2), ("10 chars survive", 10)):
        ours = statistics.median(per_call_seconds(reward_func, PROMPT[-kept:] + response, repeats)) * 1e6
        print(f"{label:>24}: {ours:8.1f}")


def new_prompts(reward_func, repeats: int) -> None:
    # Training sends new questions every step: what is cached per prompt (its options) is paid once each.
    print("\na new prompt every call against one prompt throughout, 255 think words: median per call (us)")
    response = f"<think>{SENTENCE * 15}</think>\n<answer>C</answer><|endoftext|>"
    prompts = [PROMPT.replace("A 52-year-old", f"A {index}-year-old", 1) for index in range(repeats)]
    fresh = statistics.median(per_call_seconds(reward_func, prompt + response, 1, prompt)[0] for prompt in prompts)
    same = statistics.median(per_call_seconds(reward_func, PROMPT + response, repeats))
    print(f"{'new prompt':>24}: {fresh * 1e6:8.1f}   same prompt {same * 1e6:8.1f}   x{fresh / same:.2f}")


def adapters(reward_func, repeats: int) -> None:
    """verl's compute_score and TRL's reward function beside the reward file, on the same sample: each
    adapter grades once through the same core, so the ratio is its own overhead."""
    from med_rlvr_plugin.trl_reward import med_rlvr_reward
    from med_rlvr_plugin.verl_reward import compute_score

    print("\nadapters, 255 think words: median per call (us), beside the reward file called alternately")
    response = f"<think>{SENTENCE * 15}</think>\n<answer>C</answer>"
    calls = {
        "verl compute_score": lambda: compute_score("medqa", response, "C", {"prompt": PROMPT}),
        "TRL med_rlvr_reward": lambda: med_rlvr_reward([PROMPT], [response], label=["C"]),
    }
    for name, call in calls.items():
        ours, file = paired_medians(call, lambda: reward_func([PROMPT + response], [PROMPT], ["C"]), (), repeats)
        print(f"{name:>24}: {ours * 1e6:8.1f}   reward file {file * 1e6:8.1f}   x{ours / file:.2f}")


def sampling(reward_func, repeats: int) -> None:
    # Rollout sampling: a random draw per call, and for the drawn ones a JSON line appended under a lock.
    # The mean is what a step pays: a share of calls costs more, the rest nothing.
    print("\nrollout sampling, 255 think words: mean per call (us), and against sampling off in the same run")
    query = PROMPT + f"<think>{SENTENCE * 15}</think>\n<answer>C</answer><|endoftext|>"
    off = statistics.mean(per_call_seconds(reward_func, query, repeats)) * 1e6
    print(f"{'off':>24}: {off:8.1f}")
    with tempfile.TemporaryDirectory() as folder:
        for fraction in ("0.01", "0.1", "1"):
            sampled = load_reward_func({"MED_RLVR_ROLLOUT_SAMPLES": fraction, "MED_RLVR_ROLLOUT_DIR": folder})
            ours = statistics.mean(per_call_seconds(sampled, query, repeats)) * 1e6
            print(f"{'share ' + fraction:>24}: {ours:8.1f}   x{ours / off:.2f}")


def word_counts(repeats: int) -> None:
    print("\nword count of a thinking block: median per call (us), count_words beside str.split, called alternately")
    chinese = "患者下壁导联ST段抬高，提示下壁心肌梗死，右冠状动脉供应下壁，所以最可能闭塞的是右冠状动脉。" * 6
    spanish = (
        "La elevación del ST en II, III y aVF indica un infarto inferior, irrigado por la coronaria derecha. " * 15
    )
    for name, text in (("English, 255 words", SENTENCE * 15), ("Spanish", spanish), ("Chinese", chinese)):
        ours, split = paired_medians(count_words, lambda text: len(text.split()), (text,), repeats)
        print(f"{name:>24}: {ours * 1e6:8.2f} {split * 1e6:8.2f}   x{ours / split:.2f}   ({count_words(text)} words)")


def adversarial_inputs(reward_func) -> None:
    print("\nadversarial responses: ms per call at 1 MB (the fastest of 5), and time ratio for each doubling")
    print("128 KB -> 1 MB; grade_response alone (target 10 ms on an idle machine), then the reward file (50 ms)")
    sizes = [2**17, 2**18, 2**19, 2**20]
    for name in adversarial(1):
        queries = [PROMPT + adversarial(size)[name] for size in sizes]
        rule = [min(grade_seconds(query, 5)) for query in queries]
        ours = [min(per_call_seconds(reward_func, query, 5)) for query in queries]
        report(name, rule, ours)
    # A prompt is data, not policy output, but its option lines are parsed too, on the first call for that
    # prompt (then cached): time first calls, on prompts that differ (and differ between the two timed
    # functions, which share the cache), each with one long option line.
    rule, ours = [], []
    for size in sizes:
        prompts = [PROMPT.replace("\nA. ", f"\nA. {copy}" + " " * size + "x ", 1) for copy in range(6)]
        response = "<think>x</think><answer>C</answer>"
        rule.append(min(grade_seconds(prompt + response, 1, prompt)[0] for prompt in prompts[:3]))
        ours.append(min(per_call_seconds(reward_func, prompt + response, 1, prompt)[0] for prompt in prompts[3:]))
    report("spaces in an option line", rule, ours)


def report(name: str, rule: list[float], ours: list[float]) -> None:
    """One adversarial line: each time at the largest size and its ratio for each doubling before it."""
    columns = []
    for times, target in ((rule, 0.01), (ours, 0.05)):
        ratios = " ".join(f"{later / earlier:.2f}" for earlier, later in zip(times, times[1:], strict=False))
        over = " OVER" if times[-1] > target else ""
        columns.append(f"{times[-1] * 1e3:7.2f} ms{over} ({ratios})")
    print(f"{name:>24}: grade_response {columns[0]}   reward file {columns[1]}")


if __name__ == "__main__":
    main()
