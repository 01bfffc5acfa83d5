"""Tests of the batched user simulator: behaviour parts, synthetic and logged users, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recarena import simulators
from recarena.core.errors import ConfigError
from recarena.data.interactions import InteractionLog, ItemMetadata, LogSplit
from recarena.simulators.behaviour import (
    REWARDS,
    ChoiceConfig,
    ChoiceModel,
    InterestConfig,
    InterestModel,
    LeaveConfig,
    LeaveModel,
    SamplerConfig,
    UserSampler,
    kmeans_topics,
    respond,
)
from recarena.simulators.logged import LoggedConfig, LoggedUserSimulator
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def started(sim, batch: int, seed: int = 0):
    state = sim.init_state(batch)
    g = gen(seed)
    sim.reset(state, torch.ones(batch, dtype=torch.bool), g)
    return state, g


# ------------------------------------------------------------------------------- choice model


def test_choice_picks_at_most_one_valid_slot():
    sim = SyntheticSimulator(SyntheticConfig(n_users=30, n_items=40))
    state, g = started(sim, 64)
    slate = torch.stack([torch.randperm(40, generator=g)[:4] for _ in range(64)])
    out = sim.step(state, slate, g)
    assert out.chosen_slot.shape == (64,)
    assert bool(((out.chosen_slot >= -1) & (out.chosen_slot < 4)).all())
    chosen = out.chosen_slot >= 0
    assert torch.equal(out.clicked, chosen)
    assert torch.equal(out.item[chosen], slate[chosen, out.chosen_slot[chosen]])
    assert bool((out.item[~chosen] == -1).all()) and bool((out.response[~chosen] == 0).all())
    assert bool((out.response[chosen] >= 1).all()) and bool((out.response[chosen] <= 5).all())


def test_choice_frequencies_match_logit_probabilities():
    model = ChoiceModel(ChoiceConfig(temperature=0.7, no_choice_rating=3.0))
    response = torch.tensor([[4.5, 3.0, 2.0]]).repeat(40_000, 1)
    probs = model.probabilities(response[:1])[0]
    expected = torch.softmax(torch.tensor([4.5, 3.0, 2.0, 3.0]) / 0.7, 0)
    assert torch.allclose(probs, expected, atol=1e-6)
    slot = model.choose(response, gen(1))
    counts = torch.bincount(torch.where(slot < 0, torch.full_like(slot, 3), slot), minlength=4).double()
    freq = counts / len(slot)
    sigma = torch.sqrt(expected.double() * (1 - expected.double()) / len(slot))
    assert bool(((freq - expected.double()).abs() < 5 * sigma).all()), (freq, expected)


def test_slate_of_one_is_a_click_probability():
    model = ChoiceModel(ChoiceConfig(temperature=0.5, no_choice_rating=3.0))
    p = model.probabilities(torch.tensor([[4.0]]))[0, 0].item()
    assert p == pytest.approx(1 / (1 + math.exp(-(4.0 - 3.0) / 0.5)), rel=1e-6)


def test_lower_temperature_is_more_deterministic():
    response = torch.tensor([[4.0, 3.5]])
    hot = ChoiceModel(ChoiceConfig(temperature=5.0)).probabilities(response)[0, 0]
    cold = ChoiceModel(ChoiceConfig(temperature=0.1)).probabilities(response)[0, 0]
    assert cold > 0.99 > hot


# ------------------------------------------------------------------------------- interest / boredom


def test_fatigue_rises_on_consumed_topic_and_decays():
    topics = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model = InterestModel(InterestConfig(fatigue_gain=1.0, fatigue_decay=0.5, boredom_penalty=2.0), topics)
    interest = torch.zeros(1, 2)
    interest = model.update(interest, torch.tensor([0]), torch.tensor([True]), gen())
    assert torch.allclose(interest, torch.tensor([[1.0, 0.0]]))
    interest = model.update(interest, torch.tensor([2]), torch.tensor([True]), gen())  # spread over 2 topics
    assert torch.allclose(interest, torch.tensor([[1.0, 0.5]]))
    interest = model.update(interest, torch.tensor([-1]), torch.tensor([False]), gen())  # no click: decay only
    assert torch.allclose(interest, torch.tensor([[0.5, 0.25]]))
    penalty = model.penalty(interest, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(penalty, torch.tensor([[1.0, 0.5, 0.75]]))
    assert torch.allclose(respond(torch.tensor([[4.0, 1.2, 5.0]]), penalty), torch.tensor([[3.0, 1.0, 4.25]]))


def _like_rate_repeating_one_topic(boredom_penalty: float) -> float:
    config = SyntheticConfig(
        n_users=100, n_items=60, n_topics=3, sharpness=2.0,
        interest=InterestConfig(boredom_penalty=boredom_penalty, fatigue_decay=0.9),
        leave=LeaveConfig(initial_patience=100.0, max_patience=100.0),
    )
    sim = SyntheticSimulator(config)
    state, g = started(sim, 500)
    # Each user's favourite topic, then always that topic's best item for the user.
    best_topic = torch.stack([sim.true_ratings[:, sim.item_topic == t].mean(1) for t in range(3)], 1).argmax(1)
    likes = 0.0
    for _ in range(15):
        scores = sim.true_ratings[state.user].clone()
        scores[sim.item_topic.unsqueeze(0) != best_topic[state.user].unsqueeze(1)] = -1e9
        likes += sim.step(state, scores.argmax(1, keepdim=True), g).liked.float().mean().item()
    return likes / 15


def test_boredom_lowers_like_rate_under_repetition():
    fresh = _like_rate_repeating_one_topic(0.0)
    bored = _like_rate_repeating_one_topic(1.0)
    assert fresh > 0.5
    assert bored < fresh - 0.2, (fresh, bored)


def test_drift_uses_the_generator():
    model = InterestModel(InterestConfig(drift=0.1), torch.eye(3))
    a = model.update(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool), gen(3))
    b = model.update(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool), gen(3))
    assert torch.equal(a, b) and a.abs().sum() > 0


def test_kmeans_topics_are_one_hot_and_separate_clusters():
    g = gen(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=1) * 10
    data = torch.cat([centres[i] + 0.1 * torch.randn(20, 16, generator=g) for i in range(3)])
    topics = kmeans_topics(data, 3, seed=0)
    assert topics.shape == (60, 3) and torch.equal(topics.sum(1), torch.ones(60))
    labels = topics.argmax(1)
    for i in range(3):
        assert len(set(labels[20 * i : 20 * (i + 1)].tolist())) == 1
    assert len(set(labels.tolist())) == 3


# ------------------------------------------------------------------------------- leave model


def test_patience_bookkeeping():
    model = LeaveModel(LeaveConfig(initial_patience=2.0, no_click_cost=1.0, dislike_cost=0.5, like_bonus=0.25, max_patience=2.1))
    patience = model.initial(4, torch.device("cpu"))
    clicked = torch.tensor([False, True, True, True])
    liked = torch.tensor([False, False, True, True])
    patience, left = model.update(patience, clicked, liked, gen())
    assert torch.allclose(patience, torch.tensor([1.0, 1.5, 2.1, 2.1]))  # like bonus capped at max
    assert not bool(left.any())
    patience, left = model.update(patience, torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool), gen())
    patience, left = model.update(patience, torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool), gen())
    assert left.tolist() == [True, True, False, False]
    assert bool((patience >= 0).all())


def test_hazard_leaves_at_its_rate():
    model = LeaveModel(LeaveConfig(hazard=0.1))
    n = 50_000
    patience, left = model.update(model.initial(n, torch.device("cpu")), torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool), gen())
    assert abs(left.float().mean().item() - 0.1) < 5 * math.sqrt(0.09 / n)


def test_users_leave_and_sessions_end():
    sim = SyntheticSimulator(SyntheticConfig(n_users=50, n_items=40))
    state, g = started(sim, 200)
    worst = sim.true_ratings[state.user].argmin(1, keepdim=True)
    ever_left = torch.zeros(200, dtype=torch.bool)
    for _ in range(30):
        ever_left |= sim.step(state, worst, g).left
    assert bool(ever_left.all())
    assert sim.statistics()["leaves"] >= 200


# ------------------------------------------------------------------------------- rewards


def test_reward_functions():
    clicked = torch.tensor([True, True, False])
    liked = torch.tensor([True, False, False])
    response = torch.tensor([5.0, 2.0, 0.0])
    assert REWARDS["click"](clicked, liked, response).tolist() == [1.0, 1.0, 0.0]
    assert REWARDS["like"](clicked, liked, response).tolist() == [1.0, 0.0, 0.0]
    assert REWARDS["rating"](clicked, liked, response).tolist() == [5.0, 2.0, 0.0]
    assert REWARDS["dwell"](clicked, liked, response).tolist() == pytest.approx([1.0, 0.4, 0.0])


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_step_reward_matches_named_function(reward):
    sim = SyntheticSimulator(SyntheticConfig(n_users=20, n_items=30, reward=reward))
    state, g = started(sim, 32)
    out = sim.step(state, torch.randint(0, 30, (32, 2), generator=g), g)
    assert torch.equal(out.reward, REWARDS[reward](out.clicked, out.liked, out.response))
    assert out.reward.dtype == torch.float32


# ------------------------------------------------------------------------------- state, reset, determinism


def rollout(seed: int, steps: int = 12):
    sim = SyntheticSimulator(SyntheticConfig(n_users=40, n_items=50, interest=InterestConfig(drift=0.05), leave=LeaveConfig(hazard=0.05)))
    state, g = started(sim, 16, seed)
    outs = []
    for _ in range(steps):
        slate = torch.randint(0, 50, (16, 3), generator=g)
        out = sim.step(state, slate, g)
        outs.append(out)
        sim.reset(state, out.left, g)
    return state, outs


def test_same_seed_rollouts_are_identical_and_seeds_differ():
    state_a, outs_a = rollout(7)
    state_b, outs_b = rollout(7)
    for a, b in zip(outs_a, outs_b, strict=True):
        for name in ("chosen_slot", "item", "response", "reward", "left", "liked"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    for name in ("user", "history", "history_response", "consumed", "interest", "patience", "step"):
        assert torch.equal(getattr(state_a, name), getattr(state_b, name))
    _, outs_c = rollout(8)
    assert any(not torch.equal(a.item, c.item) for a, c in zip(outs_a, outs_c, strict=True))


def test_reset_of_masked_rows_leaves_others_untouched():
    sim = SyntheticSimulator(SyntheticConfig(n_users=40, n_items=50))
    state, g = started(sim, 10)
    for _ in range(3):
        sim.step(state, torch.randint(0, 50, (10, 2), generator=g), g)
    before = state.clone()
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4]] = True
    sim.reset(state, mask, g)
    for name in ("user", "history", "history_response", "consumed", "interest", "patience", "step"):
        after = getattr(state, name)
        assert torch.equal(after[~mask], getattr(before, name)[~mask]), name
    assert bool((state.step[mask] == 0).all()) and bool((state.interest[mask] == 0).all())
    assert bool((state.patience[mask] == sim.config.leave.initial_patience).all())


def test_start_history_and_consumed_come_from_the_prefix():
    config = SyntheticConfig(n_users=30, n_items=50, events_per_user=20, history_length=8)
    sim = SyntheticSimulator(config)
    state, _ = started(sim, 64)
    items = sim.sampler.item.view(30, 20)
    assert bool((state.prefix_length >= config.sampler.min_prefix).all())
    assert bool((state.prefix_length <= 20 - config.sampler.min_future).all())
    for row in range(64):
        user, prefix = int(state.user[row]), int(state.prefix_length[row])
        sequence = items[user, :prefix]
        expected = sequence[-8:]
        assert state.history[row, 8 - len(expected):].tolist() == expected.tolist()
        assert bool((state.history[row, : 8 - len(expected)] == -1).all())
        assert set(torch.nonzero(state.consumed[row]).squeeze(1).tolist()) == set(sequence.tolist())


# ------------------------------------------------------------------ static-shape (accelerator) reset

SEQUENCES = [[3, 1, 3, 0, 2], [], [4, 4, 4], [0, 1, 2, 3, 4, 0, 5]]
"""Logged sequences with repeated items and an empty user, over 6 items."""


def sequence_sampler(sequences=SEQUENCES, n_items: int = 6, min_prefix: int = 0) -> UserSampler:
    offsets = torch.tensor([0] + np.cumsum([len(s) for s in sequences]).tolist())
    items = torch.tensor([i for s in sequences for i in s], dtype=torch.int64)
    config = SamplerConfig(min_prefix=min_prefix, min_future=0)
    return UserSampler(config, offsets, items, torch.ones(len(items)), n_items, torch.device("cpu"))


def test_first_positions_mark_each_prefix_exactly_like_the_consumed_pairs():
    sampler = sequence_sampler()
    table = sampler.first_positions()
    assert table.dtype == torch.int16 and table.shape == (4, 6)
    assert table[0].tolist()[:5] == [3, 1, 4, 0, 32767]  # first occurrences; item 4 never
    assert sampler.first_positions_bytes() == 4 * 6 * 2
    pairs = [(u, p) for u, s in enumerate(SEQUENCES) for p in range(len(s) + 1)]
    user = torch.tensor([u for u, _ in pairs])
    prefix = torch.tensor([p for _, p in pairs])
    consumed = sampler.consumed(user, prefix)
    from_pairs = torch.zeros_like(consumed)
    row, item = sampler.consumed_pairs(user, prefix)
    from_pairs[row, item] = True
    assert torch.equal(consumed, from_pairs)
    for r, (u, p) in enumerate(pairs):
        assert set(consumed[r].nonzero().squeeze(1).tolist()) == set(SEQUENCES[u][:p])


def test_first_positions_widen_to_int32_for_long_sequences():
    sampler = sequence_sampler([[0, 1] * 16384, [1]], n_items=2)  # 32,768 events
    assert sampler.first_positions_dtype() == torch.int32
    assert sampler.first_positions().tolist() == [[0, 1], [2**31 - 1, 0]]
    last = torch.tensor([32768, 32767, 1])
    assert sampler.consumed(torch.tensor([0, 0, 1]), last).tolist() == [[True, True], [True, True], [False, True]]


def dup_log() -> InteractionLog:
    """4 users over 6 items whose sequences repeat items (``SEQUENCES`` without the empty user)."""
    sequences = [s for s in SEQUENCES if s] + [[5, 2, 5, 1]]
    user = np.concatenate([[u] * len(s) for u, s in enumerate(sequences)]).astype(np.int64)
    item = np.concatenate(sequences).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    genres = [("a",), ("b",), ("a", "b"), ("c",), ("a",), ("b",)]
    items = ItemMetadata(title=[f"m{i}" for i in range(6)], year=np.zeros(6, np.int32), genres=genres, text=[""] * 6)
    return InteractionLog(
        name="dup", user_raw_ids=np.array([f"u{u}" for u in range(4)], dtype=object),
        item_raw_ids=np.array([f"i{i}" for i in range(6)], dtype=object), user=user, item=item,
        rating=np.full(len(user), 4.0, np.float32), timestamp=np.arange(len(user), dtype=np.int64),
        user_offsets=offsets, items=items,
    )


def static_test_simulators():
    synthetic = SyntheticSimulator(SyntheticConfig(n_users=30, n_items=40, events_per_user=12, history_length=6))
    config = simulators.registry.from_dict(LoggedConfig, {"history_length": 3, "sampler": {"min_prefix": 1}})
    logged_dup = LoggedUserSimulator(config, dup_log(), preference_model=ConstantModel(3.0), item_embeddings=torch.eye(6))
    return {"synthetic": synthetic, "logged-with-repeats": logged_dup}


def sequences_of(sim) -> list[list[int]]:
    offsets, items = sim.sampler.offsets.tolist(), sim.sampler.item.tolist()
    return [items[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def assert_fresh_sessions(sim, before, state, mask) -> None:
    """Rows of ``mask`` hold a consistent new session; every other row is untouched."""
    for name in ("user", "prefix_length", "history", "history_response", "consumed", "interest", "patience", "step", "choice_state"):
        assert torch.equal(getattr(state, name)[~mask], getattr(before, name)[~mask]), name
    rows = mask.nonzero().squeeze(1)
    user, prefix = state.user[rows], state.prefix_length[rows]
    history, responses = sim.sampler.history(user, prefix, sim.history_length)
    assert torch.equal(state.history[rows], history) and torch.equal(state.history_response[rows], responses)
    sequences, config = sequences_of(sim), sim.config.sampler
    for row, u, p in zip(rows.tolist(), user.tolist(), prefix.tolist(), strict=True):
        assert config.min_prefix <= p <= len(sequences[u]) - config.min_future
        assert set(state.consumed[row].nonzero().squeeze(1).tolist()) == set(sequences[u][:p])
    assert bool((state.step[rows] == 0).all())
    # fresh interest, or (learned choice) the fatigue of the starting history; the choice model's state read from it
    expected = sim.interest_model.replay(history) if sim.choice_model.warm_interest else torch.zeros_like(state.interest[rows])
    assert torch.allclose(state.interest[rows], expected)
    if sim.choice_model.state_size:
        items, responses = sim.sampler.history(user, prefix, sim.choice_model.window)
        assert torch.allclose(state.choice_state[rows], sim.choice_model.initial_state(items, responses), atol=1e-6)
    assert bool((state.patience[rows] == sim.config.leave.initial_patience).all())


@pytest.mark.parametrize("name", ["synthetic", "logged-with-repeats"])
@pytest.mark.parametrize("static_shapes", [True, False])
def test_partial_reset_gives_fresh_sessions_on_both_paths(name, static_shapes):
    sim = static_test_simulators()[name]
    state, g = started(sim, 24, seed=3)
    mask = torch.zeros(24, dtype=torch.bool)
    for round_ in range(4):
        for _ in range(3):
            sim.step(state, torch.randint(0, sim.n_items, (24, 2), generator=g), g)
        before = state.clone()
        mask = torch.rand(24, generator=g) < 0.4
        mask[round_] = True  # never empty
        sim.reset(state, mask, g, static_shapes=static_shapes)
        assert_fresh_sessions(sim, before, state, mask)


@pytest.mark.parametrize("name", ["synthetic", "logged-with-repeats"])
def test_full_static_reset_equals_the_sync_reset(name):
    """Resetting every row draws the same B (user, prefix) pairs on both paths: identical states."""
    sim = static_test_simulators()[name]
    states = []
    for static_shapes in (True, False):
        state = sim.init_state(32)
        sim.reset(state, torch.ones(32, dtype=torch.bool), gen(7), static_shapes=static_shapes)
        states.append(state)
    for f in ("user", "prefix_length", "history", "history_response", "consumed", "interest", "patience", "step", "choice_state"):
        assert torch.equal(getattr(states[0], f), getattr(states[1], f)), f


def test_static_reset_is_the_accelerator_default_and_the_attribute_forces_it():
    sim = static_test_simulators()["synthetic"]
    state, g = started(sim, 16)
    assert sim.sampler._first_positions is None  # the CPU default never builds the table
    sim.static_shapes = True
    mask = torch.zeros(16, dtype=torch.bool)
    mask[3] = True
    before = state.clone()
    sim.reset(state, mask, g)
    assert sim.sampler._first_positions is not None
    assert_fresh_sessions(sim, before, state, mask)


def test_static_reset_falls_back_to_the_sync_path_over_the_table_budget(monkeypatch):
    from recarena import simulators

    monkeypatch.setattr(simulators.composed, "FIRST_POSITION_TABLE_LIMIT", 10)
    sim = static_test_simulators()["synthetic"]
    reference = static_test_simulators()["synthetic"]
    state, g = started(sim, 16, seed=2)
    expected, g_ref = started(reference, 16, seed=2)
    mask = torch.arange(16) % 3 == 0
    with pytest.warns(RuntimeWarning, match="FIRST_POSITION_TABLE_LIMIT"):
        sim.reset(state, mask, g, static_shapes=True)
    reference.reset(expected, mask, g_ref, static_shapes=False)
    assert torch.equal(state.user, expected.user) and torch.equal(state.consumed, expected.consumed)
    assert sim.sampler._first_positions is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.reset(state, mask, g, static_shapes=True)  # warned once only


def test_step_appends_chosen_item_to_history_and_consumed():
    sim = SyntheticSimulator(SyntheticConfig(n_users=20, n_items=30, history_length=5))
    state, g = started(sim, 50)
    before = state.clone()
    out = sim.step(state, torch.randint(0, 30, (50, 3), generator=g), g)
    c = out.clicked
    assert torch.equal(state.history[c, -1], out.item[c])
    assert torch.equal(state.history[c, :-1], before.history[c, 1:])
    assert torch.equal(state.history_response[c, -1], out.response[c])
    assert torch.equal(state.history[~c], before.history[~c])
    assert bool(state.consumed[c.nonzero().squeeze(1), out.item[c]].all())
    assert bool((state.step == 1).all())


@pytest.mark.parametrize(
    "slate, message",
    [
        (torch.zeros(3, 2, dtype=torch.long), "slate must be"),
        (torch.full((4, 2), 30, dtype=torch.long), "lie in"),
        (torch.full((4, 2), -1, dtype=torch.long), "lie in"),
        (torch.zeros(4, 2), "integer"),
    ],
)
def test_invalid_slates_are_refused(slate, message):
    sim = SyntheticSimulator(SyntheticConfig(n_users=20, n_items=30))
    state, g = started(sim, 4)
    with pytest.raises(ValueError, match=message):
        sim.step(state, slate, g)


def test_invalid_reset_mask_is_refused():
    sim = SyntheticSimulator(SyntheticConfig(n_users=20, n_items=30))
    state = sim.init_state(4)
    with pytest.raises(ValueError, match="mask"):
        sim.reset(state, torch.ones(3, dtype=torch.bool), gen())


@pytest.mark.parametrize(
    "options",
    [
        {"choice": {"temperature": 0.0}},
        {"interest": {"fatigue_decay": 1.5}},
        {"leave": {"hazard": 2.0}},
        {"reward": "money"},
        {"history_length": 0},
        {"events_per_user": 500},
        {"best_item": 1000},
        {"sampler": {"min_prefix": 40}},
    ],
)
def test_invalid_configs_raise_config_error(options):
    with pytest.raises(ConfigError):
        simulators.make("synthetic", n_users=10, n_items=50, **options)


# ------------------------------------------------------------------------------- synthetic known answers


def test_best_item_is_the_known_answer():
    sim = SyntheticSimulator(SyntheticConfig(n_users=50, n_items=30, best_item=7, best_margin=1.5))
    assert bool((sim.true_ratings.argmax(1) == 7).all())
    assert bool((sim.true_ratings[:, 7] == 5.0).all())
    assert float(sim.true_ratings[:, [i for i in range(30) if i != 7]].max()) <= 3.5
    assert not bool((sim.sampler.item == 7).any())  # never in a starting history
    state, g = started(sim, 300)
    best = sim.step(state, torch.full((300, 1), 7), g).liked.float().mean()
    state, g = started(sim, 300)
    other = sim.step(state, torch.full((300, 1), 3), g).liked.float().mean()
    assert best > 0.7 and other == 0


def _return(sim: SyntheticSimulator, policy: str, steps: int = 40) -> float:
    state, g = started(sim, 400)
    alive = torch.ones(400, dtype=torch.bool)
    total = torch.zeros(400)
    for _ in range(steps):
        scores = sim.true_ratings[state.user].clone()
        scores[state.consumed] = -1e9
        if policy == "diversify":  # subtract the boredom the user would feel for each item
            scores = scores - sim.interest_model.penalty(state.interest, torch.arange(sim.n_items).expand(400, -1))
        out = sim.step(state, scores.argmax(1, keepdim=True), g)
        total += out.reward * alive
        alive &= ~out.left
    return total.mean().item()


def test_diversifying_beats_greedy_under_boredom():
    config = SyntheticConfig(
        n_users=200, n_items=100, n_topics=4, sharpness=2.0,
        interest=InterestConfig(boredom_penalty=1.0, fatigue_decay=0.9),
    )
    sim = SyntheticSimulator(config)
    greedy, diverse = _return(sim, "greedy"), _return(sim, "diversify")
    assert diverse > greedy * 2.0, (greedy, diverse)  # docs/simulators.md: greedy earns less than half


def test_synthetic_embeddings_are_normalised_and_population_is_seeded():
    a = SyntheticSimulator(SyntheticConfig(n_users=10, n_items=20, seed=3))
    b = SyntheticSimulator(SyntheticConfig(n_users=10, n_items=20, seed=3))
    c = SyntheticSimulator(SyntheticConfig(n_users=10, n_items=20, seed=4))
    assert torch.allclose(a.item_embeddings.norm(dim=1), torch.ones(20), atol=1e-5)
    assert torch.equal(a.true_ratings, b.true_ratings) and not torch.equal(a.true_ratings, c.true_ratings)
    assert a.item_topics.shape == (20, 5)
    assert SyntheticSimulator(SyntheticConfig(n_users=10, n_items=20, interest=InterestConfig(topics="kmeans", n_clusters=4))).n_topics == 4


# ------------------------------------------------------------------------------- logged users


class ConstantModel:
    """A stand-in preference model: every user rates every item ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.full(items.shape, self.value)


def tiny_log() -> InteractionLog:
    """3 users, 8 items. User 0 rates items 0..5 in order with ratings 5,4,3,2,1,5."""
    sequences = {0: ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 5]), 1: ([7, 6, 5, 4], [1, 2, 3, 4]), 2: ([1, 3, 5, 7, 0], [2, 2, 2, 2, 2])}
    user = np.concatenate([[u] * len(s[0]) for u, s in sequences.items()]).astype(np.int64)
    item = np.concatenate([s[0] for s in sequences.values()]).astype(np.int64)
    rating = np.concatenate([s[1] for s in sequences.values()]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(s[0]) for s in sequences.values()])]).astype(np.int64)
    genres = [("a",), ("b",), ("a", "b"), ("c",), ("a",), ("b",), ("c",), ("a",)]
    items = ItemMetadata(title=[f"m{i}" for i in range(8)], year=np.zeros(8, np.int32), genres=genres, text=[""] * 8)
    return InteractionLog(
        name="tiny", user_raw_ids=np.array(["u0", "u1", "u2"], dtype=object),
        item_raw_ids=np.array([f"i{i}" for i in range(8)], dtype=object), user=user, item=item,
        rating=rating, timestamp=np.arange(len(user), dtype=np.int64), user_offsets=offsets, items=items,
    )


def logged(mode: str = "logged-first", **options) -> LoggedUserSimulator:
    """The tiny logged simulator with the rating-only choice (these tests pin its responses and choices)
    answering with the model's mean where the log does not (``answers: mean``, the -v1 answers;
    the calibrated ones: tests/test_calibrated_answers.py)."""
    options["choice"] = {"model": "rating", **options.get("choice", {})}
    options.setdefault("answers", "mean")
    config = simulators.registry.from_dict(LoggedConfig, {"mode": mode, "history_length": 4, "sampler": {"min_prefix": 2}, **options})
    return LoggedUserSimulator(config, tiny_log(), preference_model=ConstantModel(2.5), item_embeddings=torch.eye(8))


def start_user0(sim: LoggedUserSimulator, prefix: int):
    state = sim.init_state(1)
    sim.reset(state, torch.ones(1, dtype=torch.bool), gen())
    state.user[:] = 0
    state.prefix_length[:] = prefix
    return state


def test_logged_first_returns_the_future_logged_rating_exactly():
    sim = logged(choice={"temperature": 0.01, "no_choice_rating": 0.0})  # always picks the best slot
    state = start_user0(sim, prefix=2)  # items 0, 1 are history; 2..5 are the future
    ratings, from_log = sim.rate(state, torch.tensor([[3, 1, 6, 5]]))
    assert ratings.tolist() == [[2.0, 2.5, 2.5, 5.0]]  # future 3 -> logged 2; history 1 / unseen 6 -> model
    assert from_log.tolist() == [[True, False, False, True]]
    out = sim.step(state, torch.tensor([[5, 6]]), gen())
    assert out.item.item() == 5 and out.response.item() == 5.0 and bool(out.from_log.item())
    stats = sim.statistics()
    assert stats["shown_from_log"] == 1 and stats["shown_from_model"] == 1 and stats["chosen_from_log"] == 1
    assert stats["logged_share"] == 0.5


def test_model_only_mode_always_answers_from_the_model():
    sim = logged("model-only", choice={"temperature": 0.01, "no_choice_rating": 0.0})
    state = start_user0(sim, prefix=2)
    ratings, from_log = sim.rate(state, torch.tensor([[3, 5]]))
    assert ratings.tolist() == [[2.5, 2.5]] and not bool(from_log.any())
    out = sim.step(state, torch.tensor([[5, 3]]), gen())
    assert out.response.item() == 2.5 and not bool(out.from_log.any())
    assert sim.statistics()["logged_share"] == 0.0 and sim.statistics()["shown_from_model"] == 2


def test_logged_users_start_from_real_prefixes():
    sim = logged()
    state = sim.init_state(200)
    sim.reset(state, torch.ones(200, dtype=torch.bool), gen(5))
    log = tiny_log()
    for row in range(200):
        u, p = int(state.user[row]), int(state.prefix_length[row])
        events = log.item[log.user_slice(u)]
        assert 2 <= p <= len(events) - 1
        assert set(torch.nonzero(state.consumed[row]).squeeze(1).tolist()) == set(events[:p].tolist())
        assert state.history[row][state.history[row] >= 0].tolist() == events[:p][-4:].tolist()
    assert set(state.user.tolist()) == {0, 1, 2}
    assert sim.n_topics == 3  # genres a, b, c


def test_logged_simulator_with_a_saved_preference_model(tmp_path):
    from recarena.simulators.preference import PreferenceConfig, PreferenceModel

    log = tiny_log()
    model = PreferenceModel(PreferenceConfig(dim=4), log.n_users, torch.eye(8), global_mean=3.0)
    with torch.no_grad():  # distinct ratings per (user, item), as a fitted model would give
        model.user_factor.copy_(torch.randn(3, 4, generator=gen(1)))
        model.text_projection.copy_(torch.randn(8, 4, generator=gen(2)))
    model.item_set_fingerprint = log.item_set_fingerprint()
    model.save(tmp_path / "pref")
    sim = simulators.make(
        "logged", LogSplit(log, log, log, "leave-last-out", log), mode="model-only",
        preference_path=str(tmp_path / "pref"), components={"item_embeddings": torch.eye(8)},
        sampler={"min_prefix": 2}, choice={"model": "rating"}, answers="mean",  # the model's own predictions
    )
    assert sim.rating_table is not None  # small: precomputed dense table
    no_table = simulators.make(
        "logged", log, mode="model-only", rating_table="never", sampler={"min_prefix": 2}, choice={"model": "rating"},
        answers="mean",
        components={"item_embeddings": torch.eye(8), "preference_model": model},
    )
    assert no_table.rating_table is None
    state = sim.init_state(5)
    sim.reset(state, torch.ones(5, dtype=torch.bool), gen())
    slate = torch.tensor([[6, 7, 0]] * 5)
    ratings, _ = sim.rate(state, slate)
    assert torch.allclose(ratings, model.predict(state.user, slate))
    assert torch.allclose(no_table.rate(state, slate)[0], ratings)
    assert simulators.describe(sim)["data_fingerprint"] == log.fingerprint()


def test_logged_simulator_needs_data():
    with pytest.raises(ConfigError, match="needs data"):
        simulators.make("logged", None, components={"preference_model": ConstantModel(3.0), "item_embeddings": torch.eye(8)})


@pytest.mark.gpu
def test_cuda_rollout_matches_shapes_and_runs():
    sim = simulators.make("synthetic", device="cuda", n_users=50, n_items=40)
    state = sim.init_state(32)
    g = torch.Generator(device="cuda").manual_seed(0)
    sim.reset(state, torch.ones(32, dtype=torch.bool, device="cuda"), g)
    out = sim.step(state, torch.randint(0, 40, (32, 3), device="cuda", generator=g), g)
    assert out.item.device.type == "cuda" and state.consumed.device.type == "cuda"
