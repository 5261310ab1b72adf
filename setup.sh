#!/usr/bin/env bash
# Create ./.venv and install med-rlvr into it.
#   bash setup.sh            CPU machine: the test environment and the launch scripts' --dry-run
#   bash setup.sh gpu        GPU cluster node: OpenRLHF 0.11.2 with vLLM (see docs/launch.md, "Environment")
#   bash setup.sh [cpu|gpu] --print   print the install commands, in order, without running them
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-cpu} print=0
[[ ${2:-} == --print || ${1:-} == --print ]] && print=1
[[ $target == --print ]] && target=cpu
run() {
  if ((print)); then printf '%q ' "$@" && echo; else "$@"; fi
}
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
case "$target" in
  cpu)
    run python3 -m venv .venv
    # torch==2.13.0 first: an unpinned torch pulls a multi-GB CUDA build.
    run "${pip[@]}" torch==2.13.0
    run "${pip[@]}" -e '.[test,eval]'
    # OpenRLHF's own pins include flash-attn, which cannot build without CUDA; its CPU-importable
    # parts need only what the [test] extra installed.
    run "${pip[@]}" --no-deps openrlhf==0.11.2
    # verl 0.9.1 caps transformers below the 5.15.0 above, and tensordict 0.10.0's pyvers 0.1.0 would pull
    # packaging below what virtualenv (Ray's) needs; without their dependencies, verl's reward path imports
    # and runs (tests/test_reuse.py). `pip check` lists these conflicts: keep it out of CI.
    run "${pip[@]}" --no-deps verl==0.9.1 tensordict==0.10.0 pyvers==0.1.0
    ;;
  gpu)
    run python3 -m venv .venv
    # 1. torch first, the version vllm 0.29.0 pins (PyPI's default build for Linux is the CUDA one).
    run "${pip[@]}" torch==2.13.0
    # 2. flash-attn, which openrlhf 0.11.2 pins, without build isolation: its setup.py imports torch, which
    #    pip's isolated build environment does not have ("No module named 'torch'"). It first looks for a
    #    prebuilt wheel matching torch, CUDA and Python on its GitHub releases, and compiles only when none
    #    matches (an hour or more; needs nvcc; MAX_JOBS bounds the compiler's memory).
    run "${pip[@]}" packaging wheel setuptools ninja psutil
    run "${pip[@]}" --no-build-isolation flash-attn==2.8.3
    # 3. OpenRLHF with vLLM (the pins above are already satisfied), lm-eval for launch/eval_checkpoint.sh, matplotlib and TensorBoard's reader for analyze.
    run "${pip[@]}" -e '.[gpu,eval,analysis]'
    ;;
  *) echo "usage: bash setup.sh [cpu|gpu] [--print]" >&2; exit 2 ;;
esac
((print)) || echo "med-rlvr: installed the $target environment in $(pwd)/.venv"
