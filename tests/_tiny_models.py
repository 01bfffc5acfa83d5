"""Tiny randomly initialised Hugging Face models for the LLM tests, saved as local folders.

They reuse the packaged MiniLM tokenizer files (offline), so no hub access is ever needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from recarena import llm

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _copy_tokenizer(target: Path, chat_template: str | None = None) -> None:
    source = llm.models.minilm_dir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, target / name)
    if chat_template is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target)
        tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(target)


def build_tiny_bert(path: Path, seed: int = 0, layers: int = 2, max_positions: int = 64) -> Path:
    """A 32-wide BERT encoder (mean-pooled by the encoder) saved in ``path``."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=max_positions)
    BertModel(config).save_pretrained(path)
    _copy_tokenizer(path)
    return path


def build_tiny_llama(path: Path, seed: int = 0, max_positions: int = 128, chat_template: str | None = None) -> Path:
    """A 32-wide Llama causal LM saved in ``path`` (optionally with a chat template)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(path)
    _copy_tokenizer(path, chat_template)
    return path
