"""The reward server for real: `python -m med_rlvr_plugin.serve` on 127.0.0.1 with its uvicorn workers,
called by OpenRLHF 0.11.2's own executor and HTTP client, and by raw HTTP for what a client may get wrong."""

import ast
import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import psutil
import pytest

from med_rlvr_plugin import launcher, serve
from med_rlvr_plugin.prompts import render_prompt
from tests.conftest import free_port, ray_cli
from tests.test_launch_ray import TINY_RUN, write_rows
from tests.test_openrlhf_reward import QUESTIONS, REWARD_FILE, CannedEngine, responses_for
from tests.tokenizer_fixtures import qwen25_tokenizer

pytestmark = pytest.mark.integration  # a server in a subprocess in every test

openrlhf_agent = pytest.importorskip("openrlhf.utils.agent", reason="openrlhf 0.11.2 is not installed")

REPO = Path(__file__).resolve().parents[1]
# Non-default settings, so that a server that ignored its flags would grade differently.
REWARD_ENV = {"MED_RLVR_REWARD_SCHEME": "penalized", "MED_RLVR_LEAK_PENALTY": "0.5"}
REWARD_FLAGS = ["--reward-scheme", "penalized", "--leak-penalty", "0.5"]
MAX_BODY_BYTES = 1 << 18


def samples() -> list[tuple[str, str, str]]:
    """(prompt, label, response) covering each verdict, a leak among them, for both questions."""
    cases = []
    for question, options, gold in QUESTIONS:
        prompt = render_prompt(question, options)
        responses = [response for response, *_ in responses_for(gold, "C")]
        responses.append(f" <think>{gold}. {options['ABCDE'.index(gold)]}</think> <answer>{gold}</answer>")
        cases += [(prompt, gold, response + "<|endoftext|>") for response in responses]
    return cases


def workers(server: subprocess.Popen) -> list[psutil.Process]:
    """uvicorn's worker processes (multiprocessing's resource tracker is a child too)."""
    return [child for child in psutil.Process(server.pid).children() if "spawn_main" in " ".join(child.cmdline())]


def post(url: str, body: bytes, chunked: bool = False) -> tuple[int, dict]:
    """(status, JSON answer) of one POST; `chunked` sends no content-length."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, iter([body]) if chunked else body, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def health(url: str) -> dict:
    with urllib.request.urlopen(url.replace("/get_reward", "/health"), timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server():
    """One server for the module: two workers, the non-default reward flags, a 256 KB body limit."""
    process, url = serve.start(
        args=["--workers", "2", "--max-body-mb", str(MAX_BODY_BYTES / (1 << 20)), *REWARD_FLAGS]
    )
    yield process, url
    process.terminate()
    assert process.wait(timeout=60) == 0


def run_executor(remote_url, cases):
    """OpenRLHF's SingleTurnAgentExecutor on each (prompt, label, response), concurrently, as in a rollout."""
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=remote_url)
    tokenizer = qwen25_tokenizer()
    params = SimpleNamespace(max_tokens=256, logprobs=None)

    async def run_all():
        return await asyncio.gather(
            *(
                executor.execute(
                    prompt,
                    label,
                    params,
                    4096,
                    tokenizer,
                    CannedEngine(tokenizer, response.removesuffix("<|endoftext|>")),
                )
                for prompt, label, response in cases
            )
        )

    return asyncio.run(run_all())


def test_openrlhf_gets_from_the_server_what_it_gets_from_the_reward_file(server, monkeypatch):
    _, url = server
    cases = samples() * 5
    served = run_executor([url, url], cases)  # two URLs: OpenRLHF rotates over them
    for name, value in REWARD_ENV.items():
        monkeypatch.setenv(name, value)
    in_process = run_executor(REWARD_FILE, cases)
    keys = ("reward", "scores", "extra_logs", "observation_tokens")
    assert [{key: out[key] for key in keys} for out in served] == [
        {key: out[key] for key in keys} for out in in_process
    ]
    # The configuration reached the workers: penalized (a wrong answer earns -1) with a 0.5 leak penalty.
    rewards = [out["reward"] for out in served[:6]]
    assert rewards == [1.0, 1.0, -1.0, -1.0, -1.0, 0.5]
    assert all(isinstance(out["reward"], float) for out in served)  # a number, as from the file: never [x]


def test_a_batch_gets_lists_equal_to_one_request_per_sample(server):
    _, url = server
    cases = samples()
    batch = {
        "query": [p + r for p, _, r in cases],
        "prompts": [p for p, _, _ in cases],
        "labels": [label for _, label, _ in cases],
    }
    status, answer = post(url, json.dumps(batch).encode())
    assert status == 200
    singles = [
        post(url, json.dumps({key: [values[i]] for key, values in batch.items()}).encode())[1]
        for i in range(len(cases))
    ]
    assert answer["rewards"] == [single["rewards"] for single in singles]
    assert answer["scores"] == [single["scores"] for single in singles]
    assert answer["extra_logs"] == {
        key: [single["extra_logs"][key] for single in singles] for key in singles[0]["extra_logs"]
    }
    assert answer["rewards"][:6] == [1.0, 1.0, -1.0, -1.0, -1.0, 0.5]


GOOD = {
    "query": ["User: q\nA. x\nB. y\nAssistant: <think>y</think><answer>B</answer>"],
    "prompts": ["User: q\nA. x\nB. y\nAssistant:"],
    "labels": ["B"],
}


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"\xff\xfe{}", 400, "the body is not JSON"),
        (b"[1, 2]", 400, "expected a JSON object with the lists query, prompts, labels; got list"),
        (json.dumps({"query": [], "prompts": []}).encode(), 400, "got an object with keys query, prompts"),
        (json.dumps({**GOOD, "query": GOOD["query"][0]}).encode(), 400, "query must be a list, got str"),
        (
            json.dumps({**GOOD, "query": GOOD["query"] * 2}).encode(),
            400,
            "their lengths are query 2, prompts 1, labels 1",
        ),
        (json.dumps({**GOOD, "prompts": [None]}).encode(), 400, "prompts[0] must be a string, got NoneType"),
        (json.dumps({**GOOD, "labels": [""]}).encode(), 400, "labels[0]: med-rlvr: label '' names no option letter"),
        (json.dumps({**GOOD, "labels": [2]}).encode(), 400, "labels[0]: med-rlvr: label 2 names no option letter"),
        (b" " * (MAX_BODY_BYTES + 1), 413, f"over the server's limit of {MAX_BODY_BYTES:,} bytes"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "the body is not JSON this server reads: it is nested too deeply"),
        (json.dumps({**GOOD, "labels": [[[[["B"]]]]]}).encode(), 400, "labels[0] must be a string, got list"),
        (
            json.dumps({**GOOD, "labels": [json.loads("[" * 900 + "]" * 900)]}).encode(),
            400,
            "labels[0] must be a string, got list",
        ),
        (b'{"\\ud800": 1}', 400, "got an object with keys \\ud800"),
        (json.dumps({str(i): 0 for i in range(50)}).encode(), 400, "keys 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 40 more"),
    ],
    ids=[
        "malformed",
        "not-utf8",
        "not-object",
        "missing-key",
        "not-list",
        "unequal",
        "not-string",
        "empty-label",
        "index-label",
        "too-large",
        "deep-json",
        "nested-label",
        "deep-label",
        "lone-surrogate-key",
        "many-keys",
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(server, body, status, message):
    process, url = server
    before = workers(process)
    answer = post(url, body)
    assert answer[0] == status and message in answer[1]["detail"]
    assert post(url, json.dumps(GOOD).encode())[0] == 200  # the server still serves, with the same workers
    assert workers(process) == before


def test_a_body_over_the_limit_without_content_length_is_refused_as_it_arrives(server):
    _, url = server
    status, answer = post(url, b" " * (2 * MAX_BODY_BYTES), chunked=True)
    assert status == 413 and "--max-body-mb" in answer["detail"]
    assert post(url, json.dumps(GOOD).encode(), chunked=True)[0] == 200


def test_health_reports_the_configuration_and_the_workers_share_one_loopback_socket(server):
    process, url = server
    report = health(url)
    assert report["config"] == {
        "scheme": "penalized",
        "format": "lenient",
        "leak_penalty": 0.5,
        "min_think_words": 0,
        "short_think_penalty": 1.0,
    }
    assert report["env"] == REWARD_ENV and report["limits"]["max_body_mb"] * (1 << 20) == MAX_BODY_BYTES
    port = urlsplit(url).port
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for worker in workers(process)
        for conn in worker.net_connections()
        if conn.status == psutil.CONN_LISTEN
    }
    assert len(workers(process)) == 2 and listening == {("127.0.0.1", port)}


def wait_for_health(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            health(url)
            return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)


def test_cli_binds_loopback_by_default_and_rejects_bad_reward_flags():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "med_rlvr_plugin.serve", "--port", str(port), "--workers", "1"])
    try:
        wait_for_health(process, f"http://127.0.0.1:{port}/get_reward")
        sockets = [
            conn.laddr for conn in psutil.Process(process.pid).net_connections() if conn.status == psutil.CONN_LISTEN
        ]
        assert sockets == [("127.0.0.1", port)]
    finally:
        process.terminate()
        process.wait(timeout=60)
    bad = subprocess.run(
        [sys.executable, "-m", "med_rlvr_plugin.serve", "--leak-penalty", "-1"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "med-rlvr serve: error: MED_RLVR_LEAK_PENALTY='-1': leak_penalty must be >= 0" in bad.stderr


def test_sigterm_answers_the_request_in_flight_then_exits():
    process, url = serve.start(args=["--workers", "2"])
    body = json.dumps(GOOD).encode()
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as client:
        # Headers and half the body now, the rest after SIGTERM: the request is in flight throughout.
        client.sendall(
            f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10]
        )
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        client.sendall(body[10:])
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(payload)["rewards"] == 1.0
    assert process.wait(timeout=60) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((parts.hostname, parts.port), timeout=5)


def test_the_server_exits_with_the_process_that_started_it():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from med_rlvr_plugin import serve\nimport time\n"
            "process, url = serve.start(args=['--workers', '2'])\n"
            "print(process.pid, url, flush=True)\ntime.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid, url = parent.stdout.readline().split()
    server = psutil.Process(int(pid))
    children = workers(server)
    parent.kill()  # SIGKILL: the parent runs no cleanup of its own
    parent.wait()
    gone, alive = psutil.wait_procs([server, *children], timeout=30)
    assert not alive and len(gone) == 3
    with pytest.raises(OSError):
        health(url)


def test_launch_dry_run_with_reward_server_checks_it_on_loopback_and_stops_it(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MED_RLVR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [
            "bash",
            "launch/train_ppo_medqa.sh",
            "--dry-run",
            "--reward-server",
            "--reward-scheme",
            "penalized",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "med-rlvr: reward server (--reward-server) on this machine: rewards "
        "{'correct': 1.0, 'wrong': -1.0, 'malformed': -1.0}"
    ) in result.stdout
    port = int(re.search(r"med-rlvr reward server: http://127\.0\.0\.1:(\d+)/get_reward", result.stderr)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.ray
def test_launch_reward_server_in_a_ray_job(ray_cluster, tiny_qwen2, tmp_path):
    """`ray job submit -- bash launch/train_ppo_medqa.sh --reward-server`: the driver starts the server at
    the node's address, the probe actor grades through it, OpenRLHF gets its URL, and the server ends
    with the driver when the job stops at DeepSpeed's CUDA setup (no GPU here)."""
    train = write_rows(tmp_path / "train.jsonl", launcher.sample_rows())
    submit = ray_cli(
        "job",
        "submit",
        "--address",
        ray_cluster,
        "--working-dir",
        ".",
        "--submission-id",
        "medrlvr-server",
        "--",
        "bash",
        "launch/train_ppo_medqa.sh",
        "--reward-server",
        "--reward-scheme",
        "penalized",
        "--model",
        str(tiny_qwen2),
        "--train-data",
        str(train),
        "--eval-data",
        "none",
        "--gpus-per-node",
        "1",
        "--output-dir",
        str(tmp_path / "run"),
        *TINY_RUN,
    )
    logs = ray_cli("job", "logs", "--address", ray_cluster, "medrlvr-server").stdout
    started = re.search(r"med-rlvr: reward server (http://[\d.]+:\d+/get_reward) replaces the reward file", logs)
    assert started, logs[-5000:]
    url = started[1]
    probe = re.search(r"\(Probe pid=\d+\)\S* med-rlvr reward probe: env .*, rewards (\{.*?\})$", logs, re.M)
    assert probe, logs[-3000:]
    assert ast.literal_eval(probe[1]) == {"correct": 1.0, "wrong": -1.0, "malformed": -1.0}  # penalized, over HTTP
    assert re.search(rf"remote_url=\['{re.escape(url)}'\]", logs)  # the arguments OpenRLHF's train() printed
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["reward"]["server"] is True and manifest["openrlhf_command"][-2:] == ["--reward.remote_url", url]
    assert submit.returncode != 0 and "torch.cuda.set_device(local_rank)" in logs
    deadline = time.monotonic() + 30
    while True:  # the driver has exited: the server follows within seconds
        try:
            socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=5).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "the reward server outlived its job"
        time.sleep(1)


def wait_closed(port: int, seconds: float) -> bool:
    """Whether the port refuses connections within `seconds` (a bounded wait, not a timed assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("count", [1, 2])
def test_workers_exit_when_their_supervisor_is_killed(count):
    """kill -9 of the supervisor (the OOM killer's way): the port is closed within 5 s, no process remains,
    and a new server starts on the same port."""
    process, url = serve.start(args=["--workers", str(count)])
    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert len(workers(process)) == count
    process.kill()
    process.wait()
    port = urlsplit(url).port
    assert wait_closed(port, 5)
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive
    again = subprocess.Popen([sys.executable, "-m", "med_rlvr_plugin.serve", "--port", str(port), "--workers", "1"])
    try:
        wait_for_health(again, url)
    finally:
        again.terminate()
        assert again.wait(timeout=60) == 0


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def read_all(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" for a close without an answer)."""
    answer = b""
    try:
        while chunk := client.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def test_a_huge_header_gets_400_at_once_and_the_worker_keeps_its_memory(server):
    process, url = server
    before, body = sum(worker.memory_info().rss for worker in workers(process)), json.dumps(GOOD).encode()
    with connect(url) as client:
        try:  # the server answers and closes after the first 16 KB: the rest of the send may fail
            client.sendall(
                f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nX-Big: ".encode()
                + b"a" * (30 << 20)
                + b"\r\n\r\n"
                + body
            )
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_all(client).startswith(b"HTTP/1.1 400 ")
    assert sum(worker.memory_info().rss for worker in workers(process)) < before + (20 << 20)
    assert post(url, json.dumps(GOOD).encode())[0] == 200


@pytest.fixture(scope="module")
def impatient():
    """A server with one worker and 1-second header, body, keep-alive and shutdown timeouts."""
    timeouts = ["--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"]
    process, url = serve.start(args=["--workers", "1", *timeouts, "--shutdown-timeout", "1"])
    yield process, url
    process.terminate()
    assert process.wait(timeout=60) == 0


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /get_reward HTTP/1.1\r\nHost:",
        b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n{",
    ],
    ids=["silent", "headers-stalled", "body-stalled"],
)
def test_stalled_connections_are_closed_after_their_timeout(impatient, sent):
    _, url = impatient
    with connect(url) as client:  # recv would wait 30 s, the socket's timeout, if the server kept it open
        client.sendall(sent)
        answer = read_all(client)
    if b"Content-Length" in sent:
        assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s (--body-timeout)" in answer
    else:
        assert answer == b""


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(impatient):
    _, url = impatient
    body = json.dumps(GOOD).encode()
    with connect(url) as client:
        client.sendall(f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = read_all(client)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"rewards":1.0' in answer


def test_sigterm_with_one_worker_drops_a_stalled_upload_and_exits_0():
    process, url = serve.start(args=["--workers", "1", "--shutdown-timeout", "1"])
    with connect(url) as client:
        client.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n{")
        assert post(url, json.dumps(GOOD).encode())[0] == 200  # the stalled upload has reached the worker
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # not the 60 s graceful timeout
        assert read_all(client) == b""
    assert wait_closed(urlsplit(url).port, 5)


def test_one_worker_that_crashes_is_replaced():
    process, url = serve.start(args=["--workers", "1"])
    try:
        (worker,) = workers(process)
        worker.kill()
        deadline = time.monotonic() + 60
        while True:
            try:
                if health(url)["pid"] != worker.pid:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.5)
        assert post(url, json.dumps(GOOD).encode())[0] == 200
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_a_body_over_the_limit_sent_whole_before_reading_gets_the_413(server):
    """urllib sends the whole body before it reads: the server reads and discards it (up to 64 MB over the
    limit) and answers, where closing at once would reset the connection under the client's send."""
    _, url = server
    request = urllib.request.Request(url, b" " * (32 * MAX_BODY_BYTES), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413 and "--max-body-mb" in json.loads(refused.value.read())["detail"]


def test_each_distinct_4xx_detail_is_printed_once_on_stderr(tmp_path):
    port, log = free_port(), tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        command = [sys.executable, "-m", "med_rlvr_plugin.serve", "--port", str(port), "--workers", "1"]
        process = subprocess.Popen(command, stderr=stderr)
    url = f"http://127.0.0.1:{port}/get_reward"
    try:
        wait_for_health(process, url)
        forgotten = json.dumps({**GOOD, "labels": [""]}).encode()  # OpenRLHF without --data.label_key
        for body in (forgotten, forgotten, b"{not json", forgotten):
            assert post(url, body)[0] == 400
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    assert [line for line in lines if "names no option letter" in line] == [
        "med-rlvr reward server: 400 labels[0]: med-rlvr: label '' names no option letter; the label is empty: "
        "OpenRLHF passes '' when --data.label_key is not given (use --data.label_key label)"
    ]
    assert sum("400 the body is not JSON" in line for line in lines) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--max-body-mb", "nan"],
            "argument --max-body-mb: expected a number above 0 (and not inf or nan), got 'nan'",
        ),
        (
            ["--max-body-mb", "inf"],
            "argument --max-body-mb: expected a number above 0 (and not inf or nan), got 'inf'",
        ),
        (["--header-timeout", "0"], "argument --header-timeout: expected a number above 0"),
        (["--port", "99999"], "argument --port: expected a port number from 1 to 65535, got '99999'"),
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is not a loopback address and the service has no authentication"),
        (
            ["--host", "10.1.2.3"],
            "--host 10.1.2.3 is not a loopback address and the service has no authentication: pass --allow-remote",
        ),
    ],
)
def test_bad_flags_are_usage_errors(flags, message):
    bad = subprocess.run(
        [sys.executable, "-m", "med_rlvr_plugin.serve", *flags], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and f"med-rlvr serve: error: {message}" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_distinct_4_mb_prompts_keep_each_worker_within_100_mb():
    """The verifier's caches hold short prompts and option texts only: 120 distinct 4 MB prompts (the bulk
    in option B's text, which the well-formed answer names, so both caches are consulted) leave
    each worker within 100 MB of where it started."""
    process, url = serve.start(args=["--workers", "2"])
    try:
        for _ in range(4):  # each worker has started grading
            assert post(url, json.dumps(GOOD).encode())[0] == 200
        before = {worker.pid: worker.memory_info().rss for worker in workers(process)}
        for index in range(120):
            prompt = f"User: which?\nA. no\nB. {index}{'x' * (4 << 20)}\nAssistant:"  # one long word: quick to grade
            body = {"query": [prompt + " <think>it is B</think> <answer>B</answer>"], "prompts": [prompt]}
            status, answer = post(url, json.dumps({**body, "labels": ["B"]}).encode())
            assert status == 200 and answer["rewards"] == 1.0
        assert all(worker.memory_info().rss < before[worker.pid] + (100 << 20) for worker in workers(process))
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_small_requests_are_answered_while_a_slow_large_one_is_graded():
    """One worker; a 4.5 MB request whose prompt is not in its query (a long string search: about 0.3 s) is
    graded off the event loop, so many one-sample requests sent after it are answered before it is (24 to
    hundreds, fewer the faster the machine grades it; 3 to 5 when it was graded on the loop, during its
    upload and parsing: the bound sits at twice that)."""
    process, url = serve.start(args=["--workers", "1"])
    try:
        slow = {"query": ["a" * 3_000_000], "prompts": ["a" * 1_500_000 + "b"], "labels": ["B"]}
        body = json.dumps(slow).encode()
        with connect(url) as client:
            client.sendall(f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            client.sendall(body)
            client.setblocking(False)
            answered_first = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert post(url, json.dumps(GOOD).encode())[0] == 200
                try:
                    if client.recv(1, socket.MSG_PEEK):
                        break
                except BlockingIOError:
                    answered_first += 1
        assert answered_first >= 10
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_the_server_commands_of_docs_reuse_md():
    """The loopback command runs as written (on a free port); the multi-node one passes its flags, warns
    that there is no authentication, and fails only to bind an address this machine does not have."""
    commands = re.findall(
        r"^python -m med_rlvr_plugin\.serve (.*?)(?:\s+#.*)?$", (REPO / "docs/reuse.md").read_text(), re.M
    )
    local, remote = (command.split() for command in commands)
    port = free_port()
    local[local.index("--port") + 1] = str(port)
    process = subprocess.Popen([sys.executable, "-m", "med_rlvr_plugin.serve", *local])
    try:
        wait_for_health(process, f"http://127.0.0.1:{port}/get_reward")
        assert health(f"http://127.0.0.1:{port}/get_reward")["config"]["scheme"] == "penalized"
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
    host = remote[remote.index("--host") + 1]
    assert not serve.is_loopback(host) and "--allow-remote" in remote
    if any(address.address == host for addresses in psutil.net_if_addrs().values() for address in addresses):
        pytest.skip(f"this machine has the docs' example address {host}")
    remote[remote.index("--port") + 1] = str(free_port())
    run = subprocess.run(
        [sys.executable, "-m", "med_rlvr_plugin.serve", *remote], capture_output=True, text=True, timeout=120
    )
    assert f"WARNING: http://{host}:" in run.stderr and "has no authentication" in run.stderr
    assert run.returncode == 1 and "Cannot assign requested address" in run.stderr
    assert f"med-rlvr serve: error: cannot listen on {host}:" in run.stderr
