"""The Med-RLVR reward for OpenRLHF 0.11.2: `--reward.remote_url med_rlvr_plugin/openrlhf_reward.py`.

OpenRLHF loads this file by path in every rollout actor and calls `reward_func([query], [prompt], [label])`
once per generated sample, from a thread pool. The configuration comes from environment variables
(docs/verifier.md, "Reward configuration", has the table):

    MED_RLVR_REWARD_SCHEME        neutral (default, the paper's) | penalized (wrong answers earn -1)
    MED_RLVR_FORMAT               lenient (default, the paper's) | strict (nothing may precede <think>)
    MED_RLVR_LEAK_PENALTY         float >= 0, default 0 (off): subtracted when <think> merely states the answer
    MED_RLVR_MIN_THINK_WORDS      int >= 0, default 0 (off): shorter thinking blocks lose ...
    MED_RLVR_SHORT_THINK_PENALTY  float >= 0, default 1.0: ... this much

Rollout sampling (docs/dynamics.md, "Rollout samples"), off by default:

    MED_RLVR_ROLLOUT_SAMPLES      share of calls recorded, 0 to 1 (launch flag --rollout-samples)
    MED_RLVR_ROLLOUT_DIR          absolute folder; each process appends to rollouts-HOST-PID.jsonl there
    MED_RLVR_ROLLOUT_MAX_MB       per-process file cap in MiB (default 256)

The variables are read once per process, at the first graded sample, or when OpenRLHF loads this file by
path: a bad value then fails the load with a message listing the valid ones, where OpenRLHF shows it (it
logs a reward function's exceptions only at INFO level). Imported as a module (`serve`, `verl_reward` and
`trl_reward` grade through `grade_sample`), it neither prints nor raises until its first use. Under
`ray job submit`, set them as the job's runtime-env `env_vars` (the launch scripts do): a variable the
entrypoint merely exports does not reach the rollout actors.
"""

import contextlib
import errno
import functools
import itertools
import json
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    from med_rlvr_plugin.defaults import ROLLOUT_MAX_MB
    from med_rlvr_plugin.reward import Score, openrlhf_result, score_sample
    from med_rlvr_plugin.verifier import ROLLOUT_ENV_VARS, RewardConfig, config_from_env
except ImportError:
    # Loaded by path from a checkout that is neither installed nor a Ray job's working_dir (which is on
    # PYTHONPATH): the package is the folder this file sits in.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from med_rlvr_plugin.defaults import ROLLOUT_MAX_MB
    from med_rlvr_plugin.reward import Score, openrlhf_result, score_sample
    from med_rlvr_plugin.verifier import ROLLOUT_ENV_VARS, RewardConfig, config_from_env


@dataclass(frozen=True)
class RolloutSampling:
    """Where and how much of the graded rollouts this file records (docs/dynamics.md, "Rollout samples").

    fraction: the share of calls recorded, each drawn at random; 0 turns sampling off.
    folder: absolute; each process appends to its own `rollouts-HOST-PID.jsonl` there.
    max_bytes: a process stops recording (and says so once) when its file would grow past this.
    """

    fraction: float = 0.0
    folder: str | None = None
    max_bytes: int = ROLLOUT_MAX_MB * 2**20


def rollout_sampling(environ: Mapping[str, str]) -> RolloutSampling:
    """The rollout-sampling settings an environment describes; ValueError naming the variable that is wrong."""
    fraction_name, folder_name, cap_name = ROLLOUT_ENV_VARS
    try:
        fraction = float(environ.get(fraction_name, "0"))
        if not 0 <= fraction <= 1:
            raise ValueError("must be between 0 and 1")
    except ValueError as error:
        raise ValueError(f"{fraction_name}={environ[fraction_name]!r}: {error}") from None
    try:
        max_mb = float(environ.get(cap_name, ROLLOUT_MAX_MB))
        if not max_mb > 0:
            raise ValueError("must be above 0")
    except ValueError as error:
        raise ValueError(f"{cap_name}={environ[cap_name]!r}: {error}") from None
    folder = environ.get(folder_name)
    if fraction > 0 and not (folder and os.path.isabs(folder)):
        raise ValueError(
            f"{fraction_name}={environ[fraction_name]!r} needs {folder_name}, an absolute folder (a relative one "
            f"would land in each Ray actor's temporary working_dir copy); got {folder!r}"
        )
    return RolloutSampling(fraction, folder if fraction > 0 else None, int(max_mb * 2**20))


@functools.cache
def settings() -> tuple[RewardConfig, RolloutSampling]:
    """This process's reward configuration and rollout sampling, from its MED_RLVR_* variables, read and
    printed once (a bad value raises ValueError naming the variable, at every call)."""
    config, sampling = config_from_env(os.environ), rollout_sampling(os.environ)
    print(f"med-rlvr reward: {config}" + (f", {sampling}" if sampling.fraction else ""), file=sys.stderr, flush=True)
    return config, sampling


_reported = set()  # messages already printed once in this process (set.add is atomic under the GIL)
# Rollout sampling: its own generator (OpenRLHF seeds the global one alike in every actor), and this
# process's file, opened on the first record, written under the lock, closed for good on any OSError.
# Each line carries the process's count of graded samples: OpenRLHF tells the reward function no step,
# and a process grades about as many samples each step, which recovers the step (docs/dynamics.md).
_draw = random.Random()
_calls = itertools.count(1)  # next() on a count is atomic under the GIL
_lock = threading.Lock()
_sink = {"fd": None, "bytes": 0, "stopped": False}


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        print(message, file=sys.stderr, flush=True)


def grade_sample(query: str, prompt: str, label: object) -> Score:
    """Score one sample under this process's configuration; record it when rollout sampling draws it.

    The one place a sample is graded for a trainer, for this file and everything serving the same reward.
    A label naming no option letter is a configuration error: it is printed to stderr once, because
    OpenRLHF logs a reward function's exceptions only at INFO level, and raised.
    """
    config, sampling = settings()
    call = next(_calls)
    try:
        score = score_sample(query, prompt, label, config)
    except ValueError as error:
        _report_once(str(error))
        raise
    if not score.grade.prompt_found:
        _report_once(
            "med-rlvr: the prompt was not found at the start of the query (the tokenizer's decode does not "
            "reproduce it); the response is taken to follow the prompt's last line. Watch train/prompt_not_found."
        )
    if sampling.fraction and _draw.random() < sampling.fraction:
        # vars(), not dataclasses.asdict: the fields are flat, and asdict's deep copy costs 30 times more.
        # ASCII JSON encodes any string, even a lone surrogate, so a record can never raise here.
        record = {"time": time.time(), "call": call, "host": socket.gethostname(), "pid": os.getpid(),
                  "prompt": prompt, "label": label, "behaviour": score.behaviour, **vars(score.grade)}  # fmt: skip
        _append((json.dumps(record, default=str) + "\n").encode(), sampling)
    return score


def _append(line: bytes, sampling: RolloutSampling) -> None:
    """Append one whole line to this process's sample file, or stop sampling here, saying why once.

    One os.write of the whole line on an O_APPEND descriptor, under the lock: lines never interleave.
    A short write (a full disk) is cut back off, so the file only ever holds whole lines. Training must
    not notice: every OSError ends sampling in this process with one message on stderr.
    """
    with _lock:
        if _sink["stopped"]:
            return
        try:
            if _sink["fd"] is None:
                os.makedirs(sampling.folder, exist_ok=True)
                path = os.path.join(sampling.folder, f"rollouts-{socket.gethostname()}-{os.getpid()}.jsonl")
                _sink["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _sink["bytes"] = os.fstat(_sink["fd"]).st_size
            if _sink["bytes"] + len(line) > sampling.max_bytes:
                raise OSError(errno.EFBIG, f"the file reached MED_RLVR_ROLLOUT_MAX_MB ({sampling.max_bytes} bytes)")
            written = os.write(_sink["fd"], line)
            if written < len(line):
                os.ftruncate(_sink["fd"], _sink["bytes"])
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(line)} bytes (disk full?)")
            _sink["bytes"] += written
        except OSError as error:
            _sink["stopped"] = True
            if _sink["fd"] is not None:
                with contextlib.suppress(OSError):  # the stop is already decided; a failing close changes nothing
                    os.close(_sink["fd"])
                _sink["fd"] = None
            _report_once(f"med-rlvr: rollout sampling stops in process {os.getpid()} (training goes on): {error}")


def reward_func(queries: list[str], prompts: list[str], labels: list, **kwargs) -> dict:
    """Rewards for OpenRLHF samples, each scored by `grade_sample`; `reward.openrlhf_result` says what the
    answer holds (plain numbers for OpenRLHF's batch of one)."""
    return openrlhf_result(
        [grade_sample(query, prompt, label) for query, prompt, label in zip(queries, prompts, labels, strict=True)]
    )


if __name__ != "med_rlvr_plugin.openrlhf_reward":
    # Loaded by path, as OpenRLHF's loader does: read the configuration now, so that a bad value fails the
    # load, which OpenRLHF reports, instead of every sample, which it logs only at INFO level.
    settings()
