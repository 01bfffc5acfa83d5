"""The one place where random seeds are set.

Every entry point (train.py, evaluate.py, benchmarks, tests) calls :func:`seed_everything` once;
components that need randomness take an explicit ``torch.Generator`` or ``numpy.random.Generator``
derived from that seed instead of touching global state.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from recarena.core.errors import ConfigError, DeviceUnavailableError

DEFAULT_TORCH_THREADS = 1


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default 1, or ``$RECARENA_TORCH_THREADS``).

    On small shared machines torch with several threads slows down badly when another process
    holds a core, so recarena defaults to one thread; raise it where cores are free.
    """
    if n_threads is None:
        n_threads = int(os.environ.get("RECARENA_TORCH_THREADS", DEFAULT_TORCH_THREADS))
    if n_threads < 1:
        raise ValueError(f"torch thread count must be >= 1, got {n_threads}")
    torch.set_num_threads(n_threads)
    return n_threads


def seed_everything(seed: int, deterministic_torch: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators from one integer."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic_torch:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def numpy_generator(seed: int) -> np.random.Generator:
    """A NumPy generator seeded with ``seed``."""
    return np.random.default_rng(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N`` to a torch device; ``auto`` picks CUDA when available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceUnavailableError(
            f"device '{device}' was requested but CUDA is not available here ({build}); use --device cpu or auto"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got '{device}' ({error})") from error
