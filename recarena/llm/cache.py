"""On-disk cache of tensors computed from texts by a model (embeddings, judge probabilities).

An entry is one safetensors file ``<key>.safetensors`` under ``<cache_root>/<namespace>/``. Its
key hashes the model identity (a dict: resolved model fingerprint and every config field that
changes the output) and the texts, so a changed text or model gives a new entry. The header
metadata records the format, the shape and a SHA-256 of the tensor bytes; a file that cannot be
parsed, has the wrong shape or a checksum mismatch is reported with a warning, deleted, and
treated as a miss so the caller rebuilds it. Writes go through ``recarena.io.atomic_write``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from recarena.core.io import atomic_write_bytes
from recarena.llm.models import cache_root

CACHE_FORMAT = "recarena-tensor-cache-v1"


class CacheCorruptionWarning(RuntimeWarning):
    """A cache file was unreadable or failed its checks and will be rebuilt."""


def hash_texts(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts, unambiguous (each text is length-prefixed)."""
    digest = hashlib.sha256()
    digest.update(f"{len(texts)}\n".encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def make_key(identity: dict[str, Any], texts: Sequence[str]) -> str:
    """Cache key for ``texts`` processed by the model described by ``identity``."""
    ident = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(f"{ident}\n{hash_texts(texts)}".encode()).hexdigest()[:32]


def _checksum(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


class EmbeddingCache:
    """Tensors on disk, one file per key, validated on every read.

    ``cache_dir`` defaults to ``$RECARENA_CACHE`` or ``~/.cache/recarena``; ``namespace`` separates
    kinds of entries (``"embeddings"``, ``"judgements"``).
    """

    def __init__(self, cache_dir: str | Path | None = None, namespace: str = "embeddings") -> None:
        self.directory = cache_root(cache_dir) / namespace

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def get(self, key: str, rows: int | None = None) -> torch.Tensor | None:
        """The float32 tensor stored under ``key``, or None on a miss or a corrupt file.

        ``rows`` is the expected first dimension; a file with another one counts as corrupt.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            tensor, meta = _parse(data)
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            if meta.get("key") != key:
                raise ValueError("key in header does not match the file name")
            shape = json.loads(meta["shape"])
            if list(tensor.shape) != shape or (rows is not None and tensor.shape[0] != rows):
                raise ValueError(
                    f"shape {list(tensor.shape)} does not match the header {shape} / {rows} rows"
                )
            if _checksum(tensor) != meta["sha256"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, SafetensorError) as error:
            warnings.warn(
                f"corrupt cache file {path} ({error}); rebuilding it", CacheCorruptionWarning, stacklevel=2
            )
            path.unlink(missing_ok=True)
            return None
        return tensor

    def put(self, key: str, tensor: torch.Tensor, info: dict[str, Any] | None = None) -> Path:
        """Store ``tensor`` (as float32, CPU) under ``key`` atomically; ``info`` goes in the header."""
        tensor = tensor.detach().to("cpu", torch.float32).contiguous()
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "shape": json.dumps(list(tensor.shape)),
            "sha256": _checksum(tensor),
            "info": json.dumps(info or {}, sort_keys=True, default=str),
        }
        return atomic_write_bytes(self.path(key), save_safetensors({"values": tensor}, metadata=meta))

    def info(self, key: str) -> dict[str, Any] | None:
        """The ``info`` recorded with an entry (without validating it), or None when absent."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            _, meta = _parse(path.read_bytes())
            return json.loads(meta.get("info", "{}"))
        except (OSError, ValueError, KeyError, SafetensorError):
            return None


def _parse(data: bytes) -> tuple[torch.Tensor, dict[str, str]]:
    """Tensor and header metadata of a safetensors file's bytes (raises on a malformed file)."""
    if len(data) < 8:
        raise ValueError("file too short for a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise ValueError("bad safetensors header length")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    tensors = load_safetensors(data)
    if set(tensors) != {"values"}:
        raise ValueError(f"expected one tensor 'values', found {sorted(tensors)}")
    tensor = tensors["values"]
    if tensor.dtype != torch.float32:
        raise ValueError(f"expected float32, found {tensor.dtype}")
    return tensor, meta
