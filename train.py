"""Train an agent: ``python train.py --config configs/<agent>_<data>.yaml [--set key=value ...]``.

A thin entry point kept at the repository root; the command lives in :mod:`recarena.cli.train`
(also installed as ``recarena train``).
"""

from recarena.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
