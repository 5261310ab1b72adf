"""The Med-RLVR reward as an HTTP service speaking OpenRLHF's remote reward protocol (docs/reuse.md).

    python -m med_rlvr_plugin.serve --host 127.0.0.1 --port 5000 [--workers N] [reward flags]
    ... --reward.remote_url http://HOST:5000/get_reward   (several comma-separated URLs: OpenRLHF rotates)

`POST /get_reward` takes `{"query": [...], "prompts": [...], "labels": [...]}` and answers what the reward
file's `reward_func` returns for those lists, so rewards, scores and `extra_logs` keys are the reward
file's by construction. A one-sample request, which is what OpenRLHF sends, gets plain numbers, exactly
as the reward file answers OpenRLHF in-process (OpenRLHF wraps the answer as `torch.tensor([rewards])`,
so a one-element list would add a dimension); longer requests get lists. `GET /health` reports the
configuration. A bad request gets a 4xx whose `detail` says what is wrong.

The reward flags set the reward file's MED_RLVR_* variables (docs/verifier.md), which the worker
processes inherit; unset flags keep the variables of the environment, then the paper's defaults.
Workers are uvicorn processes sharing one socket, so grading uses that many cores. SIGTERM stops the
server after the requests in flight are answered.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from med_rlvr_plugin import openrlhf_reward
from med_rlvr_plugin.cli import tool_parser
from med_rlvr_plugin.verifier import ENV_VARS, FORMATS, SCHEMES, config_from_env, parse_label

KEYS = ("query", "prompts", "labels")
# The body limit reaches the spawned workers through their environment, as the reward configuration
# does. Not a MED_RLVR_* name: that prefix belongs to the reward file's variables, which refuse others.
MAX_BODY_VARIABLE = "MEDRLVR_SERVE_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_MB = 16  # OpenRLHF's one-sample requests are a few KB; batches of thousands fit

app = FastAPI(title="med-rlvr reward", docs_url=None, redoc_url=None, openapi_url=None)


def _max_body_bytes() -> int:
    return int(os.environ.get(MAX_BODY_VARIABLE, DEFAULT_MAX_BODY_MB << 20))


# The handlers grade through the reward file's `grade_sample`, which reads the MED_RLVR_* variables at its
# first use, in each worker: `main` sets them from the flags before the workers start.
@app.get("/health")
def health() -> dict:
    env = {name: value for name, value in sorted(os.environ.items()) if name in ENV_VARS}
    return {
        "status": "ok",
        "config": dataclasses.asdict(openrlhf_reward.settings()[0]),
        "env": env,
        "max_body_bytes": _max_body_bytes(),
        "pid": os.getpid(),
    }


@app.post("/get_reward")
async def get_reward(request: Request) -> JSONResponse:
    limit = _max_body_bytes()
    too_large = HTTPException(
        413,
        f"the body is over the server's limit of {limit:,} bytes: send fewer samples "
        "per request, or start the server with a larger --max-body-mb",
    )
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a client may send no content-length
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        data = json.loads(body)
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise HTTPException(400, f"the body is not JSON: {error}") from None
    if not isinstance(data, dict) or any(key not in data for key in KEYS):
        found = f"an object with keys {', '.join(map(str, data))}" if isinstance(data, dict) else type(data).__name__
        raise HTTPException(400, f"expected a JSON object with the lists {', '.join(KEYS)}; got {found}")
    for key in KEYS:
        if not isinstance(data[key], list):
            raise HTTPException(400, f"{key} must be a list, got {type(data[key]).__name__}")
    if len({len(data[key]) for key in KEYS}) > 1:
        lengths = ", ".join(f"{key} {len(data[key])}" for key in KEYS)
        raise HTTPException(400, f"the lists must have one entry per sample; their lengths are {lengths}")
    for key in ("query", "prompts"):
        for index, item in enumerate(data[key]):
            if not isinstance(item, str):
                raise HTTPException(400, f"{key}[{index}] must be a string, got {type(item).__name__}")
    for index, label in enumerate(data["labels"]):
        try:
            parse_label(label)
        except ValueError as error:
            raise HTTPException(400, f"labels[{index}]: {error}") from None
    # Grading runs on the event loop: it holds the GIL either way, and the other workers take the
    # other requests meanwhile (about 30 us a sample, docs/verifier.md "Speed").
    return JSONResponse(openrlhf_reward.reward_func(data["query"], data["prompts"], data["labels"]))


def start(host: str = "127.0.0.1", args: Sequence[str] = (), timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start the server in a child process on a free port of `host`; return it and its /get_reward URL once
    /health answers. The child inherits this process's MED_RLVR_* variables and exits when this process
    does, however it ends (`--parent-pid`); `process.terminate()` stops it sooner. RuntimeError when it
    exits or does not answer within `timeout` seconds (its own messages are on this process's stderr).
    """
    with socket.socket() as probe:  # the port could be taken again before the server binds: it then exits
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "med_rlvr_plugin.serve",
        "--host",
        host,
        "--port",
        str(port),
        "--parent-pid",
        str(os.getpid()),
        *args,
    ]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2):
                return process, f"http://{host}:{port}/get_reward"
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the reward server exited with code {process.returncode} ({' '.join(command)}); "
                    "its messages are above"
                ) from None
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"the reward server did not answer within {timeout:.0f} s ({' '.join(command)})"
                ) from None
            time.sleep(0.2)


def _exit_with(parent: int) -> None:
    """SIGTERM this process (a graceful stop) once `parent` is no longer its parent. Polling works on
    every OS, and catches a parent killed with SIGKILL, which runs no cleanup of its own."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("serve", prog="python -m med_rlvr_plugin.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes (default: cores, at most 4)"
    )
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB, help="larger request bodies get 413")
    parser.add_argument("--parent-pid", type=int, help="exit when process PID, the parent, exits (the launcher's)")
    reward = parser.add_argument_group("reward (the reward file's MED_RLVR_* variables, docs/verifier.md)")
    reward.add_argument("--reward-scheme", dest="MED_RLVR_REWARD_SCHEME", choices=SCHEMES)
    reward.add_argument("--format", dest="MED_RLVR_FORMAT", choices=FORMATS)
    reward.add_argument("--leak-penalty", dest="MED_RLVR_LEAK_PENALTY", metavar="X")
    reward.add_argument("--min-think-words", dest="MED_RLVR_MIN_THINK_WORDS", metavar="N")
    reward.add_argument("--short-think-penalty", dest="MED_RLVR_SHORT_THINK_PENALTY", metavar="X")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.max_body_mb <= 0:
        parser.error("--workers must be at least 1 and --max-body-mb above 0")
    os.environ.update({name: value for name, value in vars(args).items() if name in ENV_VARS and value is not None})
    os.environ[MAX_BODY_VARIABLE] = str(int(args.max_body_mb * (1 << 20)))
    try:
        config = config_from_env(os.environ)  # here, so that a bad value stops the server before any worker starts
    except ValueError as error:
        parser.error(str(error))
    if args.parent_pid is not None:
        if os.getppid() != args.parent_pid:  # the parent is already gone
            return 1
        threading.Thread(target=_exit_with, args=(args.parent_pid,), daemon=True).start()

    import uvicorn

    print(
        f"med-rlvr reward server: http://{args.host}:{args.port}/get_reward, {args.workers} workers, {config}",
        file=sys.stderr,
        flush=True,
    )
    # One access-log line per sample would flood the log: OpenRLHF sends a request per sample.
    uvicorn.run(
        "med_rlvr_plugin.serve:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=60,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
