"""User-steps/s of the batched simulator against a per-user Python loop over the same simulator.

For each device and batch size B, B simulated users are stepped together (one slate each, users who
leave are reset, as a vector env does); the baseline steps batch-of-one states one after another in
a plain Python loop (the same simulator, the same work per user), measured in the same run. Prints
medians over repeats and the ratio batched / loop.

    .venv/bin/python bench/simulator_step.py [--data ml-1m|synthetic] [--devices cpu[,cuda]]
        [--batches 1,256,4096,65536] [--slate 1] [--repeats 5] [--threads 1] [--json PATH]

``--data ml-1m`` (default) is the logged-user simulator on the ML-1M leave-last-out training split
with MiniLM item encodings (cached; random 384-d unit vectors with ``--embeddings random``) and a
preference model of the default architecture: loaded from ``--preference DIR`` when given,
otherwise left unfitted - its weights do not change the work of a step. ``--data synthetic`` uses
the synthetic simulator at ML-1M sizes (6,040 users, 3,706 items, 384-d embeddings).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recarena import simulators  # noqa: E402
from recarena.core.io import atomic_write_json  # noqa: E402
from recarena.core.seeding import configure_torch_threads  # noqa: E402


def build(data: str, device: str, args: argparse.Namespace) -> tuple[simulators.Simulator, str]:
    if data == "synthetic":
        sim = simulators.make(
            "synthetic", device=device, n_users=6040, n_items=3706, embedding_dim=384, events_per_user=165
        )
        return sim, "synthetic simulator, ML-1M sizes (6,040 users, 3,706 items, 384-d)"
    from recarena.data.logs import load_logs
    from recarena.data.splits import leave_last_out
    from recarena.simulators.preference import PreferenceConfig, PreferenceModel, user_profiles

    split = leave_last_out(load_logs(data))
    train = split.train
    if args.embeddings == "random":
        g = torch.Generator().manual_seed(0)
        embeddings = torch.nn.functional.normalize(torch.randn(train.n_items, 384, generator=g), dim=1)
    else:
        from recarena.llm.encoder import EncoderConfig, encode_items

        embeddings = encode_items(train.items, EncoderConfig(progress=False))
    if args.preference:
        model = PreferenceModel.load(args.preference, map_location=device, log=train)
        what = f"fitted preference model {args.preference}"
    else:
        model = PreferenceModel(PreferenceConfig(), train.n_users, embeddings, user_profiles(train, embeddings))
        what = "unfitted preference model (default architecture)"
    sim = simulators.make(
        "logged", split, device=device, rating_table=args.rating_table,
        components={"preference_model": model, "item_embeddings": embeddings},
    )
    return sim, f"logged simulator on {data} train split ({train.n_users} users, {train.n_items} items, {train.n_events} events), {what}, {args.embeddings} embeddings, rating_table={args.rating_table}"


def slate_pool(n_items: int, batch: int, k: int, pool: int, device: str, seed: int) -> torch.Tensor:
    """[pool, batch, k] slates of k distinct items (a random start and stride-1 neighbours)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, n_items, (pool, batch, 1), generator=g)
    return ((start + torch.arange(k)) % n_items).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batched(sim, batch: int, steps: int, repeats: int, k: int, device: str) -> list[float]:
    g = torch.Generator(device=device).manual_seed(0)
    state = sim.init_state(batch)
    sim.reset(state, torch.ones(batch, dtype=torch.bool, device=device), g)
    slates = slate_pool(sim.n_items, batch, k, 8, device, seed=1)
    for i in range(3):  # warm-up
        out = sim.step(state, slates[i], g)
        sim.reset(state, out.left, g)
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            out = sim.step(state, slates[i % 8], g)
            sim.reset(state, out.left, g)
        sync(device)
        rates.append(batch * steps / (time.perf_counter() - start))
    return rates


def time_loop(sim, users: int, steps: int, repeats: int, k: int, device: str) -> list[float]:
    """The baseline: batch-of-one states stepped one user at a time in a Python loop."""
    g = torch.Generator(device=device).manual_seed(0)
    one = torch.ones(1, dtype=torch.bool, device=device)
    states = [sim.init_state(1) for _ in range(users)]
    for state in states:
        sim.reset(state, one, g)
    slates = slate_pool(sim.n_items, users, k, 8, device, seed=1).unsqueeze(2)  # [8, users, 1, k]
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            for user, state in enumerate(states):
                out = sim.step(state, slates[i % 8, user], g)
                if bool(out.left):
                    sim.reset(state, one, g)
        sync(device)
        rates.append(users * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m", help="'ml-1m', 'ml-100k' (logged simulator) or 'synthetic'")
    parser.add_argument("--devices", default="cpu", help="comma list: cpu, cuda ('auto' = cpu plus cuda if present)")
    parser.add_argument("--batches", default="1,256,4096,65536")
    parser.add_argument("--slate", type=int, default=1, help="items shown per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="steps per repeat (default: scaled to B)")
    parser.add_argument("--loop-users", type=int, default=256, help="users in the per-user loop baseline")
    parser.add_argument("--loop-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--embeddings", choices=["minilm", "random"], default="minilm")
    parser.add_argument("--preference", default=None, help="directory of a saved PreferenceModel")
    parser.add_argument("--rating-table", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    configure_torch_threads(args.threads)
    devices = args.devices.split(",")
    if devices == ["auto"]:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    for device in devices:
        built = time.perf_counter()
        sim, description = build(args.data, device, args)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {args.threads} torch thread(s)"
        print(f"\n[{device}: {name}] {description}; built in {time.perf_counter() - built:.1f} s; slate size {args.slate}", flush=True)
        loop = statistics.median(time_loop(sim, args.loop_users, args.loop_steps, max(args.repeats // 2, 1), args.slate, device))
        print(f"per-user Python loop ({args.loop_users} users x {args.loop_steps} steps): {loop:,.0f} user-steps/s", flush=True)
        print(f"{'batch':>8} {'user-steps/s':>15} {'loop':>12} {'ratio':>8}", flush=True)
        for batch in batches:
            budget = 2_000_000 if device.startswith("cuda") else 200_000
            steps = args.steps or max(5, min(1000, budget // batch))
            rate = statistics.median(time_batched(sim, batch, steps, args.repeats, args.slate, device))
            print(f"{batch:>8} {rate:>15,.0f} {loop:>12,.0f} {rate / loop:>7.1f}x", flush=True)
            results.append({"device": device, "device_name": name, "batch": batch, "steps": steps,
                            "user_steps_per_s": rate, "loop_user_steps_per_s": loop, "ratio": rate / loop})
        del sim
    if args.json:
        atomic_write_json(args.json, {"data": args.data, "slate": args.slate, "results": results})


if __name__ == "__main__":
    main()
