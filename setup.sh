#!/usr/bin/env bash
# Create ./.venv and install med-rlvr into it.
#   bash setup.sh        CPU machine: the test environment and the launch scripts' --dry-run
#   bash setup.sh gpu    GPU cluster node: OpenRLHF 0.11.2 with vLLM (needs CUDA to build flash-attn)
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-cpu}
python3 -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
case "$target" in
  cpu)
    # torch==2.13.0 first: an unpinned torch pulls a multi-GB CUDA build.
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" -e '.[test,eval]'
    # OpenRLHF's own pins include flash-attn, which cannot build without CUDA; its CPU-importable
    # parts need only what the [test] extra installed.
    "${pip[@]}" --no-deps openrlhf==0.11.2
    ;;
  gpu)
    "${pip[@]}" -e '.[gpu]'
    ;;
  *) echo "usage: bash setup.sh [cpu|gpu]" >&2; exit 2 ;;
esac
echo "med-rlvr: installed the $target environment in $(pwd)/.venv"
