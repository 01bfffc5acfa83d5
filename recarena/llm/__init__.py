"""LLM text features for recarena: item/user texts, a cached text encoder, and a cached yes/no judge.

Everything runs offline from packaged or local models (see :mod:`recarena.llm.models`). Item encodings are
computed once and cached on disk (:func:`encode_items`); the hot path of a simulator or agent only
gathers rows of that table.
"""

from __future__ import annotations

from recarena.llm.cache import CacheCorruptionWarning, EmbeddingCache, hash_texts, make_key
from recarena.llm.encoder import EncoderConfig, TextEncoder, encode_items, encode_texts
from recarena.llm.judge import DEFAULT_JUDGE_PROMPT, JudgeConfig, LLMJudge
from recarena.llm.models import ModelSource, cache_root, convert_gguf, resolve_model
from recarena.llm.text import DEFAULT_ITEM_TEMPLATE, format_item, item_texts, user_profile_texts

__all__ = [
    "DEFAULT_ITEM_TEMPLATE",
    "DEFAULT_JUDGE_PROMPT",
    "CacheCorruptionWarning",
    "EmbeddingCache",
    "EncoderConfig",
    "JudgeConfig",
    "LLMJudge",
    "ModelSource",
    "TextEncoder",
    "cache_root",
    "convert_gguf",
    "encode_items",
    "encode_texts",
    "format_item",
    "hash_texts",
    "item_texts",
    "make_key",
    "resolve_model",
    "user_profile_texts",
]
