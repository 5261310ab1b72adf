"""setup.sh: the GPU node checks (with stand-in `nvidia-smi` and `nvcc` scripts: this machine has no GPU), torch
from PyTorch's CPU index or pip's configured one, and the install without flash-attn's kernels.

docs/launch.md, "Environment", states what these check. The install order against OpenRLHF's pins is in
tests/test_launch_plan.py.
"""

import ast
import functools
import http.server
import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # setup.sh runs in subprocesses

REPO = Path(__file__).resolve().parent.parent
DRIVER_OK, NVCC_OK = "580.65.06", "13.0"


def stand_in(folder: Path, name: str, output: str, status: int = 0) -> None:
    """An executable `folder/name` that prints `output` and exits with `status`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    (folder / name).chmod(0o755)


def nvcc_output(release: str) -> str:
    return f"nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release {release}, V{release}.88"


def setup_on_node(
    tmp_path: Path, *args: str, driver: str | None = DRIVER_OK, cuda_home: str | None = NVCC_OK
) -> subprocess.CompletedProcess:
    """`bash setup.sh ARGS` from a copy of the checkout in `tmp_path` (so a .venv it made would show), on a
    node whose `nvidia-smi` reports `driver` (None: no driver) and whose CUDA_HOME holds an nvcc of release
    `cuda_home` (None: a CUDA_HOME without nvcc)."""
    checkout, bin_dir, toolkit = tmp_path / "checkout", tmp_path / "bin", tmp_path / "cuda"
    checkout.mkdir(parents=True)
    shutil.copy(REPO / "setup.sh", checkout)
    bin_dir.mkdir(exist_ok=True)
    if driver is not None:
        stand_in(bin_dir, "nvidia-smi", driver)
    toolkit.mkdir()
    if cuda_home is not None:
        stand_in(toolkit / "bin", "nvcc", nvcc_output(cuda_home))
    env = {key: value for key, value in os.environ.items() if key not in ("CUDA_HOME", "CUDA_PATH")}
    env |= {"PATH": f"{bin_dir}:/usr/bin:/bin", "CUDA_HOME": str(toolkit)}
    return subprocess.run(
        ["bash", "setup.sh", *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("target", "driver", "cuda_home", "message"),
    [
        ("gpu", None, NVCC_OK, "no NVIDIA driver (nvidia-smi not found): install driver R580 or newer"),
        ("gpu-sdpa", "570.172.08", None, "NVIDIA driver 570.172.08 is older than R580"),
        ("gpu", DRIVER_OK, None, "no nvcc ("),
        ("gpu", DRIVER_OK, "12.8", "/bin/nvcc is CUDA 12.8; torch 2.13.0 (CUDA 13.0) refuses to compile flash-attn"),
    ],
)
def test_gpu_install_stops_before_installing_anything_with_one_line(tmp_path, target, driver, cuda_home, message):
    done = setup_on_node(tmp_path, target, driver=driver, cuda_home=cuda_home)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 1 and len(errors) == 1 and message in errors[0], done.stderr
    assert errors[0].startswith("med-rlvr setup.sh: error: ") and done.stderr.endswith(errors[0] + "\n")
    assert not (tmp_path / "checkout" / ".venv").exists()  # nothing was installed
    if target == "gpu" and driver:  # what to do instead of compiling
        assert "bash setup.sh gpu-sdpa" in errors[0]


def test_gpu_checks_read_the_nvcc_torch_would_use(tmp_path):
    """torch builds with CUDA_HOME's nvcc, not the first on PATH: a CUDA 13 nvcc on PATH does not hide it."""
    stand_in(tmp_path / "bin", "nvcc", nvcc_output("13.0"))
    done = setup_on_node(tmp_path, "gpu", "--check", cuda_home="12.4")
    assert done.returncode == 1 and "cuda/bin/nvcc is CUDA 12.4" in done.stderr, done.stderr


def test_gpu_check_passes_a_node_that_can_install_and_installs_nothing(tmp_path):
    done = setup_on_node(tmp_path, "gpu", "--check", driver="580.95.05", cuda_home="13.1")
    assert done.returncode == 0, done.stderr
    assert "NVIDIA driver 580.95.05" in done.stderr and "CUDA 13.1 (major 13" in done.stderr
    assert "can install the gpu environment" in done.stderr
    assert not (tmp_path / "checkout" / ".venv").exists()
    # Without flash-attn's build, no compiler is needed: only the driver is checked.
    sdpa = setup_on_node(tmp_path / "sdpa", "gpu-sdpa", "--check", cuda_home=None)
    assert sdpa.returncode == 0 and "nvcc" not in sdpa.stderr, sdpa.stderr


def printed_installs(stdout: str) -> list[list[str]]:
    """The pip install commands `setup.sh --print` printed, each as its arguments after `install`."""
    commands = [shlex.split(line) for line in stdout.splitlines()]
    return [command[command.index("install") + 1 :] for command in commands if "install" in command]


@pytest.fixture
def cpu_index(tmp_path):
    """A PEP 503 index on 127.0.0.1 with a torch project page, standing in for PyTorch's CPU index."""
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "whl" / "cpu" / "torch" / "index.html").write_text("<html><body></body></html>\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()
    server.server_close()


def print_cpu(*args: str, index: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TORCH_CPU_INDEX_URL": index}
    return subprocess.run(
        ["bash", "setup.sh", *args, "--print"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_cpu_torch_comes_from_pytorchs_cpu_index_when_it_answers(cpu_index):
    done = print_cpu("cpu", index=cpu_index)
    installs = printed_installs(done.stdout)
    assert installs[0][-3:] == ["--index-url", cpu_index, "torch==2.13.0"]
    assert all("--index-url" not in install for install in installs[1:])  # the rest from pip's own index
    assert installs[1][-2:] == ["-e", ".[test,eval]"]  # after torch: its torch pin is then satisfied
    assert f"torch 2.13.0 from PyTorch's CPU wheel index, {cpu_index}" in done.stderr
    # `bash setup.sh`, which the README and .ci/run run, is the cpu target.
    assert print_cpu(index=cpu_index).stdout == done.stdout


def test_cpu_torch_falls_back_to_pips_index_and_says_so():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused at once
        done = print_cpu("cpu", index=f"http://127.0.0.1:{closed.getsockname()[1]}/whl/cpu")
    torch_install = printed_installs(done.stdout)[0]
    assert torch_install[-1] == "torch==2.13.0" and "--index-url" not in torch_install
    assert "cannot be reached: torch 2.13.0 from pip's configured index" in done.stderr


def test_gpu_sdpa_installs_flash_attns_python_files_and_the_kernel_stand_in():
    done = subprocess.run(["bash", "setup.sh", "gpu-sdpa", "--print"], cwd=REPO, capture_output=True, text=True)
    lines = [shlex.split(line) for line in done.stdout.splitlines()]
    flash = next(line for line in lines if "flash-attn==2.8.3" in line)
    assert {"FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE", "--no-build-isolation", "--no-cache-dir"} <= set(flash)
    copy = next(line for line in lines if any("flash_attn_2_cuda.py" in word for word in line))
    assert (REPO / "med_rlvr_plugin/launcher/flash_attn_2_cuda.py").is_file() and "purelib" in copy[-1]
    assert lines.index(flash) < lines.index(copy) < next(i for i, line in enumerate(lines) if "-e" in line)


def test_the_kernel_stand_in_says_what_to_do_when_a_kernel_is_called():
    path = REPO / "med_rlvr_plugin/launcher/flash_attn_2_cuda.py"
    spec = importlib.util.spec_from_file_location("flash_attn_2_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(RuntimeError, match=r"flash_attn_2_cuda\.varlen_fwd.*--ds.attn_implementation sdpa"):
        module.varlen_fwd  # noqa: B018 (the attribute access is the call being tested)
    assert not hasattr(module, "__wrapped__")  # introspection still sees an ordinary module


def test_openrlhf_imports_only_flash_attns_plain_torch_modules_unconditionally():
    """What `--ds.attn_implementation sdpa` without packing still needs of flash-attn: the module-level imports
    of OpenRLHF 0.11.2's source. Every other flash_attn import is inside a function (packing, ring attention)
    or falls back on ImportError."""
    root = Path(importlib.util.find_spec("openrlhf").origin).parent
    top_level, guarded = set(), set()
    for path in root.rglob("*.py"):
        with warnings.catch_warnings():  # an invalid escape in one of OpenRLHF's docstrings
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
                top_level |= {(path.relative_to(root).as_posix(), n) for n in names if n.split(".")[0] == "flash_attn"}
        guarded |= {
            node.body[0].module
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            and isinstance(node.body[0], ast.ImportFrom)
            and str(node.body[0].module).startswith("flash_attn")
            and any(ast.unparse(handler.type) == "ImportError" for handler in node.handlers)
        }
    assert top_level == {
        ("models/ring_attn_utils.py", "flash_attn.bert_padding"),
        ("models/ring_attn_utils.py", "flash_attn.utils.distributed"),
    }
    assert guarded == {"flash_attn.ops.triton.cross_entropy"}


def test_openrlhfs_actor_trains_with_sdpa_and_no_flash_attn_function(tiny_qwen2, cpu_standins):
    """OpenRLHF's Actor, as the launcher runs it (packing off) but with `sdpa`: a forward and a backward pass
    with every flash_attn name a None stand-in, so no flash-attn code runs."""
    script = f"""
import torch
from openrlhf.models.actor import Actor
actor = Actor({str(tiny_qwen2)!r}, attn_implementation="sdpa", packing_samples=False)
sequences = torch.randint(0, 1000, (2, 12))
mask = torch.ones_like(sequences)
mask[1, :4] = 0  # left padding, as OpenRLHF's rollouts have
log_probs = actor(sequences, action_mask=torch.ones(2, 5), attention_mask=mask)
log_probs.sum().backward()
assert log_probs.shape == (2, 5) and torch.isfinite(log_probs).all()
print("trained", actor.model.config._attn_implementation)
"""
    env = os.environ | {"PYTHONPATH": f"{cpu_standins}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "trained sdpa" in done.stdout, done.stderr[-2000:]


def test_the_dry_run_takes_the_sdpa_flag_gpu_sdpa_runs_need():
    """docs/launch.md's `-- --ds.attn_implementation sdpa` passes OpenRLHF's parser and checks, and the
    command keeps packing off (with packing OpenRLHF would switch back to flash_attention_2)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MED_RLVR_", "WANDB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "launch/train_ppo_medqa.sh", "--dry-run", "--", "--ds.attn_implementation", "sdpa"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "every check passed" in done.stdout + done.stderr, done.stderr[-2000:]
    assert "--ds.attn_implementation sdpa" in done.stdout and "--ds.packing_samples" not in done.stdout
