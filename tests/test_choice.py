"""The learned choice model: next-item network, utility fit, simulator integration, cache, held-out hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recarena.simulators as simulators
from recarena.data.logs import load_logs
from recarena.data.splits import leave_last_out
from recarena.evaluation.choice_fidelity import constant_item_return
from recarena.simulators.choice import LearnedChoice, UtilityFitConfig, choice_slates, fit_mnl
from recarena.simulators.sequence import (
    NextItemConfig,
    NextItemGRU,
    NextItemModel,
    fit_next_item_model,
    history_windows,
    repeat_rate,
)
from tests._choice_fixtures import (
    N_ITEMS,
    QUICK_SEQUENCE,
    TableModel,
    cycle_log,
    cycle_sequences,
    group_embeddings,
    in_group_ratings,
    next_in_group,
    popularity_log,
    write_ratings_folder,
)

QUICK = NextItemConfig(**QUICK_SEQUENCE)


def learned_simulator(log=None, split=True, **options):
    log = log if log is not None else cycle_log()
    data = leave_last_out(log) if split else log
    choice = {"sequence": QUICK_SEQUENCE, **options.pop("choice", {})}
    components = {"item_embeddings": group_embeddings()}
    if log.has_ratings:
        components["preference_model"] = TableModel(in_group_ratings(log.n_users))
    return simulators.make(
        "logged", data, history_length=6, sampler={"min_prefix": 2}, choice=choice, components=components, **options
    )


# ------------------------------------------------------------------------------ next-item network


def test_the_network_learns_a_known_next_choice():
    log = cycle_log()
    split = leave_last_out(log)
    model = fit_next_item_model(split.train, group_embeddings(), QUICK, valid=split.valid, progress=False)
    assert model.exclude_consumed and repeat_rate(split.train) == 0.0
    # every user's next item after their training history is "the last one + 1 in its group"
    users = np.arange(log.n_users)
    lengths = split.train.sequence_lengths()
    history, responses = history_windows(split.train, users, lengths, QUICK.window)
    last = split.train.item[split.train.user_offsets[1:] - 1]
    expected = torch.tensor([next_in_group(int(i)) for i in last])
    with torch.no_grad():
        h = model.network.encode(history, responses)
    consumed = torch.zeros(len(users), N_ITEMS, dtype=torch.bool)
    consumed[torch.as_tensor(split.train.user), torch.as_tensor(split.train.item)] = True
    log_p = model.log_probabilities(h, consumed)  # consumed items were never targets: excluded
    assert (log_p.argmax(1) == expected).float().mean() >= 0.95
    assert log_p.gather(1, expected.unsqueeze(1)).exp().mean() > 0.5


def test_incremental_state_equals_reading_the_whole_history():
    """The simulator's per-step update gives the state of reading the history at once (any padding)."""
    net = NextItemGRU(10, torch.randn(10, 4), NextItemConfig(dim=8, dropout=0.0)).eval()
    items = torch.tensor([[-1, -1, 3, 5, 7], [1, 2, 3, 4, 5]])
    responses = torch.tensor([[0, 0, 4.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    with torch.no_grad():
        whole = net.encode(items, responses)
        h = net.initial_state(2)
        for t in range(items.shape[1]):
            h = net.advance(h, items[:, t].clamp(min=0), responses[:, t], items[:, t] >= 0)
        right = torch.tensor([[3, 5, 7], [3, 4, 5]])
        fused = net.sequence_states(right, torch.tensor([[4.0, 2.0, 5.0], [3.0, 4.0, 5.0]]), net.item_table()[0])
        tail = net.encode(items[:, -3:], responses[:, -3:])
    assert torch.allclose(whole, h, atol=1e-6)
    assert torch.allclose(fused[:, -1], tail, atol=1e-5)


def test_cold_items_get_scores_from_their_text():
    """Items with no training event are scored by their text: a cold item that reads like the
    user's group beats one that reads like another group; without text they are all alike."""
    n_items = N_ITEMS + 6  # items 36..41 never occur; their text says group i % 3
    log = cycle_log(n_items=n_items)
    embeddings = group_embeddings(n_items)
    cold = torch.arange(N_ITEMS, n_items)
    cold_group = cold % 3
    margins = {}
    for use_text in (True, False):
        config = NextItemConfig(**{**QUICK_SEQUENCE, "use_text": use_text})
        model = fit_next_item_model(log, embeddings, config, progress=False)
        users = np.arange(log.n_users)
        history, responses = history_windows(log, users, log.sequence_lengths(), config.window)
        with torch.no_grad():
            scores = model.network.logits(model.network.encode(history, responses))[:, cold]
        own = torch.tensor(users % 3).unsqueeze(1) == cold_group.unsqueeze(0)
        margins[use_text] = float(scores[own].mean() - scores[~own].mean())
        if use_text:
            assert scores.std(dim=1).min() > 1e-3  # non-degenerate: cold items differ
            per_user = (scores * own).sum(1) / own.sum(1) - (scores * ~own).sum(1) / (~own).sum(1)
            assert (per_user > 0).float().mean() > 0.9
    assert margins[True] > 1.0 and margins[True] > 5 * abs(margins[False])


# ------------------------------------------------------------------------------ utility fit


def test_the_fitted_utility_weights_recover_known_weights():
    g = torch.Generator().manual_seed(0)
    n, k = 6000, 10
    features = torch.randn(n, k, 3, generator=g)
    true_w, true_none = torch.tensor([1.5, 0.7, -0.4]), 0.8
    logits = torch.cat([(features * true_w).sum(-1), torch.full((n, 1), true_none)], dim=1)
    chosen = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    weights, none, info = fit_mnl(features, torch.ones(n, k, dtype=torch.bool), chosen)
    assert np.allclose(weights, true_w.tolist(), atol=0.08) and abs(none - true_none) < 0.1
    assert info["log_loss"] < info["log_loss_start"]
    # a feature switched off keeps weight 0
    weights, _, _ = fit_mnl(features, torch.ones(n, k, dtype=torch.bool), chosen, use=(True, False, True))
    assert weights[1] == 0.0


def test_constructed_slates_follow_the_stated_distribution():
    consumed = torch.zeros(2000, 50, dtype=torch.bool)
    consumed[:, :5] = True
    real = torch.full((2000,), 7)
    config = UtilityFitConfig(slate_size=10, slates_per_event=1, include_probability=0.3)
    slates, chosen, event = choice_slates(real, consumed, torch.ones(50), config, torch.Generator().manual_seed(0))
    has_real = (slates == 7).any(1)
    assert torch.equal(has_real, chosen == 0) and torch.equal(~has_real, chosen == 10)
    assert abs(float(has_real.float().mean()) - 0.3) < 0.03
    assert not bool((slates < 5).any())  # consumed items are never distractors
    assert all(len(set(row)) == 10 for row in slates.tolist()) and torch.equal(event, torch.arange(2000))


# ------------------------------------------------------------------------------ the simulated user


def test_learned_simulator_fits_weights_on_validation_events_and_picks_the_next_item():
    sim = learned_simulator()
    assert isinstance(sim.choice_model, LearnedChoice)
    fit = sim.choice_fit
    assert fit["info"]["n_events"] == 60 and fit["choice"] > 0 and fit["info"]["log_loss"] < fit["info"]["log_loss_start"]
    # users at their training history: a slate with the real next item is mostly answered by it
    split = leave_last_out(cycle_log())
    users = torch.arange(60)
    state = sim.start_from(users, torch.Generator().manual_seed(0))
    real = torch.as_tensor(split.valid.item)
    distractors = torch.stack([torch.tensor([i for i in range(N_ITEMS) if i != int(r) and not state.consumed[u, i]][:4]) for u, r in enumerate(real)])
    p = sim.choice_probabilities(state, torch.cat([real.unsqueeze(1), distractors], 1))
    assert p[:, 0].mean() > 0.5 and torch.allclose(p.sum(1), torch.ones(60))


def test_a_consumed_item_is_never_chosen_when_the_log_has_no_repeats():
    sim = learned_simulator()
    g = torch.Generator().manual_seed(1)
    state = sim.init_state(64)
    sim.reset(state, torch.ones(64, dtype=torch.bool), g)
    consumed_item = state.history[:, -1]
    fresh = torch.stack([torch.nonzero(~state.consumed[r]).squeeze(1)[:2] for r in range(64)])
    slate = torch.cat([consumed_item.unsqueeze(1), fresh], 1)
    assert float(sim.choice_probabilities(state, slate)[:, 0].max()) == 0.0
    # re-offered every step, an item is chosen at most once, and never by a user who had consumed it
    item = int(torch.mode(consumed_item).values)
    had_it = state.consumed[:, item].clone()
    chosen = torch.zeros(64, dtype=torch.int64)
    for _ in range(20):
        chosen += sim.step(state, torch.full((64, 1), item), g).item == item
    assert int(chosen[had_it].sum()) == 0 and int(chosen.max()) <= 1 and int(chosen.sum()) > 0


def test_the_constant_item_exploit_earns_no_more_than_most_popular():
    """Users who pick popular films: re-offering one item every step earns one like at most."""
    from recarena.agents.baselines import MostPopularAgent
    from recarena.evaluation.simulated import evaluate_simulated

    log = popularity_log()
    sim = simulators.make(
        "logged", leave_last_out(log), history_length=6, sampler={"min_prefix": 2}, choice={"sequence": QUICK_SEQUENCE},
        components={"item_embeddings": torch.eye(30), "preference_model": TableModel(torch.full((80, 30), 4.5))},
    )
    users = np.arange(80)
    best_constant = max(constant_item_return(sim, users, item, max_steps=30)["return"] for item in range(30))
    agent = MostPopularAgent(30).fit(sim.log)
    most_popular = evaluate_simulated(agent, sim, users=users, k=1, max_steps=30, n_bootstrap=10).metrics["episodic_return"]
    assert best_constant <= 1.0  # the item is never chosen again once consumed
    assert best_constant <= most_popular, (best_constant, most_popular)


def test_same_seed_same_trajectory_and_same_fit():
    a, b = learned_simulator(), learned_simulator()
    assert a.choice_fit == b.choice_fit
    traces = []
    for sim in (a, b):
        g = torch.Generator().manual_seed(5)
        state = sim.init_state(16)
        sim.reset(state, torch.ones(16, dtype=torch.bool), g)
        trace = []
        for _ in range(10):
            out = sim.step(state, torch.randint(0, N_ITEMS, (16, 3), generator=g), g)
            trace.append((out.item.clone(), out.reward.clone(), out.left.clone()))
        traces.append((trace, state.choice_state.clone()))
    for (x, y) in zip(traces[0][0], traces[1][0], strict=True):
        assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
    assert torch.equal(traces[0][1], traces[1][1])


def test_held_out_test_events_never_reach_any_fit():
    """A sentinel item that occurs only in the test events (each user's last) influences nothing:
    the same fits result when the test events are another item altogether."""
    sentinel, other = N_ITEMS, N_ITEMS + 1
    fits = []
    for test_item in (sentinel, other):
        log = cycle_log(test_item=test_item, n_items=N_ITEMS + 2)
        split = leave_last_out(log)
        assert set(split.test.item.tolist()) == {test_item} and test_item not in split.train.item and test_item not in split.valid.item
        from recarena.simulators.preference import fit_preference_model, preference_config

        embeddings = group_embeddings(N_ITEMS + 2)
        preference = fit_preference_model(split.train, embeddings, preference_config(epochs=2, dim=4), valid=split.valid, progress=False)
        sim = simulators.make(
            "logged", split, history_length=6, sampler={"min_prefix": 2}, choice={"sequence": QUICK_SEQUENCE},
            components={"item_embeddings": embeddings, "preference_model": preference},
        )
        fits.append((sim.choice_fit, sim.next_item_model.network.state_dict(), preference.state_dict()))
    assert fits[0][0] == fits[1][0]
    for key, value in fits[0][1].items():
        assert torch.equal(value, fits[1][1][key]), key
    for key, value in fits[0][2].items():
        assert torch.equal(value, fits[1][2][key]), key


def test_without_validation_part_the_choice_fit_holds_out_each_users_last_event():
    sim = learned_simulator(split=False)
    assert sim.choice_fit["info"]["n_events"] == 60
    assert sim.next_item_model.fit_info["n_valid_events"] == 60


def test_implicit_logs_make_the_user_the_choice_model_alone():
    log = cycle_log(implicit=True)
    assert not log.has_ratings
    sim = learned_simulator(log)
    assert sim.preference_model is None and sim.choice_fit["rating"] == 0.0
    g = torch.Generator().manual_seed(0)
    state = sim.init_state(32)
    sim.reset(state, torch.ones(32, dtype=torch.bool), g)
    clicks = likes = 0
    for _ in range(5):
        out = sim.step(state, torch.randint(0, N_ITEMS, (32, 2), generator=g), g)
        assert torch.equal(out.reward, out.clicked.float()) and torch.equal(out.liked, out.clicked)  # the reward is the click
        clicks, likes = clicks + int(out.clicked.sum()), likes + int(out.liked.sum())
    assert clicks > 0


def test_rating_choice_stays_available_by_name():
    log = cycle_log()
    sim = simulators.make("logged-rating", leave_last_out(log), history_length=6, sampler={"min_prefix": 2},
                          components={"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(60))})
    assert sim.config.choice.model == "rating" and sim.choice_model.state_size == 0 and sim.choice_fit is None
    assert simulators.make("logged-rating", log, choice={"model": "learned", "sequence": QUICK_SEQUENCE}, sampler={"min_prefix": 2},
                           components={"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(60))}).choice_fit


# ------------------------------------------------------------------------------ the on-disk cache


def test_the_choice_model_is_cached_and_refitted_when_the_training_log_changes(tmp_path, monkeypatch, capsys):
    from recarena.simulators import preference_store

    monkeypatch.setenv("RECARENA_CACHE", str(tmp_path / "cache"))
    folder = write_ratings_folder(tmp_path / "data", cycle_sequences(n_users=30))
    config = {"choice": {"sequence": QUICK_SEQUENCE}, "preference": {"epochs": 1}, "encoder": {"progress": False}}
    fits = []
    real_fit = preference_store.fit_next_item_model
    monkeypatch.setattr(preference_store, "fit_next_item_model", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    first = preference_store.ensure_choice_model(str(folder), config)
    assert f"fitting the choice (next-item) model for '{folder}' once; it is cached in {first}" in capsys.readouterr().err
    assert preference_store.ensure_choice_model(str(folder), config) == first and len(fits) == 1  # hit
    model = NextItemModel.load(first, log=leave_last_out(load_logs(str(folder))).train)
    assert model.n_items == N_ITEMS
    # the simulator built from the source name loads the cached model
    sim = simulators.make("logged", str(folder), **config)
    assert sim.config.choice_path == str(first) and len(fits) == 1
    # a changed training log is a new key: refitted
    write_ratings_folder(folder, cycle_sequences(n_users=30, seed=1))
    second = preference_store.ensure_choice_model(str(folder), config)
    assert second != first and len(fits) == 2
    # so is a new revision of the fitting code: a model fitted by earlier code is not reused
    from recarena.simulators import sequence

    monkeypatch.setattr(sequence, "FIT_REVISION", sequence.FIT_REVISION + 1)
    assert preference_store.choice_dir(str(folder), config) != second
    assert preference_store.ensure_choice_model(str(folder), config) != second and len(fits) == 3
    from recarena.simulators import preference

    before = preference_store.preference_dir(str(folder), config)
    monkeypatch.setattr(preference, "FIT_REVISION", preference.FIT_REVISION + 1)
    assert preference_store.preference_dir(str(folder), config) != before


def test_the_response_boredom_penalty_is_fitted_on_validation_ratings():
    """Validation ratings that fall 0.5 points per unit of fatigue give a fitted penalty of 0.5."""
    split = leave_last_out(popularity_log())
    options = {"history_length": 6, "sampler": {"min_prefix": 2}}
    components = {"item_embeddings": torch.eye(30), "preference_model": TableModel(torch.full((80, 30), 4.0))}
    probe = simulators.make("logged", split, choice={"sequence": QUICK_SEQUENCE}, components=components, **options)
    state = probe.start_from(torch.as_tensor(split.valid.user), torch.Generator().manual_seed(0))
    fatigue = probe.interest_model.fatigue(state.interest, torch.as_tensor(split.valid.item).unsqueeze(1)).squeeze(1)
    assert float(fatigue.std()) > 0.1
    split.valid.rating[:] = (4.0 - 0.5 * fatigue).numpy()
    sim = simulators.make("logged", split, choice={"sequence": QUICK_SEQUENCE}, components=components, **options)
    assert abs(sim.response_penalty - 0.5) < 1e-4 and sim.choice_fit["response_penalty"] == sim.response_penalty
    kept = simulators.make(
        "logged", split, choice={"sequence": QUICK_SEQUENCE, "response_boredom": "config"}, components=components, **options
    )
    assert kept.response_penalty is None  # interest.boredom_penalty answers


def test_the_learned_simulator_can_be_built_under_no_grad():
    with torch.no_grad():
        fit = learned_simulator().choice_fit
    assert fit["info"]["log_loss"] < fit["info"]["log_loss_start"]


def test_the_choice_section_of_the_fidelity_report(tmp_path):
    from recarena.evaluation.choice_fidelity import format_choice_tables, run_choice_report

    log = cycle_log()
    split = leave_last_out(log)
    components = {"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(60))}
    options = {"history_length": 6, "sampler": {"min_prefix": 2}}
    built = {
        "rating": simulators.make("logged-rating", split, components=components, **options),
        "learned": simulators.make("logged", split, choice={"sequence": QUICK_SEQUENCE}, components=components, **options),
    }
    no_text = simulators.make("logged", split, choice={"sequence": {**QUICK_SEQUENCE, "use_text": False}}, components=components, **options)
    report = run_choice_report(split, built, group_embeddings(), sasrec_config={"epochs": 1, "hidden_dim": 8, "n_heads": 1},
                               n_sim_users=30, max_steps=5, n_constant_candidates=3, out=tmp_path, progress=False,
                               extra_choice_models={"choice_model_no_text": no_text})
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    assert set(report["ranking"]) >= {"most_popular", "sasrec", "choice_model", "greedy_rating_simulator", "greedy_learned_simulator",
                                      "choice_model_no_text"}
    assert report["cold_queries"] == 0 and report["ranking"]["sasrec"]["hr10_cold"] is None  # every item has training events
    # the cycles are learnable: the choice model ranks the held-out last item first for most users
    assert report["ranking"]["choice_model"]["hr10"] > 0.9
    for kind in ("popularity", "top50", "uniform"):
        table = report["slate_choice"][kind]
        assert 0 <= table["learned"]["p_real"] <= table["learned"]["p_real_given_click"] <= 1
        assert table["sasrec"]["p_none"] == 0.0
    assert report["slate_choice"]["popularity"]["learned"]["p_real"] > report["slate_choice"]["popularity"]["rating"]["p_real"]
    constant = report["constant_item_slate1"]["learned"]
    assert constant["best_constant_return"] <= 1.0
    tables = format_choice_tables(report)
    assert "### slate choice" in tables and "### items chosen per session" in tables and "Leave hazard after a chosen item" in tables
    # Items per session: the training log's sessions (the cycle users' events are seconds apart: one
    # session each), and each simulated session's clicks, at most max_steps.
    logged = report["logged_sessions"]
    assert logged["sessions"] == split.train.n_users and logged["mean_items"] == split.train.n_events / split.train.n_users
    for sessions in report["sessions_slate10"].values():
        items = sessions["items"]
        assert items["sessions"] == 30 and 0 <= items["length_quantiles"]["p10"] <= items["length_quantiles"]["p90"] <= 5
        assert items["mean_items"] == pytest.approx(sessions["ctr"] * sessions["session_length"])
        assert 0 <= items["like_rate"] <= 1 and items["repeat_share"] == 0.0  # consumed items are masked
        # Sessions of <= 5 steps: positions 0 and 1-4 only; their likes add up to the like rate.
        by_position = items["like_rate_by_position"]
        assert list(by_position) == ["0", "1-4", "5-19", "20-49"] and by_position["5-19"] is None
        rates = [rate for rate in (by_position["0"], by_position["1-4"]) if rate is not None]
        assert rates and min(rates) - 1e-12 <= items["like_rate"] <= max(rates) + 1e-12  # their weighted mean
    assert "like rate (likes per chosen item) by position" in tables
