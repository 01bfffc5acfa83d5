"""recgym: reinforcement-learning recommendation on simulated users built from real logs.

This package holds the pieces every other part shares: errors, seeding, typed configs and
atomic file I/O. The user-facing parts live in the top-level packages ``simulators``, ``envs``,
``agents``, ``llm`` and ``evaluation`` and in the scripts ``train.py`` and ``evaluate.py``.
"""

__version__ = "0.1.0"
