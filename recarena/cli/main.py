"""The ``recarena`` command: ``recarena train|evaluate|fidelity|sweep ...``.

Each subcommand is the same program as the repository's scripts (``python train.py`` is
``recarena train``, ``python evaluate.py`` is ``recarena evaluate``); ``recarena SUBCOMMAND --help``
lists its options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("recarena.cli.train", "train an agent on simulated users (a run directory with checkpoints)"),
    "evaluate": ("recarena.cli.evaluate", "score runs and baselines on held-out logs and in simulation"),
    "fidelity": ("recarena.cli.fidelity", "how well the simulator's users reproduce held-out logged users"),
    "sweep": ("recarena.cli.sweep", "run configs x seeds on Ray Tune and tabulate them (needs the ray extra)"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: recarena {" + ",".join(SUBCOMMANDS) + "} [options]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "recarena SUBCOMMAND --help shows a subcommand's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's ``main``; exit status 2 for an unknown or missing subcommand."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "--version":
        from importlib.metadata import version

        print(f"recarena {version('recarena')}")
        return 0
    if name not in SUBCOMMANDS:
        print(f"{_usage()}\n\nrecarena: error: unknown subcommand {name!r}; choose from {list(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    command: Callable[..., object] = importlib.import_module(SUBCOMMANDS[name][0]).main
    result = command(rest, prog=f"recarena {name}")
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
