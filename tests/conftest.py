"""Shared pytest setup: one torch thread, offline Hugging Face, no GPU assumptions."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Stock SB3 models without a logger of their own create a fresh /tmp/SB3-<time> folder per learn();
# point them all at one folder of this session instead.
_SB3_LOGDIR = tempfile.mkdtemp(prefix="recarena-tests-sb3-")
os.environ.setdefault("SB3_LOGDIR", _SB3_LOGDIR)

from recarena.core.seeding import configure_torch_threads  # noqa: E402

configure_torch_threads(1)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: longer runs, excluded from the default suite")


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_SB3_LOGDIR, ignore_errors=True)
