"""Shared fixtures: import-only stand-ins for the GPU-only packages, and a tiny random Qwen2 model."""

from pathlib import Path

import pytest

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a local Ray cluster and submits jobs (slow, tens of seconds)")


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
