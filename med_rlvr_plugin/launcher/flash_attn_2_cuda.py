"""A stand-in for flash-attn's compiled CUDA kernels, `flash_attn_2_cuda`: `bash setup.sh gpu-sdpa` installs it.

OpenRLHF 0.11.2 imports `flash_attn.bert_padding` and `flash_attn.utils.distributed` (plain torch code) at
module level, and `import flash_attn` first imports this extension. With flash-attn's Python files and this
module in its place, those imports work without a CUDA compiler; a run that calls a kernel
(`--ds.attn_implementation flash_attention_2`, or `--ds.packing_samples`) stops with what to do instead.
"""


def __getattr__(name: str) -> None:
    if name.startswith("__"):  # the import system and inspect ask for dunders: those are simply absent
        raise AttributeError(name)
    raise RuntimeError(
        f"flash-attn's CUDA kernels are not installed (flash_attn_2_cuda.{name}; `bash setup.sh gpu-sdpa`): train "
        "with `-- --ds.attn_implementation sdpa` and without --ds.packing_samples, or install with "
        "`bash setup.sh gpu` on a node with CUDA 13's nvcc"
    )
