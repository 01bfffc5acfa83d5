"""Write a small synthetic implicit-feedback log (views, clicks, purchases; no ratings) and its data spec.

    python examples/implicit_logs.py data/shop
    python train.py --config configs/implicit_quickstart.yaml --data data/shop/shop.yaml --run-dir runs/shop
    python evaluate.py runs/shop --baseline most_popular --baseline random --out runs/shop/evaluation

The folder gets ``events.csv`` (``uid, sku, ts, event``: ISO 8601 timestamps, no rating column),
``items.csv`` (``sku, name, description, category``) and ``shop.yaml``, the data spec that tells
recarena how to read them::

    path: events.csv
    columns: {user: uid, item: sku, timestamp: ts}
    item_file: items.csv
    item_columns: {item: sku, title: name, text: [description], genres: category}

Users have one or two favourite categories and a taste for popular items; each session walks
through items mostly of those categories, so the next item is predictable from the history (what
the simulator's next-item model learns, and what an agent can learn to recommend).
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

import numpy as np

CATEGORIES = ("garden", "kitchen", "books", "games", "sports", "music")
ADJECTIVES = ("small", "classic", "bright", "quiet", "sturdy", "handy", "vintage", "modern", "light", "deluxe")
EVENTS = ("view", "click", "purchase")

SPEC = """\
# recarena data spec: how to read this folder's implicit-feedback log (README: "Your own logs").
path: events.csv
columns: {user: uid, item: sku, timestamp: ts}   # no rating column: implicit feedback (reward = click)
item_file: items.csv
item_columns: {item: sku, title: name, text: [description], genres: category}
"""


def write_shop(folder: str | Path, n_users: int = 300, n_items: int = 60, seed: int = 0) -> Path:
    """Write ``events.csv``, ``items.csv`` and ``shop.yaml`` into ``folder``; returns the spec file's path."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    category = np.arange(n_items) % len(CATEGORIES)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    rng.shuffle(popularity)

    items = ["sku,name,description,category"]
    for i in range(n_items):
        kind = CATEGORIES[category[i]]
        adjective = ADJECTIVES[i % len(ADJECTIVES)]
        items.append(f"SKU-{i:04d},{adjective.title()} {kind} item {i},A {adjective} thing for {kind} lovers,{kind}")
    (folder / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")

    events = ["uid,sku,ts,event"]
    start = _dt.datetime(2024, 3, 1, 9, 0, 0)
    for user in range(n_users):
        favourites = rng.choice(len(CATEGORIES), size=int(rng.integers(1, 3)), replace=False)
        weight = popularity * np.where(np.isin(category, favourites), 8.0, 1.0)
        length = min(int(rng.integers(6, 16)), n_items)
        seen = rng.choice(n_items, size=length, replace=False, p=weight / weight.sum())
        when = start + _dt.timedelta(days=int(rng.integers(0, 60)), minutes=int(rng.integers(0, 600)))
        for item in seen:
            when += _dt.timedelta(minutes=int(rng.integers(1, 240)))
            events.append(f"u{user:05d},SKU-{item:04d},{when.isoformat()},{EVENTS[int(rng.integers(0, 3))]}")
    (folder / "events.csv").write_text("\n".join(events) + "\n", encoding="utf-8")
    (folder / "shop.yaml").write_text(SPEC, encoding="utf-8")
    return folder / "shop.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="data/shop", help="where to write the files (default data/shop)")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = write_shop(args.folder, args.users, args.items, args.seed)
    print(f"wrote {spec.parent}/events.csv, items.csv and the data spec {spec}; next:")
    print(f"  python train.py --config configs/implicit_quickstart.yaml --data {spec} --run-dir runs/shop")
    print("  python evaluate.py runs/shop --baseline most_popular --baseline random --out runs/shop/evaluation")


if __name__ == "__main__":
    main()
