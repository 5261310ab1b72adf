"""The Med-RLVR reward for OpenRLHF 0.11.2: `--reward.remote_url med_rlvr_plugin/openrlhf_reward.py`.

OpenRLHF loads this file by path in every rollout actor and calls `reward_func([query], [prompt], [label])`
once per generated sample, from a thread pool. The configuration comes from environment variables read
once, when the file is loaded (docs/verifier.md, "Reward configuration"):

    MED_RLVR_REWARD_SCHEME        neutral (default, the paper's) | penalized (wrong answers earn -1)
    MED_RLVR_FORMAT               lenient (default, the paper's) | strict (nothing may precede <think>)
    MED_RLVR_LEAK_PENALTY         float >= 0, default 0 (off): subtracted when <think> merely states the answer
    MED_RLVR_MIN_THINK_WORDS      int >= 0, default 0 (off): shorter thinking blocks lose ...
    MED_RLVR_SHORT_THINK_PENALTY  float >= 0, default 1.0: ... this much

Rollout sampling (docs/dynamics.md, "Rollout samples"), off by default:

    MED_RLVR_ROLLOUT_SAMPLES      share of calls recorded, 0 to 1 (launch flag --rollout-samples)
    MED_RLVR_ROLLOUT_DIR          absolute folder; each process appends to rollouts-HOST-PID.jsonl there
    MED_RLVR_ROLLOUT_MAX_MB       per-process file cap in MiB (default 256)

A bad value fails the load with a message listing the valid ones. Under `ray job submit`, set them as the
job's runtime-env `env_vars` (the launch scripts do): a variable the entrypoint merely exports does not
reach the rollout actors.
"""

import errno
import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path

try:
    from med_rlvr_plugin.dynamics import behaviour, response_logs, rollout_sampling
    from med_rlvr_plugin.verifier import config_from_env, grade_response
except ImportError:
    # Loaded by path from a checkout that is neither installed nor a Ray job's working_dir (which is on
    # PYTHONPATH): the package is the folder this file sits in.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from med_rlvr_plugin.dynamics import behaviour, response_logs, rollout_sampling
    from med_rlvr_plugin.verifier import config_from_env, grade_response

CONFIG = config_from_env(os.environ)
SAMPLING = rollout_sampling(os.environ)
print(f"med-rlvr reward: {CONFIG}" + (f", {SAMPLING}" if SAMPLING.fraction else ""), file=sys.stderr, flush=True)
_reported = set()  # messages already printed once in this process (set.add is atomic under the GIL)
# Rollout sampling: its own generator (OpenRLHF seeds the global one alike in every actor), and this
# process's file, opened on the first record, written under the lock, closed for good on any OSError.
_draw = random.Random()
_lock = threading.Lock()
_sink = {"fd": None, "bytes": 0, "stopped": False}


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        print(message, file=sys.stderr, flush=True)


def grade_sample(query: str, prompt: str, label: object) -> tuple[float, float, dict[str, float]]:
    """(reward, score, extra_logs) of one sample; records it when rollout sampling draws it.

    The one place a sample is graded, for this file and anything serving the same reward. `score` is
    1.0 for a well-formed correct response, else 0.0 (OpenRLHF's dynamic filtering reads it). The logs
    (`dynamics.response_logs`) have the same keys on every sample.
    A label naming no option letter is a configuration error: it is printed to stderr, because OpenRLHF
    logs a reward function's exceptions only at INFO level, and raised.
    """
    try:
        grade = grade_response(query, prompt, label, CONFIG)
    except ValueError as error:
        _report_once(str(error))
        raise
    if not grade.prompt_found:
        _report_once(
            "med-rlvr: the prompt was not found at the start of the query (the tokenizer's decode does not "
            "reproduce it); the response is taken to follow the prompt's last line. Watch train/prompt_not_found."
        )
    kind = behaviour(grade, prompt)
    if SAMPLING.fraction and _draw.random() < SAMPLING.fraction:
        # vars(), not dataclasses.asdict: the fields are flat, and asdict's deep copy costs 30 times more.
        # ASCII JSON encodes any string, even a lone surrogate, so a record can never raise here.
        record = {
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "prompt": prompt,
            "label": label,
            "behaviour": kind,
            **vars(grade),
        }
        _append((json.dumps(record, default=str) + "\n").encode())
    return grade.reward, float(grade.correct), response_logs(grade, kind)


def _append(line: bytes) -> None:
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
                os.makedirs(SAMPLING.folder, exist_ok=True)
                path = os.path.join(SAMPLING.folder, f"rollouts-{socket.gethostname()}-{os.getpid()}.jsonl")
                _sink["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _sink["bytes"] = os.fstat(_sink["fd"]).st_size
            if _sink["bytes"] + len(line) > SAMPLING.max_bytes:
                raise OSError(errno.EFBIG, f"the file reached MED_RLVR_ROLLOUT_MAX_MB ({SAMPLING.max_bytes} bytes)")
            written = os.write(_sink["fd"], line)
            if written < len(line):
                os.ftruncate(_sink["fd"], _sink["bytes"])
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(line)} bytes (disk full?)")
            _sink["bytes"] += written
        except OSError as error:
            _sink["stopped"] = True
            _report_once(f"med-rlvr: rollout sampling stops in process {os.getpid()} (training goes on): {error}")


def reward_func(queries: list[str], prompts: list[str], labels: list, **kwargs) -> dict:
    """Rewards for OpenRLHF samples: a float per sample (the float itself for OpenRLHF's batch of one).

    Each sample is graded by `grade_sample`, which says what `scores` and `extra_logs` hold.
    """
    rewards, scores, logs = [], [], {}
    for query, prompt, label in zip(queries, prompts, labels, strict=True):
        reward, correct, sample_logs = grade_sample(query, prompt, label)
        rewards.append(reward)
        scores.append(correct)
        for key, value in sample_logs.items():
            logs.setdefault(key, []).append(value)
    if len(rewards) == 1:
        return {
            "rewards": rewards[0],
            "scores": scores[0],
            "extra_logs": {key: values[0] for key, values in logs.items()},
        }
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}
