"""The Med-RLVR reward as an HTTP service speaking OpenRLHF's remote reward protocol (docs/reuse.md).

    python -m med_rlvr_plugin.serve --host 127.0.0.1 --port 5000 [--workers N] [limits] [reward flags]
    ... --reward.remote_url http://HOST:5000/get_reward   (several comma-separated URLs: OpenRLHF rotates)

`POST /get_reward` takes `{"query": [...], "prompts": [...], "labels": [...]}` and answers what the reward
file's `reward_func` returns for those lists, so rewards, scores and `extra_logs` keys are the reward
file's by construction. A one-sample request, which is what OpenRLHF sends, gets plain numbers, exactly
as the reward file answers OpenRLHF in-process (OpenRLHF wraps the answer as `torch.tensor([rewards])`,
so a one-element list would add a dimension); longer requests get lists. `GET /health` reports the
configuration. A bad request gets a 4xx whose `detail` says what is wrong; each distinct detail is also
printed once on the worker's stderr, because OpenRLHF's client discards it.

The reward flags set the reward file's MED_RLVR_* variables (docs/verifier.md), which the worker
processes inherit; unset flags keep the variables of the environment, then the paper's defaults.
Workers are uvicorn processes sharing one socket under uvicorn's supervisor (also for one worker), so
grading uses that many cores and a dead worker is replaced; a worker whose supervisor dies stops itself.
Every resource a client controls is bounded by a flag: header size and time, body size and time, idle
kept-alive time, and at SIGTERM the time an unfinished upload keeps the server waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence

import h11
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from med_rlvr_plugin import openrlhf_reward
from med_rlvr_plugin.cli import fail, tool_parser
from med_rlvr_plugin.verifier import ENV_VARS, FORMATS, SCHEMES, config_from_env, parse_label

KEYS = ("query", "prompts", "labels")
# The limits reach the spawned workers through their environment, as the reward configuration does. Not
# a MED_RLVR_* name: that prefix belongs to the reward file's variables, which refuse others.
LIMITS_VARIABLE = "MEDRLVR_SERVE_LIMITS"
DEFAULT_LIMITS = {"max_body_mb": 16.0, "body_timeout": 30.0, "header_timeout": 10.0, "shutdown_timeout": 5.0}
# A body this small (OpenRLHF's one-sample requests are a few KB) is graded on the event loop; a larger
# one in a thread, so that one slow request cannot hold every other request of its worker.
INLINE_BYTES = 64 << 10
DISCARD_BYTES = 64 << 20
MAX_DETAIL_CHARS, MAX_LOGGED_DETAILS = 1000, 1000

_logged_details: set[str] = set()


@functools.cache
def limits() -> dict[str, float]:
    """This worker's limits: the flags `main` put in its environment, else the defaults."""
    return {**DEFAULT_LIMITS, **json.loads(os.environ.get(LIMITS_VARIABLE, "{}"))}


def max_body_bytes() -> int:
    return int(limits()["max_body_mb"] * (1 << 20))


@contextlib.asynccontextmanager
async def _lifespan(_app: FastAPI):
    # uvicorn's workers would serve on after a SIGKILL of their supervisor (the OOM killer's way), holding
    # the port with the old configuration: each worker stops itself, as on SIGTERM, once the supervisor's
    # process sentinel says it is gone. A lone process (`uvicorn.run` without workers) has no supervisor.
    supervisor = multiprocessing.parent_process()
    if supervisor is not None:
        threading.Thread(target=_stop_after, args=(supervisor,), daemon=True).start()
    yield


def _stop_after(process: multiprocessing.process.BaseProcess) -> None:
    process.join()
    os.kill(os.getpid(), signal.SIGTERM)


app = FastAPI(title="med-rlvr reward", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)


class Protocol(H11Protocol):
    """uvicorn's h11 protocol, whose parser caps the header size (`h11_max_incomplete_event_size`), plus the
    two read deadlines uvicorn lacks (it times out only idle kept-alive connections): a request's headers
    must arrive within the header timeout, and at shutdown an upload still arriving gets the shutdown
    timeout, then its connection is closed (the handler sees a disconnect)."""

    headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._await_headers()

    def _await_headers(self) -> None:
        # h11 keeps the client IDLE until a request's headers are complete; a silent new connection too.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self.headers_due is None:
            self.headers_due = self.loop.call_later(limits()["header_timeout"], self._close_if, h11.IDLE)
        elif not waiting and self.headers_due is not None:
            self.headers_due.cancel()
            self.headers_due = None

    def _close_if(self, state: type[h11.IDLE] | type[h11.SEND_BODY]) -> None:
        self.headers_due = None
        if self.conn.their_state is state and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        super().shutdown()  # closes idle connections and ones with incomplete headers
        if self.conn.their_state is h11.SEND_BODY:
            self.loop.call_later(limits()["shutdown_timeout"], self._close_if, h11.SEND_BODY)


@app.exception_handler(StarletteHTTPException)
async def _refuse(_request: Request, error: StarletteHTTPException) -> JSONResponse:
    """The 4xx answer, its detail printed once per worker: OpenRLHF's client logs only the status."""
    detail = str(error.detail)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail):,} characters)"
    detail = detail.encode("utf-8", "backslashreplace").decode()  # a lone surrogate from the client's JSON
    if detail not in _logged_details and len(_logged_details) < MAX_LOGGED_DETAILS:
        _logged_details.add(detail)
        print(f"med-rlvr reward server: {error.status_code} {detail}", file=sys.stderr, flush=True)
    return JSONResponse({"detail": detail}, error.status_code, headers=error.headers)


# The handlers grade through the reward file's `grade_sample`, which reads the MED_RLVR_* variables at its
# first use, in each worker: `main` sets them from the flags before the workers start.
@app.get("/health")
def health() -> dict:
    env = {name: value for name, value in sorted(os.environ.items()) if name in ENV_VARS}
    config = dataclasses.asdict(openrlhf_reward.settings()[0])
    return {"status": "ok", "config": config, "env": env, "limits": limits(), "pid": os.getpid()}


@app.post("/get_reward")
async def get_reward(request: Request) -> Response:
    try:
        body = await _read_body(request)
    except ClientDisconnect:  # gone, or dropped at shutdown: there is no one to answer
        return Response(status_code=400)
    if len(body) <= INLINE_BYTES:
        return JSONResponse(_grade(body))
    return JSONResponse(await run_in_threadpool(_grade, body))


async def _read_body(request: Request) -> bytearray:
    """The body, within the size and time limits. A body over the size limit is read and discarded up to
    DISCARD_BYTES past the limit before the 413, so that a client that sends it all before reading (urllib)
    gets the answer, not a connection reset; a larger one is refused as soon as it is known to be."""
    limit, seconds = max_body_bytes(), limits()["body_timeout"]
    declared, size, body = int(request.headers.get("content-length") or 0), 0, bytearray()
    try:
        async with asyncio.timeout(seconds):
            if declared <= limit + DISCARD_BYTES:
                async for chunk in request.stream():  # counted as it arrives: a client may send no length
                    size += len(chunk)
                    if size <= limit:
                        body += chunk
                    elif size > limit + DISCARD_BYTES:
                        break
    except TimeoutError:
        detail = f"the body did not arrive within {seconds:g} s (--body-timeout)"
        raise HTTPException(408, detail, headers={"Connection": "close"}) from None
    if max(size, declared) > limit:
        detail = (
            f"the body is over the server's limit of {limit:,} bytes: send fewer samples per request, or start "
            "the server with a larger --max-body-mb"
        )
        raise HTTPException(413, detail, headers={"Connection": "close"})
    return body


def _grade(body: bytearray) -> dict:
    """The reward file's answer to a request body, or an HTTPException saying what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise HTTPException(400, f"the body is not JSON: {error}") from None
    except RecursionError:
        raise HTTPException(400, "the body is not JSON this server reads: it is nested too deeply") from None
    if not isinstance(data, dict) or any(key not in data for key in KEYS):
        found = type(data).__name__
        if isinstance(data, dict):
            more = f" and {len(data) - 10:,} more" if len(data) > 10 else ""
            found = f"an object with keys {', '.join(list(data)[:10])}{more}"
        raise HTTPException(400, f"expected a JSON object with the lists {', '.join(KEYS)}; got {found}")
    for key in KEYS:
        if not isinstance(data[key], list):
            raise HTTPException(400, f"{key} must be a list, got {type(data[key]).__name__}")
    if len({len(data[key]) for key in KEYS}) > 1:
        lengths = ", ".join(f"{key} {len(data[key])}" for key in KEYS)
        raise HTTPException(400, f"the lists must have one entry per sample; their lengths are {lengths}")
    for key, types in (("query", str), ("prompts", str), ("labels", (str, int))):
        for index, item in enumerate(data[key]):
            if not isinstance(item, types):  # a nested label would reach the error's repr below
                raise HTTPException(400, f"{key}[{index}] must be a string, got {type(item).__name__}")
    for index, label in enumerate(data["labels"]):
        try:
            parse_label(label)
        except ValueError as error:
            raise HTTPException(400, f"labels[{index}]: {error}") from None
    return openrlhf_reward.reward_func(data["query"], data["prompts"], data["labels"])


def start(host: str = "127.0.0.1", args: Sequence[str] = (), timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start the server in a child process on a free port of `host`; return it and its /get_reward URL once
    /health answers. The child inherits this process's MED_RLVR_* variables and exits when this process
    does, however it ends (`--parent-pid`); `process.terminate()` stops it sooner. A host that is not a
    loopback address needs `--allow-remote` in `args`. RuntimeError when it exits or does not answer within
    `timeout` seconds (its own messages are on this process's stderr).
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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0 (and not inf or nan), got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _parser():
    parser = tool_parser("serve", prog="python -m med_rlvr_plugin.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a --host that is not loopback")
    parser.add_argument("--port", type=_port, default=5000)
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes (default: cores, at most 4)"
    )
    parser.add_argument("--parent-pid", type=int, help="exit when process PID, the parent, exits (the launcher's)")
    bounds = parser.add_argument_group("limits (docs/reuse.md)")
    for flag, help_text in (
        ("--max-body-mb", "larger request bodies get 413"),
        ("--body-timeout", "seconds for a request's body to arrive once its headers have, else 408"),
        ("--header-timeout", "seconds for a request's headers to arrive, else the connection is closed"),
        ("--shutdown-timeout", "seconds an upload still arriving at SIGTERM may take before it is dropped"),
    ):
        name = flag[2:].replace("-", "_")
        bounds.add_argument(flag, type=_positive, default=DEFAULT_LIMITS[name], help=f"{help_text} (%(default)g)")
    bounds.add_argument("--max-header-kb", type=_positive, default=16, help="larger request headers get 400 (16)")
    bounds.add_argument(
        "--keep-alive-timeout", type=_positive, default=5, help="seconds an idle connection is kept (5)"
    )
    reward = parser.add_argument_group("reward (the reward file's MED_RLVR_* variables, docs/verifier.md)")
    reward.add_argument("--reward-scheme", dest="MED_RLVR_REWARD_SCHEME", choices=SCHEMES)
    reward.add_argument("--format", dest="MED_RLVR_FORMAT", choices=FORMATS)
    reward.add_argument("--leak-penalty", dest="MED_RLVR_LEAK_PENALTY", metavar="X")
    reward.add_argument("--min-think-words", dest="MED_RLVR_MIN_THINK_WORDS", metavar="N")
    reward.add_argument("--short-think-penalty", dest="MED_RLVR_SHORT_THINK_PENALTY", metavar="X")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not is_loopback(args.host) and not args.allow_remote:
        parser.error(
            f"--host {args.host} is not a loopback address and the service has no authentication: pass "
            "--allow-remote, and keep the port inside the cluster's network (docs/reuse.md)"
        )
    os.environ.update({name: value for name, value in vars(args).items() if name in ENV_VARS and value is not None})
    os.environ[LIMITS_VARIABLE] = json.dumps({name: getattr(args, name) for name in DEFAULT_LIMITS})
    try:
        config = config_from_env(os.environ)  # here, so that a bad value stops the server before any worker starts
    except ValueError as error:
        parser.error(str(error))
    if args.parent_pid is not None:
        if os.getppid() != args.parent_pid:  # the parent is already gone
            return 1
        threading.Thread(target=_exit_with, args=(args.parent_pid,), daemon=True).start()
    return _run(args, config)


def _run(args, config) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    url = f"http://{args.host}:{args.port}/get_reward"
    print(f"med-rlvr reward server: {url}, {args.workers} workers, {config}", file=sys.stderr, flush=True)
    if not is_loopback(args.host):
        print(f"med-rlvr reward server: WARNING: {url} has no authentication", file=sys.stderr, flush=True)
    # One access-log line per sample would flood the log: OpenRLHF sends a request per sample. The
    # graceful timeout bounds the requests being graded; unfinished uploads go after --shutdown-timeout.
    server = uvicorn.Config(
        "med_rlvr_plugin.serve:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        http="med_rlvr_plugin.serve:Protocol",
        h11_max_incomplete_event_size=int(args.max_header_kb * 1024),
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=60,
        access_log=False,
        log_level="warning",
    )
    # uvicorn's supervisor for one worker too (`uvicorn.run` would serve in this process): a crashed worker
    # is replaced, and SIGTERM exits 0 (a lone uvicorn server re-raises the signal, exiting with 143).
    try:
        sockets = [server.bind_socket()]
    except SystemExit:  # uvicorn has logged why: the address is in use, or not this machine's
        return fail("serve", f"cannot listen on {args.host}:{args.port} (uvicorn's message above)")
    supervisor = Multiprocess(server, sockets=sockets)
    supervisor.run()
    return 1 if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes) else 0


if __name__ == "__main__":
    sys.exit(main())
