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
_threads_configured = False
"""Whether torch's thread count was set through :func:`configure_torch_threads` in this process."""


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default 1, or ``$RECARENA_TORCH_THREADS``).

    On small shared machines torch with several threads slows down badly when another process
    holds a core, so recarena defaults to one thread; raise it where cores are free. The command
    lines call this at start; library use gets the same default from :func:`default_torch_threads`
    the first time recarena builds a simulator or fits a model, unless this was called first.
    """
    global _threads_configured
    if n_threads is None:
        raw = os.environ.get("RECARENA_TORCH_THREADS", str(DEFAULT_TORCH_THREADS))
        try:
            n_threads = int(raw)
        except ValueError:
            raise ValueError(f"RECARENA_TORCH_THREADS must be a whole number >= 1, got {raw!r}") from None
    if n_threads < 1:
        raise ValueError(f"torch thread count must be >= 1, got {n_threads}")
    torch.set_num_threads(n_threads)
    _threads_configured = True
    return n_threads


def default_torch_threads() -> int:
    """Give torch recarena's default thread count (:func:`configure_torch_threads` without an
    argument: 1, or ``$RECARENA_TORCH_THREADS``) unless it was configured in this process already.

    Called where recarena builds a simulator (``recarena.simulators.make``, so every
    ``gymnasium.make``) or fits or runs a model (preference and next-item fits, the text encoder),
    so library use is as fast as the command lines on a shared machine, where torch's own default
    (one thread per core) slows down 3-10x when another process holds a core. To choose another
    count, call ``configure_torch_threads(n)`` first or set ``RECARENA_TORCH_THREADS``; a bare
    ``torch.set_num_threads`` is overridden at that point. Returns the thread count in use.
    """
    if _threads_configured:
        return torch.get_num_threads()
    return configure_torch_threads()


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
