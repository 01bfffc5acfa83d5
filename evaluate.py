"""Evaluate runs and baselines: ``python evaluate.py RUN_DIR [...] [--baseline NAME ...]``.

A thin entry point kept at the repository root; the command lives in :mod:`recarena.cli.evaluate`
(also installed as ``recarena evaluate``).
"""

from recarena.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
