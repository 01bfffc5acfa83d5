"""The leave model fitted to logged sessions (``leave.model: sessions``, env -v3): the hazard fit on
hand-built logs with known answers, the leave decisions it drives, and the logged simulator's use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recarena.simulators as simulators
from recarena.core.errors import ConfigError
from recarena.data.splits import leave_last_out
from recarena.simulators.behaviour import LeaveConfig, LeaveModel
from recarena.simulators.sessions import SessionHazard, fit_session_hazard, session_positions, session_starts
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator
from tests._choice_fixtures import QUICK_SEQUENCE, TableModel, cycle_log, group_embeddings, in_group_ratings
from tests._eval_fixtures import make_log


def timed_log(times: list[list[int]], ratings: list[list[float]]):
    """A log whose user u rated item j at ``times[u][j]`` seconds with ``ratings[u][j]``."""
    log = make_log([[(j, r) for j, r in enumerate(user)] for user in ratings], n_items=max(map(len, ratings)))
    log.timestamp[:] = np.concatenate([np.asarray(t, dtype=np.int64) for t in times])
    return log


def test_sessions_split_at_gaps_and_between_users():
    log = timed_log([[0, 10, 5000, 5010, 5020], [0, 100]], [[5, 4, 2, 5, 1], [3, 4]])
    starts = session_starts(log, gap=3600)
    np.testing.assert_array_equal(starts, [True, False, True, False, False, True, False])
    position, last = session_positions(starts)
    np.testing.assert_array_equal(position, [0, 1, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(last, [False, True, False, False, True, False, True])
    np.testing.assert_array_equal(session_starts(log, gap=5), [True] * 7)  # every gap is > 5 s
    with pytest.raises(ValueError, match="session gap must be >= 0"):
        session_starts(log, gap=-1)


def test_the_hazard_is_the_share_of_events_that_end_their_session():
    # Sessions (position: rating): [0:5 1:4] [0:2 1:5 2:1] [0:3 1:4]; like = rating >= 4.
    log = timed_log([[0, 10, 5000, 5010, 5020], [0, 100]], [[5, 4, 2, 5, 1], [3, 4]])
    hazard = fit_session_hazard(log, gap=3600, edges=(1, 2), min_events=1)
    # position 0: liked 1 event (not an end), not liked 2 (no ends); position 1: liked 3, all ends
    # but the second session's, none not liked (the bucket's pooled rate); position >= 2: one
    # disliked event, an end (none liked: pooled).
    np.testing.assert_allclose(hazard.table, [[0.0, 0.0], [2 / 3, 2 / 3], [1.0, 1.0]])
    assert hazard.info["sessions"] == 3 and hazard.info["events_liked"] == [1, 3, 0]
    # Too few events in a cell: the bucket's pooled rate; in a whole bucket: the previous bucket's.
    pooled = fit_session_hazard(log, gap=3600, edges=(1, 2), min_events=2)
    np.testing.assert_allclose(pooled.table, [[0.0, 0.0], [2 / 3, 2 / 3], [2 / 3, 2 / 3]])


def test_a_log_without_ratings_fits_the_liked_column_and_pools_the_other():
    log = cycle_log(implicit=True)
    hazard = fit_session_hazard(log)
    assert not log.has_ratings and hazard.info["events_not_liked"] == [0] * 6
    np.testing.assert_array_equal(hazard.table[:, 0], hazard.table[:, 1])


def test_the_leave_model_leaves_at_the_fitted_rate_after_a_chosen_item():
    hazard = SessionHazard(np.array([[0.5, 0.2], [0.1, 0.0]]), edges=(3,))
    model = LeaveModel(LeaveConfig(model="sessions", initial_patience=2.0), hazard)
    n = 40_000
    generator = torch.Generator().manual_seed(0)
    patience = model.initial(n, torch.device("cpu"))
    for position, liked, expected in [(0, False, 0.5), (2, True, 0.2), (3, False, 0.1), (9, True, 0.0)]:
        clicked = torch.ones(n, dtype=torch.bool)
        new, left = model.update(patience, clicked, torch.full((n,), liked), generator, torch.full((n,), position))
        assert torch.equal(new, patience)  # a chosen item costs no patience
        assert abs(float(left.float().mean()) - expected) < 0.01
    # A no-click costs patience and never fires the hazard (constant hazard 0): two end the session.
    nothing = torch.zeros(n, dtype=torch.bool)
    once, left = model.update(patience, nothing, nothing, generator, torch.zeros(n, dtype=torch.int64))
    assert not bool(left.any())
    _, left = model.update(once, nothing, nothing, generator, torch.ones(n, dtype=torch.int64))
    assert bool(left.all())


def test_the_constant_hazard_is_folded_into_the_table():
    hazard = SessionHazard(np.array([[0.5, 0.2]]), edges=())
    model = LeaveModel(LeaveConfig(model="sessions", hazard=0.1), hazard)
    np.testing.assert_allclose(model.table.numpy(), [[0.1, 1 - 0.9 * 0.5, 1 - 0.9 * 0.8]], rtol=1e-6)
    assert model.draws and not LeaveModel(LeaveConfig()).draws


def test_sessions_need_a_fitted_hazard():
    with pytest.raises(ConfigError, match="leave.model 'sessions' needs the leave hazard of logged sessions"):
        LeaveModel(LeaveConfig(model="sessions"))
    with pytest.raises(ConfigError, match="leave.model 'sessions'"):
        SyntheticSimulator(SyntheticConfig(n_users=10, n_items=20, leave=LeaveConfig(model="sessions")))


def _logged(name: str, **options):
    log = cycle_log()
    components = {"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(log.n_users))}
    return simulators.make(name, leave_last_out(log), components=components, choice={"sequence": QUICK_SEQUENCE}, **options)


def test_the_logged_users_leave_by_the_training_sessions_and_v2_by_patience():
    simulator = _logged("logged")
    split = leave_last_out(cycle_log())
    expected = fit_session_hazard(split.train)
    assert simulator.config.leave.model == "sessions"
    np.testing.assert_array_equal(simulator.leave_model.session_hazard.table, expected.table)
    assert simulator.choice_fit["leave"] == expected.info  # recorded with the run
    assert expected.info["events"] == split.train.n_events  # the training part only
    v2 = _logged("logged-v2")
    assert v2.config.leave.model == "patience" and v2.leave_model.table is None and "leave" not in v2.choice_fit
    assert simulators.make("logged-v1", leave_last_out(cycle_log()), components={
        "item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(60))},
        choice={"sequence": QUICK_SEQUENCE}).config.leave.model == "patience"
    # patience is still selectable on "logged", and the gap is an option.
    assert _logged("logged", leave={"model": "patience"}).leave_model.table is None
    gapped = _logged("logged", leave={"session_gap": 0})
    assert gapped.choice_fit["leave"]["gap_seconds"] == 0


def test_the_step_position_picks_the_bucket():
    """In the simulator the position is the step of the session: a chosen item at the first step
    leaves with the first bucket's hazard (here 1), at later steps with the next (here 0)."""
    simulator = _logged("logged")
    simulator.leave_model = LeaveModel(simulator.config.leave, SessionHazard(np.array([[1.0, 1.0], [0.0, 0.0]]), edges=(1,)))
    generator = torch.Generator().manual_seed(0)
    state = simulator.init_state(64)
    simulator.reset(state, torch.ones(64, dtype=torch.bool), generator)
    seen_left = []
    for _ in range(3):
        slate = torch.arange(10).repeat(64, 1)
        outcome = simulator.step(state, slate, generator)
        seen_left.append((outcome.clicked, outcome.left))
    clicked, left = seen_left[0]
    assert bool(clicked.any()) and torch.equal(left[clicked], torch.ones_like(left[clicked]))
    for clicked, left in seen_left[1:]:
        assert not bool((clicked & left).any())
