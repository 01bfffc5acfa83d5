"""The learned-choice single env's start table (recarena.envs.start_table): every row against the
reads it replaces, the disk cache's hits, misses and key, and rollouts with it against the batched
path and against the env without it.

Tiny learned users (tests/_choice_fixtures.py); a GRU window of 4 so that both kinds of read occur:
from the user's first item (prefix <= window) and a sliding window.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

from recarena.envs import RecommendationEnv
from recarena.envs import start_table as start_table_module
from recarena.envs.reset_memo import MEMO_BYTES
from recarena.envs.single_user_choice import NumpyLearnedChoice, reset_memo, start_table
from recarena.envs.start_table import TABLE_FILE, table_key
from tests._choice_fixtures import WINDOW4, next_in_group
from tests._env_fixtures import assert_same
from tests._learned_env_fixtures import STATE_TOLERANCE, assert_same_state, learned_simulator, pair, rollout


@pytest.fixture(scope="module")
def simulator():
    return learned_simulator(choice=WINDOW4)


def table_of(simulator):
    RecommendationEnv(simulator=simulator)  # builds the choice tables (and the start table) if needed
    table = start_table(simulator)
    assert table is not None and table.enabled
    return table


def test_every_row_equals_the_reads_it_replaces(simulator):
    """Each (user, prefix): the GRU state against the batched path's read (torch) and the NumPy read,
    the normaliser against the NumPy step's, the warm-started interest bit for bit."""
    table = table_of(simulator)
    sampler, choice = simulator.sampler, simulator.choice_model
    offsets = sampler.offsets.numpy()
    env = RecommendationEnv(simulator=simulator)
    step = env._fast
    learned: NumpyLearnedChoice = step._learned
    table.enabled = False
    reset_memo(simulator).max_bytes = 0  # recompute every read
    dim, window = table.dim, choice.window
    checked = {"chain": 0, "sliding": 0}
    rng = np.random.default_rng(0)
    users = rng.choice(len(offsets) - 1, size=12, replace=False)
    try:
        for user in users.tolist():
            for prefix in range(int(offsets[user + 1] - offsets[user]) + 1):
                row = table.entry(user, prefix)
                # The batched path's read: LearnedChoice.initial_state of the last `window` prefix items.
                history, responses = sampler.history(torch.tensor([user]), torch.tensor([prefix]), window)
                torch_state = choice.initial_state(history, responses).numpy()[0]
                np.testing.assert_allclose(row[:dim], torch_state, rtol=0, atol=STATE_TOLERANCE)
                # The NumPy step's reset at the same (user, prefix), without the table.
                step._sample = lambda u=user, p=prefix: (u, p)
                env.reset(seed=0)
                np.testing.assert_allclose(row[:dim], learned.state, rtol=0, atol=STATE_TOLERANCE)
                np.testing.assert_allclose(row[dim : dim + 2], [learned._shift, learned._log_sum], rtol=1e-5, atol=1e-5)
                np.testing.assert_array_equal(row[dim + 2 :], step._interest)  # exactly
                checked["chain" if prefix <= window else "sliding"] += 1
    finally:
        table.enabled = True
        reset_memo(simulator).max_bytes = MEMO_BYTES
    assert checked["chain"] >= 40 and checked["sliding"] >= 40
    assert len(table.data) == int(offsets[-1]) + len(offsets) - 1  # prefixes 0..length of every user


def assert_close_traces(a: list, b: list) -> None:
    """Rollouts (tests/test_reset_memo.py) equal, the GRU states after each step to the state tolerance."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray):  # (GRU state, interest)
            np.testing.assert_allclose(x[0], y[0], rtol=0, atol=STATE_TOLERANCE)
            np.testing.assert_array_equal(x[1], y[1])
        else:
            assert_same(x, y)  # observations, rewards, flags, infos: exactly


def test_rollouts_with_the_table_equal_the_batched_path_and_the_env_without_it(simulator):
    fast, slow = pair(simulator, slate_size=2, max_steps=3)
    table, memo = table_of(simulator), reset_memo(simulator)
    resets, memo_resets = table.resets, memo.resets
    with_table = rollout(fast, 0, 500)
    assert table.resets - resets >= 150 and memo.resets == memo_resets  # every reset from the table
    assert_close_traces(with_table, rollout(slow, 0, 500))
    assert_same_state(fast, slow)
    table.enabled = False
    try:
        without = rollout(fast, 0, 500)
    finally:
        table.enabled = True
    assert memo.resets > memo_resets
    assert_close_traces(with_table, without)
    # Deterministic: the same seed, the same rollout, bit for bit.
    assert_same(with_table, rollout(fast, 0, 500))


def test_the_table_is_cached_on_disk_and_keyed_by_what_it_depends_on(tmp_path):
    sim = learned_simulator(choice=WINDOW4, cache_dir=str(tmp_path))
    first = table_of(sim)
    assert first.build_seconds > 0 and first.path is not None and first.path.is_file()
    assert str(first.path).startswith(str(tmp_path / "starts"))
    # Another simulator of the same data and models: loaded (a hit), the same rows, memory-mapped.
    twin = learned_simulator(choice=WINDOW4, cache_dir=str(tmp_path))
    twin.choice_model = copy.deepcopy(sim.choice_model)
    loaded = table_of(twin)
    assert loaded.build_seconds == 0.0 and loaded.path == first.path
    assert not loaded.data.flags.writeable and isinstance(loaded.data.base, np.memmap)
    np.testing.assert_array_equal(loaded.data, first.data)
    key = table_key(sim, _tables_of(sim))
    assert table_key(twin, _tables_of(twin)) == key
    # What changes the rows changes the key: the GRU's weights, the history length (interest replay).
    changed = copy.deepcopy(sim.choice_model)
    with torch.no_grad():
        changed.model.network.gru.weight_hh_l0.mul_(-1.0)
    twin.choice_model = changed
    rebuilt = table_of(twin)  # new choice tables: a miss, built and saved under another key
    assert rebuilt.build_seconds > 0 and rebuilt.path != first.path
    assert not np.allclose(rebuilt.data[:, : rebuilt.dim], first.data[:, : first.dim], atol=1e-3)
    longer = learned_simulator(choice=WINDOW4, cache_dir=str(tmp_path), history_length=9)
    longer.choice_model = copy.deepcopy(sim.choice_model)
    assert table_key(longer, _tables_of(sim)) != key
    # Utility weights do not enter the rows: new weights, new choice tables, the same table kept.
    from recarena.simulators.choice import UtilityWeights

    sim.choice_model.weights = UtilityWeights(choice=0.5, rating=1.5, boredom=-0.3, no_choice=-0.5)
    assert table_of(sim) is first and table_key(sim, _tables_of(sim)) == key
    # A save without its meta file (an interrupted one) is rebuilt, not read.
    (first.path.parent / start_table_module.META_FILE).unlink()
    fresh = learned_simulator(choice=WINDOW4, cache_dir=str(tmp_path))
    fresh.choice_model = copy.deepcopy(sim.choice_model)
    assert table_of(fresh).build_seconds > 0 and (first.path.parent / TABLE_FILE).is_file()


def _tables_of(simulator):
    from recarena.envs.single_user_choice import _tables

    return _tables(simulator)


def test_a_table_over_the_bound_is_not_built_and_the_memo_serves(monkeypatch, capsys):
    sim = learned_simulator(choice=WINDOW4)
    monkeypatch.setattr(start_table_module, "MAX_TABLE_BYTES", 1000)
    fast, slow = pair(sim, slate_size=2, max_steps=3)
    assert start_table(sim) is None
    assert "over recarena.envs.start_table.MAX_TABLE_BYTES" in capsys.readouterr().err
    assert_close_traces(rollout(fast, 1, 200), rollout(slow, 1, 200))
    assert reset_memo(sim).statistics()["resets"] >= 50


def test_an_env_on_the_table_passes_the_env_checker(simulator):
    env = RecommendationEnv(simulator=simulator, slate_size=2)
    before = table_of(simulator).resets
    gym_check_env(env, skip_render_check=True)
    assert table_of(simulator).resets > before


def test_a_table_reset_scores_the_slate_alone_until_a_click(simulator):
    """After a reset from the table the catalogue's logits wait for the next click: the slate's
    utilities (a consumed item -inf) equal the full computation's, and a click rebuilds the block."""
    env = RecommendationEnv(simulator=simulator, slate_size=3, max_steps=50)
    learned: NumpyLearnedChoice = env._fast._learned
    rng = np.random.default_rng(1)
    zeros = np.zeros(3, dtype=np.float32)
    clicked = 0
    for seed in range(20):
        env.reset(seed=seed)
        assert learned._lazy
        consumed = np.flatnonzero(learned.consumed)
        free = np.setdiff1d(np.arange(len(learned.consumed)), consumed)
        slate = np.array([consumed[0], *rng.choice(free, 2, replace=False)])
        lazy = learned.utilities(slate, zeros, zeros)
        learned.refresh()  # the catalogue's logits and normaliser, as without the table
        assert not learned._lazy and lazy[0] == -np.inf
        np.testing.assert_allclose(lazy, learned.utilities(slate, zeros, zeros), rtol=1e-5, atol=1e-5)
        env.reset(seed=seed)
        last = int(env._fast._history[-1])
        step = env.step(np.array([next_in_group(last), *rng.choice(free, 2, replace=False)]))
        if step[4]["clicked"]:
            clicked += 1
            assert not learned._lazy
            np.testing.assert_array_equal(learned._blocked, np.where(learned.consumed, -np.inf, 0.0))
    assert clicked >= 5


def test_the_rows_do_not_depend_on_the_chunk_size(simulator, monkeypatch):
    """Chunks of 2 rows (128-row interest blocks) against one chunk: the interest exactly, the rest to
    float32 rounding (the batched GRU's kernels may round a bigger batch differently)."""
    from recarena.envs.single_user_choice import _tables

    tables = _tables(simulator)
    monkeypatch.setattr(start_table_module, "CHUNK", 10**6)
    whole = start_table_module.build_rows(simulator, tables)
    monkeypatch.setattr(start_table_module, "CHUNK", 2)
    chunked = start_table_module.build_rows(simulator, tables)
    dim = tables.dim
    assert len(whole) > 128
    np.testing.assert_array_equal(chunked[:, dim + 2 :], whole[:, dim + 2 :])
    np.testing.assert_allclose(chunked[:, :dim], whole[:, :dim], rtol=0, atol=STATE_TOLERANCE)
    np.testing.assert_allclose(chunked[:, dim : dim + 2], whole[:, dim : dim + 2], rtol=1e-5, atol=1e-5)
