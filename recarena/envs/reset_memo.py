"""A bounded memo of what the single env's reset computes from (user, prefix length) alone.

A ``-v1`` reset reads the last ``window`` prefix items through the next-item GRU from the zero
state (about 30 GRU steps on ML-100K), computes the catalogue's log-normaliser for that state and
replays the warm-started interest over the starting history: all of it a deterministic function of
the simulator's frozen models and the session's (user, prefix length).
:class:`recarena.envs.single_user_choice.NumpyLearnedChoice` keeps those results here, per simulator,
and a later reset at the same (user, prefix) copies them instead of recomputing them. Since the start
table (``recarena.envs.start_table``: every (user, prefix) computed at once and cached on disk), the
memo serves the resets only where that table is turned off or over its size bound.

One float32 array per ``(user, prefix)``: the GRU state after the reset's read ([dim]), then, once
a reset at that key has run, the rest of the reset (the log-normaliser's shift and log-sum, then the
caller's ``extra``: the warm-started interest), [dim + 2 + len(extra)] in all. A prefix no longer
than the window is read from the user's first item, so the state at prefix ``j`` is the ``j``-th
intermediate state of any longer such read: those are kept too (``chain[user] = n``: the states of
prefixes ``1..n`` are all there), and a read at a longer prefix continues from the longest one kept
instead of from zero (the inputs of each GRU step are computed row by row, so the bits are the same).

**Cost.** ``max_bytes`` (default :data:`MEMO_BYTES`, 64 MiB) bounds the arrays plus
:data:`ENTRY_OVERHEAD` bytes per entry for the Python objects around them (tested with tracemalloc);
when an insertion would pass it, the whole memo is cleared (simple, and the next resets refill it).
At hidden size 64 (ML-100K's and ML-1M's next-item GRU) with 18 topics a full entry counts
336 + 320 bytes (a state-only one 256 + 320; tracemalloc measures less), so 64 MiB holds about
100,000 reset starts: all of ML-100K's 93,399 distinct (user, prefix) starts, a tenth of ML-1M's
(about 1M; there the memo is cleared and refilled now and then). ``max_bytes = 0`` turns it off.

**Safety.** Entries are copies, and a hit copies them out (``np.copyto`` into the env's buffers), so
nothing the env later updates in place can reach the memo. It holds results of exactly the code that
would otherwise run (the same NumPy calls on the same buffers), so results are bit-identical with
and without it (tested). It belongs to one set of the simulator's choice tables, which are rebuilt
- with a new, empty memo - whenever the simulator's choice model or its utility weights object is
replaced (see ``recarena.envs.single_user_choice``); the frozen network is never edited in place
(as ``LearnedChoice.table`` assumes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MEMO_BYTES = 64 * 2**20
"""Default bound of one simulator's memo: arrays plus ENTRY_OVERHEAD per entry."""
ENTRY_OVERHEAD = 320
"""Bytes per entry beyond the array's data: the ndarray object, the key tuple and its ints, the dict slot."""


class ResetMemo:
    """The memo of one simulator's choice tables (see the module docstring); ``dim``: the GRU state's size."""

    def __init__(self, dim: int, max_bytes: int | None = None) -> None:
        self.dim = int(dim)
        self.max_bytes = int(MEMO_BYTES if max_bytes is None else max_bytes)
        self.entries: dict[tuple[int, int], np.ndarray] = {}
        self.chain: dict[int, int] = {}
        """user -> n: the states of prefixes 1..n (each read from the user's first item) are all kept."""
        self.bytes = 0
        self.resets = self.hits = self.extended = self.clears = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self.entries, self.chain = {}, {}
        self.bytes = 0

    def _room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more are kept (counted in ``bytes``); what would pass ``max_bytes``
        clears the memo instead and is not kept."""
        if self.bytes + nbytes > self.max_bytes:
            if self.bytes:
                self.clear()
                self.clears += 1
            return False
        self.bytes += nbytes
        return True

    def full(self, key: tuple[int, int]) -> np.ndarray | None:
        """The entry at ``key`` if a reset there has completed it: [state, shift, log_sum, extra...]."""
        entry = self.entries.get(key)
        return entry if entry is not None and len(entry) > self.dim else None

    def state(self, key: tuple[int, int]) -> np.ndarray:
        """The GRU state kept at ``key`` (a view of the entry: copy it out)."""
        return self.entries[key][: self.dim]

    def put_state(self, key: tuple[int, int], state: np.ndarray) -> None:
        """Keep a copy of the GRU state at ``key``."""
        if key not in self.entries and self._room(state.nbytes + ENTRY_OVERHEAD):
            self.entries[key] = state.copy()

    def put_chain(self, user: int, first: int, states: list[np.ndarray]) -> None:
        """Keep copies of the states of ``user``'s prefixes ``first + 1, first + 2, ...`` (in that
        order), extending ``chain[user]`` (which is ``first``: 0 when absent)."""
        if self.chain.get(user, 0) != first:
            return
        for j, state in enumerate(states, start=first + 1):
            if not self._room(state.nbytes + ENTRY_OVERHEAD):
                return
            self.entries[(user, j)] = state.copy()
            self.chain[user] = j

    def complete(self, key: tuple[int, int], rest: np.ndarray) -> None:
        """Append ``rest`` (float32: shift, log_sum, extra) to the state kept at ``key``, once."""
        entry = self.entries.get(key)
        if entry is not None and len(entry) == self.dim and self._room(rest.nbytes):
            self.entries[key] = np.concatenate([entry, rest])

    def statistics(self) -> dict[str, Any]:
        """Counters (resets seen, exact hits, reads continued from a kept shorter prefix, clears) and size."""
        return {
            "resets": self.resets,
            "hits": self.hits,
            "extended": self.extended,
            "hit_rate": self.hits / self.resets if self.resets else 0.0,
            "clears": self.clears,
            "entries": len(self.entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
        }
