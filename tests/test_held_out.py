"""Held out means held out: no test event of a split reaches any fit that scores that split.

evaluate.py runs every protocol on tiny data with every fitted baseline, while the fits (most-popular
counts, SASRec, GRU4Rec, the preference model behind greedy and the simulated users, the logged
simulator, the off-policy logging counts and reward model) record the (user, item) events they are
given and the scoring functions record which agent scored which held-out events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recarena.agents.baselines import GreedyAgent, MostPopularAgent, RandomAgent, SequenceModelAgent
from recarena.cli import evaluate
from recarena.data import leave_last_out, temporal_split
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.data.spec import data_spec
from recarena.evaluation import ope_logs, ranking, replay, simulated
from recarena.simulators import preference
from recarena.simulators.logged import LoggedUserSimulator
from tests._report_fixtures import write_tiny_data

Events = set[tuple[int, int]]


def events(part: Any) -> Events:
    """The (user, item) events of a log, a split's train + valid parts or a query set's targets."""
    if isinstance(part, LogSplit):
        return events(part.train) | events(part.valid)
    if isinstance(part, InteractionLog):
        return set(zip(part.user.tolist(), part.item.tolist(), strict=True))
    return set(zip(part.user.tolist(), part.target.tolist(), strict=True))  # EvalQueries


class Recorder:
    """What each fitted object saw (by id) and what each scoring call scored."""

    def __init__(self) -> None:
        self.seen: dict[int, Events] = {}
        self.scored: list[tuple[str, Any, Events, Events]] = []  # (protocol, agent, held-out events, other fits)

    def fitted(self, model: Any, *parts: Any) -> None:
        self.seen.setdefault(id(model), set()).update(*(events(p) for p in parts if p is not None))

    def agent_saw(self, agent: Any) -> Events:
        if isinstance(agent, RandomAgent):
            return set()
        model = agent.preference_model if isinstance(agent, GreedyAgent) else agent
        assert id(model) in self.seen, f"{type(agent).__name__} was fitted outside the instrumented fits"
        return self.seen[id(model)]


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    record = Recorder()

    def wrap_fit(cls: type) -> None:
        original = cls.fit

        def fit(self, train_log, *args, **kwargs):
            record.fitted(self, train_log)
            return original(self, train_log, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", fit)

    wrap_fit(MostPopularAgent)
    wrap_fit(SequenceModelAgent)  # SASRec and GRU4Rec
    original_preference = preference.fit_preference_model

    def fit_preference_model(train, item_embeddings, config=None, *args, valid=None, **kwargs):
        model = original_preference(train, item_embeddings, config, *args, valid=valid, **kwargs)
        record.fitted(model, train, valid)
        return model

    monkeypatch.setattr(preference, "fit_preference_model", fit_preference_model)
    original_simulator = LoggedUserSimulator.__init__

    def simulator_init(self, config=None, data=None, *args, **kwargs):
        assert isinstance(data, LogSplit), "evaluate.py builds its simulator from a split"
        record.fitted(self, data)  # sessions, logged answers, next-item and utility fits: train + valid
        original_simulator(self, config, data, *args, **kwargs)

    monkeypatch.setattr(LoggedUserSimulator, "__init__", simulator_init)

    def scorer(module: Any, name: str, protocol: str) -> None:
        original = getattr(module, name)

        def score(agent, target, *args, **kwargs):
            extra: Events = set()
            if protocol == "ope":
                reward_queries = kwargs.get("reward_queries")  # None: fitted on the queries themselves
                extra = events(args[0]) | events(target if reward_queries is None else reward_queries)
            if protocol == "simulated":
                extra = record.seen[id(target)] | record.seen.get(id(target.preference_model), set())
            record.scored.append((protocol, agent, target, extra))
            return original(agent, target, *args, **kwargs)

        monkeypatch.setattr(module, name, score)

    scorer(ranking, "evaluate_ranking", "ranking")
    scorer(replay, "evaluate_replay", "replay")
    scorer(ope_logs, "evaluate_ope", "ope")
    scorer(simulated, "evaluate_simulated", "simulated")
    return record


def test_no_test_event_reaches_a_fit_that_scores_its_split(recorder: Recorder, tmp_path: Path) -> None:
    data_dir = write_tiny_data(tmp_path / "data", n_users=40)
    log = data_spec(str(data_dir)).load()
    assert len(events(log)) == log.n_events  # (user, item) names one event in this data
    llo, temporal = leave_last_out(log), temporal_split(log)
    test_events = {"leave-last-out": events(llo.test), "temporal": events(temporal.test), "validation": events(llo.valid)}
    # The leak the split fits close: most of the temporal split's test events are in leave-last-out's training part.
    assert len(test_events["temporal"] & events(llo.train)) > len(test_events["temporal"]) / 2
    baselines = ["most_popular", "sasrec", "gru4rec", "greedy", "random"]
    args = [arg for name in baselines for arg in ("--baseline", name)]
    code = evaluate.main([*args, "--data", str(data_dir), "--out", str(tmp_path / "out"), "--k", "5",
                          "--splits", "leave-last-out,temporal,validation", "--item-encoder", "genres",
                          "--set", "sasrec.epochs=1", "--set", "gru4rec.epochs=1", "--set", "preference.epochs=2",
                          "--bootstrap", "20", "--ope-validation-events", "0", "--sim-users", "8", "--sim-steps", "2",
                          "--no-tensorboard"])
    assert code == 0
    protocols_scored: dict[str, int] = {}
    for protocol, agent, target, extra in recorder.scored:
        if protocol == "simulated":
            split, held_out = "leave-last-out", test_events["leave-last-out"]
        else:
            held_out = events(target)
            split = next(name for name, found in test_events.items() if found == held_out)
        saw = recorder.agent_saw(agent)
        assert saw or isinstance(agent, RandomAgent)
        assert not saw & held_out, f"{type(agent).__name__} scored {protocol} ({split}) after fitting on its test events"
        assert not extra & held_out, f"{protocol} ({split}): a fit of the protocol saw its test events"
        key = f"{protocol}/{split}"
        protocols_scored[key] = protocols_scored.get(key, 0) + 1
    assert protocols_scored == {key: len(baselines) for key in ("ranking/leave-last-out", "ranking/temporal",
                                                                "ranking/validation", "replay/temporal",
                                                                "ope/temporal", "simulated/leave-last-out")}
    fitted_on = json.loads((tmp_path / "out" / "report.json").read_text())["config"]["fitted_on"]
    assert fitted_on["replay"] == f"the temporal split's training part ({temporal.train.n_events} events)"


def test_fits_are_shared_between_splits_with_the_same_training_part(recorder: Recorder, tmp_path: Path) -> None:
    """Leave-last-out and its validation split share one most-popular fit; the temporal split gets its own."""
    data_dir = write_tiny_data(tmp_path / "data")
    code = evaluate.main(["--baseline", "most_popular", "--data", str(data_dir), "--out", str(tmp_path / "out"),
                          "--protocols", "ranking", "--splits", "leave-last-out,temporal,validation",
                          "--item-encoder", "genres", "--bootstrap", "20", "--no-tensorboard"])
    assert code == 0
    agents = [agent for _, agent, _, _ in recorder.scored]
    assert len(agents) == 3 and agents[0] is agents[2] and agents[0] is not agents[1]
    assert len(recorder.seen) == 2 and np.all([isinstance(a, MostPopularAgent) for a in agents])


def test_table_shows_n_a_where_a_run_was_not_scored() -> None:
    """A split no candidate was scored on keeps its columns, as n/a with the reason under the table."""
    from recarena.evaluation.report import table

    marker = {"not_scored": "n/a: trained on leave-last-out"}
    results = {"candidates": {"run": {"ranking": {"leave-last-out": {"metrics": {"HR@10": 0.09, "NDCG@10": 0.05, "MRR": 0.05}},
                                                  "temporal": marker}, "replay": marker}}}
    header, _, row, *notes = table(results, 10).splitlines()
    assert "HR@10 temp" in header and "replay reward" in header
    assert row.split() == ["run", "0.0900", "0.0500", "0.0500", "n/a", "n/a", "n/a", "n/a", "n/a"]
    assert any(note.startswith("* n/a: trained on leave-last-out; a run is scored only") for note in notes)
