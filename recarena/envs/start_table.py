"""Every reset start of the learned-choice single env, computed batched once and cached on disk.

A ``-v1`` (and ``-v2``) reset at (user, prefix length) reads the last ``window`` prefix items through
the next-item GRU from the zero state, computes the catalogue's log-normaliser for that state and
replays the warm-started interest over the starting history: a deterministic function of the frozen
models and the (user, prefix) alone. :func:`start_table` computes it for *every* (user, prefix) of
the sampler's log (prefixes ``0..length``: whatever the sampler's bounds, each one it can draw is
there), so the reset copies one row instead of running about 30 GRU steps
(:class:`recarena.envs.single_user_choice.NumpyLearnedChoice.recall`).

**Layout.** One float32 row per (user, prefix) in user order, row ``offsets[user] + user + prefix``:
``[GRU state (dim), shift, log_sum, interest (n_topics, with warm_interest)]`` - the reset memo's
entry layout (``recarena.envs.reset_memo``); ``log_p = (logits - shift) - log_sum``.

**How it is computed** (batched, torch with one thread, chunks of :data:`CHUNK` rows): prefixes up
to the window are the intermediate states of one ``nn.GRU`` pass over each user's first ``window``
items; longer ones are ``nn.GRU`` passes over their ``window``-item sliding reads. These are torch's
GRU kernels, as the batched path's ``NextItemGRU.encode``: the state agrees with it (and with the
NumPy read) to float32 rounding (~1e-6), not bit for bit - the tolerance the NumPy step already has
(``recarena.envs.single_user_choice``). The normaliser is ``h @ (A V^T) + b`` with the NumPy step's
own float32 tables, consumed items masked where the model excludes them. The interest replay is the
NumPy step's float32 operations elementwise over all rows at once: bit-identical.

**Cache.** Building costs 5.7 s on ML-100K (99k rows) and 52.6 CPU-s on ML-1M (994k rows; 2-core
VM, docs/benchmarks.md), so the table is saved under ``$RECARENA_CACHE/starts/<n_users>u-<key>/`` (``starts.npy``, then ``meta.json`` last: its
presence marks a complete save; atomic writes) and later loads memory-mapped: the pages a process
touches are read from disk and shared between processes. ``key`` hashes the code's
:data:`FORMAT_VERSION`, the next-item network's weights, the sampler's log (offsets, items, ratings),
the interest model's parameters and the simulator's history length.

The rows do not depend on the utility weights or the rating model, so ``-v1`` and ``-v2`` share a table.

**Size.** ``rows * (dim + 2 + n_topics) * 4`` bytes: 34 MB on ML-100K, 334 MB on ML-1M (hidden size
64, 18 topics). A table over :data:`MAX_TABLE_BYTES` is not built: the env falls back to the reset
memo, as does a table turned off (``enabled = False``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.core.io import atomic_write, atomic_write_json
from recarena.llm.models import cache_root

FORMAT_VERSION = 1
"""Bump when what a row holds or how it is computed changes (part of the cache key)."""
MAX_TABLE_BYTES = 1024 * 2**20
"""Largest table built (bytes of the file); a larger one is not built and the reset memo is used (0: never built)."""
CHUNK = 512
"""Rows per batched GRU pass and normaliser: ~7 MB of temporaries at ML-1M's catalogue, small enough
for the allocator to reuse them (4,096-row chunks spent a third of the build in page faults)."""
ANNOUNCE_ROWS = 20_000
"""Tables of at least this many rows say on stderr that they are built once, and where they go."""
TABLE_FILE, META_FILE = "starts.npy", "meta.json"


class StartTable:
    """The rows of every (user, prefix) of one simulator (see the module docstring)."""

    def __init__(self, data: np.ndarray, first_row: np.ndarray, dim: int, simulator: Any, path: Path | None) -> None:
        self.data = data
        self.first_row = first_row
        self.dim = int(dim)
        self.sampler, self.history_length = simulator.sampler, int(simulator.history_length)
        self.path = path
        self.enabled = True
        """False: resets read the GRU (and the reset memo) again, as without a table."""
        self.resets = 0
        self.build_seconds = 0.0

    def serves(self, simulator: Any) -> bool:
        """Whether resets of ``simulator`` read this table: it is on and still belongs to the
        simulator's sampler and history length."""
        return self.enabled and self.sampler is simulator.sampler and self.history_length == simulator.history_length

    def entry(self, user: Any, prefix: Any) -> np.ndarray:
        """The row of (``user``, ``prefix``): [state, shift, log_sum, interest...] (a read-only view:
        copy it out), or, for int64 arrays of users and prefixes, a copy of their rows."""
        return self.data[self.first_row[user] + prefix]

    def statistics(self) -> dict[str, Any]:
        return {"resets": self.resets, "rows": len(self.data), "bytes": int(self.data.nbytes),
                "path": None if self.path is None else str(self.path), "build_seconds": self.build_seconds}


def start_table(simulator: Any, tables: Any, cache_dir: str | Path | None = None) -> StartTable | None:
    """The start table of ``simulator`` with the NumPy choice ``tables``
    (``recarena.envs.single_user_choice._Tables``): loaded from the cache, else built (and saved);
    None when it would exceed :data:`MAX_TABLE_BYTES`."""
    offsets = simulator.sampler.offsets.numpy()
    n_users = len(offsets) - 1
    first_row, rows = row_layout(offsets)
    warm = bool(simulator.choice_model.warm_interest)
    width = tables.dim + 2 + (int(simulator.interest_model.topic_weights.shape[1]) if warm else 0)
    if MAX_TABLE_BYTES <= 0:  # turned off
        return None
    if rows * width * 4 > MAX_TABLE_BYTES:
        print(f"recarena: the reset start table would take {rows * width * 4 / 2**20:,.0f} MiB "
              f"(over recarena.envs.start_table.MAX_TABLE_BYTES); resets are computed as without the table (the single env keeps its reset memo)",
              file=sys.stderr, flush=True)
        return None
    if cache_dir is None:
        cache_dir = getattr(getattr(simulator, "config", None), "cache_dir", None)
    directory = cache_root(cache_dir) / "starts" / f"{n_users}u-{table_key(simulator, tables)}"
    loaded = _load(directory, rows, width)
    if loaded is not None:
        return StartTable(loaded, first_row, tables.dim, simulator, directory / TABLE_FILE)
    if rows >= ANNOUNCE_ROWS:
        print(f"recarena: computing the learned-choice env's {rows:,} reset starts once (GRU state, "
              f"normaliser, interest); they are cached in {directory}", file=sys.stderr, flush=True)
    began = time.process_time()
    data = build_rows(simulator, tables)
    seconds = time.process_time() - began
    path: Path | None = directory / TABLE_FILE
    try:
        atomic_write(directory / TABLE_FILE, lambda tmp: _save_npy(tmp, data))
        atomic_write_json(directory / META_FILE, {"format_version": FORMAT_VERSION, "rows": rows, "width": width,
                                                  "build_cpu_seconds": seconds})
        data = _load(directory, rows, width)  # memory-mapped, like a later process's
    except OSError as error:  # an unwritable cache: keep the table in memory
        print(f"recarena: cannot cache the reset start table in {directory}: {error}", file=sys.stderr, flush=True)
        path = None
    table = StartTable(data, first_row, tables.dim, simulator, path)
    table.build_seconds = seconds
    return table


def row_layout(offsets: np.ndarray) -> tuple[np.ndarray, int]:
    """(first row of each user, number of rows) of a table over a log with these user ``offsets``:
    (user, prefix) is row ``offsets[user] + user + prefix``, prefixes ``0..length``."""
    n_users = len(offsets) - 1
    return offsets[:-1] + np.arange(n_users, dtype=np.int64), int(offsets[-1]) + n_users


def _save_npy(path: Path, data: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, data)


def _load(directory: Path, rows: int, width: int) -> np.ndarray | None:
    """The cached rows, memory-mapped, if a complete save of this shape is there."""
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            return None
        data = np.load(directory / TABLE_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if data.shape != (rows, width) or data.dtype != np.float32:
        return None
    return np.asarray(data)  # a plain ndarray view of the map (row reads cost less than a memmap's)


def table_key(simulator: Any, tables: Any) -> str:
    """What the rows depend on, hashed: code version, network weights, sampler log, interest, history length."""
    digest = hashlib.sha256()

    def add(name: str, value: Any) -> None:
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())

    choice = simulator.choice_model
    network = choice.model.network
    add("format", FORMAT_VERSION)
    for name, tensor in sorted(network.state_dict().items()):
        add(name, tensor)
    add("model", [int(choice.window), bool(choice.model.exclude_consumed), bool(network.config.use_responses)])
    sampler = simulator.sampler
    add("offsets", sampler.offsets)
    add("item", sampler.item)
    add("rating", sampler.rating)
    interest = simulator.interest_model
    config = interest.config
    add("interest", [float(config.fatigue_decay), float(config.fatigue_gain), float(config.max_fatigue),
                     bool(choice.warm_interest), int(simulator.history_length)])
    add("topics", interest.topic_weights)
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------ building


def build_rows(simulator: Any, tables: Any) -> np.ndarray:
    """Float32 [rows, width]: every (user, prefix)'s row (module docstring), computed batched."""
    sampler = simulator.sampler
    offsets, items, ratings = sampler.offsets.numpy(), sampler.item.numpy(), sampler.rating.numpy()
    n_users = len(offsets) - 1
    lengths = np.diff(offsets)
    first_row, rows = row_layout(offsets)
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), lengths + 1)
    prefix_of = np.arange(rows, dtype=np.int64) - first_row[user_of]
    warm = bool(simulator.choice_model.warm_interest)
    n_topics = int(simulator.interest_model.topic_weights.shape[1]) if warm else 0
    dim = tables.dim
    out = np.zeros((rows, dim + 2 + n_topics), dtype=np.float32)
    with torch.no_grad():
        _gru_states(simulator, tables, offsets, items, ratings, first_row, user_of, prefix_of, out[:, :dim])
    _normalisers(tables, offsets, items, user_of, prefix_of, out)
    if warm:
        _interest(simulator, offsets, items, user_of, prefix_of, out[:, dim + 2 :])
    return out


def _gru_states(
    simulator: Any, tables: Any, offsets: np.ndarray, items: np.ndarray, ratings: np.ndarray,
    first_row: np.ndarray, user_of: np.ndarray, prefix_of: np.ndarray, states: np.ndarray,
) -> None:
    """The GRU state after each prefix's read of its last ``window`` items from the zero state."""
    choice = simulator.choice_model
    network, window = choice.model.network, tables.window
    network.eval()
    vectors = choice.table()[0]
    item_t, rating_t = torch.from_numpy(items), torch.from_numpy(ratings)
    lengths = np.diff(offsets)
    steps = np.arange(window, dtype=np.int64)

    def run(events: np.ndarray, valid: np.ndarray | None) -> torch.Tensor:
        """nn.GRU over rows of event indices [R, window] (``valid``: right padding); outputs [R, window, dim]."""
        index = torch.from_numpy(events)
        seq_items, seq_ratings = item_t[index], rating_t[index]
        if valid is not None:
            mask = torch.from_numpy(valid)
            seq_items, seq_ratings = seq_items.masked_fill(~mask, 0), seq_ratings.masked_fill(~mask, 0.0)
        return network.sequence_states(seq_items, seq_ratings, vectors)  # (eval: no dropout)

    # Prefixes 1..min(length, window): the intermediate states of one pass over each user's first items.
    users = np.flatnonzero(lengths > 0)
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        valid = steps[None, :] < lengths[chunk, None]
        events = np.minimum(offsets[chunk, None] + steps[None, :], max(len(items) - 1, 0))
        output = run(events, valid).numpy()
        rows, positions = np.nonzero(valid)
        states[first_row[chunk][rows] + positions + 1] = output[rows, positions]
    # Longer prefixes: a read of their last `window` items each.
    longer = np.flatnonzero(prefix_of > window)
    for start in range(0, len(longer), CHUNK):
        chunk = longer[start : start + CHUNK]
        first_event = offsets[user_of[chunk]] + prefix_of[chunk] - window
        output = run(first_event[:, None] + steps[None, :], None)
        states[chunk] = output[:, -1].numpy()


def _normalisers(
    tables: Any, offsets: np.ndarray, items: np.ndarray, user_of: np.ndarray, prefix_of: np.ndarray, out: np.ndarray
) -> None:
    """Each row's (shift, log_sum) of ``logits = h @ scores + bias`` over the items it may still choose,
    as ``NumpyLearnedChoice.refresh`` (shift = the largest allowed logit; both 0 when none is allowed)."""
    dim = tables.dim
    scores, bias = torch.from_numpy(tables.scores), torch.from_numpy(tables.bias)
    n_items = len(tables.bias)
    for start in range(0, len(out), CHUNK):
        stop = min(start + CHUNK, len(out))
        logits = torch.from_numpy(np.ascontiguousarray(out[start:stop, :dim])) @ scores + bias
        if tables.exclude_consumed:
            prefix = prefix_of[start:stop]
            total = int(prefix.sum())
            row = np.repeat(np.arange(stop - start), prefix)
            within = np.arange(total) - np.repeat(np.cumsum(prefix) - prefix, prefix)
            consumed = items[offsets[user_of[start:stop]][row] + within]
            mask = torch.zeros(stop - start, n_items, dtype=torch.bool)
            mask[torch.from_numpy(row), torch.from_numpy(consumed)] = True
            logits.masked_fill_(mask, float("-inf"))
        shift = logits.max(dim=1).values
        none = torch.isneginf(shift)
        shift = shift.masked_fill(none, 0.0)
        log_sum = (logits - shift[:, None]).exp_().sum(dim=1).log_().masked_fill_(none, 0.0)
        out[start:stop, dim] = shift.numpy()
        out[start:stop, dim + 1] = log_sum.numpy()


def _interest(
    simulator: Any, offsets: np.ndarray, items: np.ndarray, user_of: np.ndarray, prefix_of: np.ndarray,
    interest: np.ndarray,
) -> None:
    """``InterestModel.replay`` of each row's last ``history_length`` prefix items, as the NumPy step runs
    it (decay, add the item's gain row, clamp; float32, oldest item first), over all rows at once."""
    config = simulator.interest_model.config
    f32 = np.float32
    decay, gain = f32(config.fatigue_decay), f32(True) * f32(config.fatigue_gain)
    high = f32(config.max_fatigue)
    low = -high
    gain_rows = simulator.interest_model.topic_weights.numpy() * gain
    h = int(simulator.history_length)
    for start in range(0, len(interest), 64 * CHUNK):  # row blocks: small temporaries, as in _normalisers
        block = slice(start, start + 64 * CHUNK)
        base, prefix, out = offsets[user_of[block]], prefix_of[block], interest[block]
        for step in range(h):  # the step-th item of a read of h items (absent for a shorter prefix)
            position = prefix - h + step
            rows = np.flatnonzero(position >= 0)
            if not len(rows):
                continue
            values = out[rows] * decay
            values += gain_rows[items[base[rows] + position[rows]]]
            # The NumPy step clamps only where the clamp can bind; where it cannot, it changes no bit.
            np.minimum(np.maximum(values, low, out=values), high, out=values)
            out[rows] = values
