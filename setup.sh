#!/usr/bin/env bash
# Create ./.venv and install med-rlvr into it.
#   bash setup.sh            CPU machine: the test environment and the launch scripts' --dry-run
#   bash setup.sh gpu        GPU node: OpenRLHF 0.11.2 with vLLM, flash-attn compiled (docs/launch.md, "Environment")
#   bash setup.sh gpu-sdpa   GPU node without CUDA 13's nvcc: the same without flash-attn's kernels; train with
#                            `-- --ds.attn_implementation sdpa`
#   bash setup.sh TARGET --print   print the install commands, in order, without running them
#   bash setup.sh TARGET --check   check the node (GPU targets: driver, nvcc) and install nothing
# The GPU targets check the node before installing anything. Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"
target=cpu mode=install
for arg in "$@"; do
  case "$arg" in
    cpu | gpu | gpu-sdpa) target=$arg ;;
    --print | --check) mode=${arg#--} ;;
    *) echo "usage: bash setup.sh [cpu|gpu|gpu-sdpa] [--print|--check]" >&2 && exit 2 ;;
  esac
done
fail() {
  echo "med-rlvr setup.sh: error: $*" >&2
  exit 1
}
run() {
  if [[ $mode == print ]]; then printf '%q ' "$@" && echo; else "$@"; fi
}

# PyPI's torch 2.13.0, which vLLM 0.29.0 pins, is built with CUDA 13.0: it needs a driver of the R580 series.
check_driver() {
  local version
  command -v nvidia-smi >/dev/null ||
    fail "no NVIDIA driver (nvidia-smi not found): install driver R580 or newer, which torch 2.13.0's CUDA 13 build needs"
  version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n 1) ||
    fail "nvidia-smi failed ($version): load the NVIDIA driver (R580 or newer) and run again"
  [[ $version =~ ^([0-9]+)\. ]] || fail "nvidia-smi gave no driver version ($version): check the NVIDIA driver"
  ((BASH_REMATCH[1] >= 580)) ||
    fail "NVIDIA driver $version is older than R580, which torch 2.13.0's CUDA 13 build needs: upgrade the driver"
  echo "med-rlvr setup.sh: NVIDIA driver $version (R580 or newer: torch 2.13.0's CUDA 13 build runs)" >&2
}

# flash-attn 2.8.3 has no prebuilt wheel for torch 2.13, so pip compiles it, with the nvcc torch finds (CUDA_HOME,
# CUDA_PATH, PATH, /usr/local/cuda, in that order); torch refuses one whose CUDA major version is not its own, 13.
check_nvcc() {
  local home=${CUDA_HOME:-${CUDA_PATH:-}} nvcc release
  nvcc=${home:+$home/bin/nvcc}
  nvcc=${nvcc:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  [[ -x $nvcc ]] || fail "no nvcc ($nvcc): flash-attn 2.8.3 compiles from source on torch 2.13 and needs CUDA 13's nvcc;" \
    "install CUDA toolkit 13.x (or set CUDA_HOME to it), or install with 'bash setup.sh gpu-sdpa', which needs no compiler"
  release=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')
  [[ ${release%%.*} == 13 ]] || fail "$nvcc is CUDA ${release:-of unknown version}; torch 2.13.0 (CUDA 13.0) refuses to" \
    "compile flash-attn with another major version: set CUDA_HOME to a CUDA 13.x toolkit, or use 'bash setup.sh gpu-sdpa'"
  echo "med-rlvr setup.sh: nvcc $nvcc, CUDA $release (major 13, as torch 2.13.0's)" >&2
}

# PyPI's torch for Linux x86_64 is the CUDA build (several GB of nvidia-* libraries); PyTorch's own CPU index has
# torch 2.13.0+cpu. Where that index cannot be reached (no network but a package mirror, or pip configured
# with a local CPU wheel), torch comes from pip's configured index, and the line says so.
torch_cpu() {
  local index=${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' "$index/torch/" 2>/dev/null; then
    echo "med-rlvr setup.sh: torch 2.13.0 from PyTorch's CPU wheel index, $index" >&2
    run "${pip[@]}" --index-url "$index" torch==2.13.0
  else
    echo "med-rlvr setup.sh: PyTorch's CPU wheel index ($index) cannot be reached: torch 2.13.0 from pip's" \
      "configured index (on Linux x86_64, PyPI's is the CUDA build, unless pip has a local CPU wheel)" >&2
    run "${pip[@]}" torch==2.13.0
  fi
}

pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if [[ $target != cpu && $mode != print ]]; then
  check_driver
  if [[ $target == gpu ]]; then check_nvcc; fi
fi
[[ $mode == check ]] && echo "med-rlvr setup.sh: this node can install the $target environment" >&2 && exit 0
case "$target" in
  cpu)
    run python3 -m venv .venv
    torch_cpu
    run "${pip[@]}" -e '.[test,eval]'
    # OpenRLHF's own pins include flash-attn, which cannot build without CUDA; its CPU-importable
    # parts need only what the [test] extra installed.
    run "${pip[@]}" --no-deps openrlhf==0.11.2
    # verl 0.9.1 caps transformers below the 5.15.0 above, and tensordict 0.10.0's pyvers 0.1.0 would pull
    # packaging below what virtualenv (Ray's) needs; without their dependencies, verl's reward path imports
    # and runs (tests/test_reuse.py). `pip check` lists these conflicts: keep it out of CI.
    run "${pip[@]}" --no-deps verl==0.9.1 tensordict==0.10.0 pyvers==0.1.0
    ;;
  gpu | gpu-sdpa)
    run python3 -m venv .venv
    # 1. torch first, the version vllm 0.29.0 pins (PyPI's default build for Linux is the CUDA 13 one).
    run "${pip[@]}" torch==2.13.0
    # 2. flash-attn, which openrlhf 0.11.2 pins, without build isolation: its setup.py imports torch, which
    #    pip's isolated build environment does not have ("No module named 'torch'").
    run "${pip[@]}" packaging wheel setuptools ninja psutil
    if [[ $target == gpu ]]; then
      # It looks for a prebuilt wheel on its GitHub releases (none for torch 2.13) and compiles: an hour or
      # more with CUDA 13's nvcc; MAX_JOBS bounds the compiler's memory.
      run "${pip[@]}" --no-build-isolation flash-attn==2.8.3
    else
      # Its Python files only (no CUDA build, no wheel download; not cached, so a later `gpu` install
      # compiles): OpenRLHF imports flash_attn.bert_padding at module level, plain torch code. The stand-in
      # for the kernels lets `import flash_attn` work and says what to do if a kernel is ever called.
      run env FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE \
        "${pip[@]}" --no-build-isolation --no-cache-dir flash-attn==2.8.3
      run .venv/bin/python -c "import shutil, sysconfig; shutil.copy('med_rlvr_plugin/launcher/flash_attn_2_cuda.py', sysconfig.get_path('purelib'))"
    fi
    # 3. OpenRLHF with vLLM (the pins above are already satisfied), lm-eval for launch/eval_checkpoint.sh, matplotlib and TensorBoard's reader for analyze.
    run "${pip[@]}" -e '.[gpu,eval,analysis]'
    ;;
esac
[[ $mode == print ]] || echo "med-rlvr: installed the $target environment in $(pwd)/.venv"
