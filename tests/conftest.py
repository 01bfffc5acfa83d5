"""Shared pytest setup: one torch thread, offline Hugging Face, no GPU assumptions."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from recgym.seeding import configure_torch_threads  # noqa: E402

configure_torch_threads(1)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: longer runs, excluded from the default suite")
