"""Text encoder over Hugging Face ``transformers``: any encoder-only or causal LM, offline.

Pooling:

- encoder-only models (BERT-like, e.g. the default all-MiniLM-L6-v2) use **mean pooling** over the
  attention mask followed by L2 normalisation; this is exactly what sentence-transformers does for
  all-MiniLM-L6-v2 (its ``modules.json``: Transformer -> Pooling(mean) -> Normalize), so the
  embeddings match that library's;
- causal LMs (e.g. SmolLM2) default to **mean pooling** of the last hidden layer too. A decoder that
  was not trained for embeddings puts next-token information in its last position; the mean over
  all tokens is the more robust zero-shot sentence vector (SGPT, LLM2Vec report the same).
  ``pooling="last"`` takes the hidden state of the last non-pad token instead.

Rows are always L2-normalised, so a dot product is a cosine similarity. Batches are padded on the
right (for causal models too: real tokens then never see padding and keep their positions, so a
text's embedding does not depend on what it is batched with); texts are sorted by token length
before batching to keep padding small, and the rows are put back in input order.

Nothing is downloaded: models load with ``local_files_only=True``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from recarena.core.config import config_dataclass
from recarena.core.errors import ConfigError
from recarena.core.seeding import default_torch_threads, resolve_device
from recarena.data.interactions import ItemMetadata
from recarena.llm.cache import EmbeddingCache, make_key
from recarena.llm.models import ModelSource, resolve_model
from recarena.llm.text import DEFAULT_ITEM_TEMPLATE, item_texts

ENCODER_MODEL_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "mpnet",
        "electra",
        "albert",
        "deberta",
        "deberta-v2",
        "modernbert",
    }
)
"""Model types treated as encoder-only when a config names no architecture (GGUF-converted configs)."""

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@config_dataclass
class EncoderConfig:
    """How to encode texts.

    model: "minilm" (packaged all-MiniLM-L6-v2), "smollm2" (packaged SmolLM2-135M-Instruct GGUF),
        a local model folder or .gguf file, or an HF id already in the local HF cache.
    pooling: "auto" (mean for every model, see the module docstring), "mean" or "last".
    batch_size: texts per forward pass.
    max_length: tokens kept per text (longer texts are truncated); 256 matches
        sentence-transformers' all-MiniLM-L6-v2.
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    dtype: "auto" (float16 on CUDA, float32 on CPU), "float32", "float16" or "bfloat16".
    progress: show a tqdm bar when a job has more than one batch.
    """

    model: str = "minilm"
    pooling: Literal["auto", "mean", "last"] = "auto"
    batch_size: Annotated[int, Field(ge=1)] = 128
    max_length: Annotated[int, Field(ge=2)] = 256
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    progress: bool = True


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def is_causal_config(config: Any) -> bool:
    """True for decoder-only LMs: a ``*ForCausalLM`` architecture, ``is_decoder``, or a non-encoder type."""
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:
        return any("CausalLM" in name for name in architectures) or bool(getattr(config, "is_decoder", False))
    return bool(getattr(config, "is_decoder", False)) or config.model_type not in ENCODER_MODEL_TYPES


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, with a pad token (EOS or UNK when it has none) and right padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ConfigError(f"tokenizer of {model_dir} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def tokenize_sorted(
    tokenizer: Any, texts: Sequence[str], max_length: int, add_special_tokens: bool = True
) -> tuple[list[list[int]], list[int]]:
    """Token ids of every text (truncated) and the order that sorts them longest first."""
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        add_special_tokens=add_special_tokens,
    )["input_ids"]
    # An empty text (a causal tokenizer adds no special tokens) becomes one BOS/EOS/pad token.
    filler = next(
        t
        for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, 0)
        if t is not None
    )
    encoded = [ids if ids else [filler] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    return encoded, order


def pad_batch(
    sequences: Sequence[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for a list of token-id lists."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Mean over unmasked tokens, or the last unmasked token (any padding side); float32 [B, d]."""
    hidden = hidden.float()
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ConfigError(f"unknown pooling {pooling!r}")


class TextEncoder:
    """Encode texts into L2-normalised float32 CPU vectors ``[n, d]`` (see the module docstring).

    The model loads on construction; ``source`` may be passed to skip resolving ``config.model``.
    """

    def __init__(
        self,
        config: EncoderConfig | None = None,
        cache_dir: str | Path | None = None,
        source: ModelSource | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoModel

        default_torch_threads()
        self.config = config or EncoderConfig()
        self.source = source or resolve_model(self.config.model)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        model_dir = self.source.local_dir(cache_dir, progress=self.config.progress)
        hf_config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        self.is_causal = is_causal_config(hf_config)
        self.pooling = "mean" if self.config.pooling == "auto" else self.config.pooling
        self.tokenizer = load_tokenizer(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, dtype=self.dtype, local_files_only=True)
        self.model.to(self.device).eval()
        self.dim = int(hf_config.hidden_size)
        self.max_length = min(self.config.max_length, _model_max_length(hf_config, self.tokenizer))

    def identity(self) -> dict[str, Any]:
        """Everything that determines the output: model files, pooling, length, dtype."""
        return encoder_identity(self.config, self.source, self.device)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` in input order: float32, CPU, unit-norm rows ``[len(texts), d]``."""
        from tqdm.auto import tqdm

        texts = _check_texts(texts)
        out = torch.zeros((len(texts), self.dim), dtype=torch.float32)
        if not texts:
            return out
        encoded, order = tokenize_sorted(self.tokenizer, texts, self.max_length)
        batch = self.config.batch_size
        starts = range(0, len(order), batch)
        bar = tqdm(
            starts,
            desc=f"encoding {len(texts)} texts",
            unit="batch",
            disable=not self.config.progress or len(starts) <= 1,
        )
        for start in bar:
            index = order[start : start + batch]
            ids, mask = pad_batch([encoded[i] for i in index], self.tokenizer.pad_token_id, self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            vectors = torch.nn.functional.normalize(pool(hidden, mask, self.pooling), dim=-1)
            out[torch.tensor(index)] = vectors.cpu()
        return out


def _model_max_length(hf_config: Any, tokenizer: Any) -> int:
    limits = [
        getattr(hf_config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**7]
    return min(limits) if limits else 10**6


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of texts, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")
    return texts


def encoder_identity(config: EncoderConfig, source: ModelSource, device: torch.device) -> dict[str, Any]:
    """Cache identity of an encoder without loading it (model fingerprint + output-changing fields)."""
    return {
        "kind": "text-encoder",
        "model": source.fingerprint(),
        "pooling": "mean" if config.pooling == "auto" else config.pooling,
        "max_length": config.max_length,
        "dtype": str(resolve_dtype(config.dtype, device)),
        "normalize": True,
    }


MINILM_CPU_TEXTS_PER_SECOND = 150.0
"""The packaged MiniLM's item texts per second on the 2-core CPU machine, 1 torch thread, shared
with other jobs, model loading included (bench/first_use.py: ML-100K 1,682 texts in 12 s, ML-1M
3,883 in 23 s; docs/benchmarks.md, "First use")."""


def announce_encoding(n_texts: int, config: EncoderConfig, device: torch.device, path: Path) -> None:
    """One line on stderr before a one-time encoding: how many texts, which model, how long, where cached."""
    if config.model == "minilm" and device.type == "cpu":
        seconds = n_texts / MINILM_CPU_TEXTS_PER_SECOND
        duration = "under 1 s" if seconds < 1 else f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"
        expected = f"expected {duration} on a 2-core CPU with 1 torch thread"
    else:
        expected = "its duration depends on the model and the device"
    print(f"recarena: encoding {n_texts:,} texts with the '{config.model}' encoder once ({expected}); "
          f"they are cached in {path}", file=sys.stderr, flush=True)


def encode_texts(
    texts: Sequence[str],
    config: EncoderConfig | None = None,
    cache_dir: str | Path | None = None,
    encoder: TextEncoder | None = None,
) -> torch.Tensor:
    """Embeddings of ``texts`` (float32 CPU ``[n, d]``), from the on-disk cache when possible.

    The model is only loaded on a cache miss; pass ``encoder`` to reuse one already loaded.
    """
    config = encoder.config if encoder is not None else (config or EncoderConfig())
    texts = _check_texts(texts)
    source = encoder.source if encoder is not None else resolve_model(config.model)
    device = encoder.device if encoder is not None else resolve_device(config.device)
    identity = encoder_identity(config, source, device)
    key = make_key(identity, texts)
    cache = EmbeddingCache(cache_dir, "embeddings")
    cached = cache.get(key, rows=len(texts))
    if cached is not None:
        return cached
    if config.progress and len(texts) > config.batch_size:
        announce_encoding(len(texts), config, device, cache.path(key))
    encoder = encoder or TextEncoder(config, cache_dir=cache_dir, source=source)
    vectors = encoder.encode(texts)
    cache.put(key, vectors, {**identity, "model_name": config.model, "n_texts": len(texts)})
    return vectors


def encode_items(
    items: ItemMetadata,
    config: EncoderConfig | None = None,
    cache_dir: str | Path | None = None,
    template: str = DEFAULT_ITEM_TEMPLATE,
) -> torch.Tensor:
    """Cached embeddings of every item's text (see :func:`recarena.llm.text.item_texts`), ``[n_items, d]``."""
    return encode_texts(item_texts(items, template), config, cache_dir)
