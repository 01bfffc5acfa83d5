"""First use of a MovieLens env id: the time of ``gymnasium.make`` with an empty recarena cache.

    nice -n 10 .venv/bin/python bench/first_use.py recarena/ML100K-v1
    nice -n 10 .venv/bin/python bench/first_use.py recarena/ML1M-v1 --json first_use_ml1m.json

``RECARENA_CACHE`` is pointed at a fresh temporary folder (removed at the end; ``--cache DIR`` keeps
an empty DIR of your choosing), so everything the first construction does is timed: reading the
log, encoding the item texts with MiniLM, fitting the preference model and the next-item (choice)
model, fitting the choice utility weights, building the simulator and the learned-choice single env's
reset start table (``recarena.envs.start_table``). The one-time parts are timed
on their own by wrapping the functions the on-disk store calls. A second ``gymnasium.make`` in a
fresh process state (shared simulators forgotten) then loads everything from the cache. torch's
thread count is left to recarena (1, or ``$RECARENA_TORCH_THREADS``), as in library use. Prints
one JSON record with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="e.g. recarena/ML100K-v1, recarena/ML1M-v1")
    parser.add_argument("--cache", default=None, help="an empty folder to use as RECARENA_CACHE (kept)")
    parser.add_argument("--json", default=None, help="also write the record to this file")
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="recarena-first-use-"))
    if cache.exists() and any(cache.iterdir()):
        parser.error(f"--cache {cache} is not empty; first use needs an empty cache")
    os.environ["RECARENA_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    load_before = os.getloadavg()

    import gymnasium as gym
    import torch

    import recarena  # noqa: F401  (registers the ids)
    import recarena.envs.start_table as starts
    import recarena.simulators.preference_store as store
    from recarena.envs.common import clear_simulator_cache

    phases: dict[str, float] = {}

    def timed(name: str, function):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    store.encode_items = timed("encode item texts", store.encode_items)
    store.fit_preference_model = timed("fit preference model", store.fit_preference_model)
    store.fit_next_item_model = timed("fit next-item (choice) model", store.fit_next_item_model)
    starts.build_rows = timed("build reset start table", starts.build_rows)

    started = time.perf_counter()
    env = gym.make(args.env_id)
    first = time.perf_counter() - started
    simulator = env.unwrapped.simulator
    record = {
        "env_id": args.env_id,
        "first_make_s": round(first, 1),
        "phases_s": {name: round(value, 1) for name, value in phases.items()},
        "rest_s": round(first - sum(phases.values()), 1),
        "n_items": int(simulator.n_items),
        "torch_threads": torch.get_num_threads(),
    }
    env.close()
    clear_simulator_cache()
    started = time.perf_counter()
    gym.make(args.env_id).close()
    record["second_make_s"] = round(time.perf_counter() - started, 1)
    record.update(
        load_average_before=[round(v, 2) for v in load_before],
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        cpus=os.cpu_count(),
        nice=os.nice(0),
        platform=platform.platform(),
        torch=torch.__version__,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command="python bench/first_use.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    if not args.cache:
        shutil.rmtree(cache, ignore_errors=True)
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
