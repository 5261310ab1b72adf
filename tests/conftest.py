"""Shared fixtures: import-only stand-ins for the GPU-only packages, a tiny random Qwen2 model, a local Ray cluster."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import tests.real_data  # noqa: F401  (first: it takes MED_RLVR_TEST_DATA out of the environment)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)

# vLLM and flash-attn cannot be installed without CUDA, yet OpenRLHF's trainer modules import them at
# module level. These stand-ins define only the names those imports ask for, with no behaviour: any
# code path that would really use them fails, as it would on a machine without a GPU.
CPU_STANDINS = {
    "vllm/__init__.py": "__version__ = '0.0.0+cpu-standin'\n\n\nclass SamplingParams:\n    pass\n",
    "vllm/inputs.py": "class TokensPrompt(dict):\n    pass\n",
    "vllm/utils.py": "def random_uuid():\n    raise RuntimeError('vLLM stand-in: no vLLM on this machine')\n",
    "flash_attn/__init__.py": "",
    "flash_attn/bert_padding.py": "index_first_axis = pad_input = rearrange = unpad_input = None\n",
    "flash_attn/utils/__init__.py": "",
    "flash_attn/utils/distributed.py": "all_gather = None\n",
}


@pytest.fixture(scope="session")
def cpu_standins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to put on PYTHONPATH so that `import vllm` and `import flash_attn` succeed on CPU."""
    root = tmp_path_factory.mktemp("cpu_standins")
    for relative, text in CPU_STANDINS.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer Qwen2 model with Qwen2.5's tokenizer, saved offline."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tokenizer_fixtures import qwen25_tokenizer

    tokenizer = qwen25_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny_qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """This process's environment without reward or wandb variables, with the venv's tools first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MED_RLVR_", "WANDB_", "RAY_"))}
    return env | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | extra


def ray_cli(*args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def ray_cluster(cpu_standins: Path):
    """A head node started with `ray start --head --block` on free ports, stopped by signalling that process.

    `ray stop` would stop every Ray process on the machine, other clusters' too; the blocking head instead
    takes its own processes down when it gets SIGTERM.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    ports = {flag: free_port() for flag in PORT_FLAGS}
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=1",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]
    log = (temp_dir / "head.log").open("w")
    head = subprocess.Popen(
        command,
        env=clean_env(PYTHONPATH=str(cpu_standins)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 120
        while ray_cli("job", "list", "--address", address, timeout=60).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, (temp_dir / "head.log").read_text()
            time.sleep(2)
        yield address
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
