"""The fidelity report's cold-items section (``recarena fidelity --choice-cold``): which temporal-split
test events count as cold, no test event in any fit that ranks them, the section in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.agents.baselines import MostPopularAgent, SequenceModelAgent
from recarena.cli import fidelity as fidelity_cli
from recarena.data import temporal_split
from recarena.data.spec import data_spec
from recarena.evaluation import cold_choice
from recarena.evaluation.histories import build_queries
from recarena.simulators import preference_store
from tests._eval_fixtures import make_log


def _known_count_log():
    """10 users of 10 events at increasing times: users 0-7 are the temporal split's training part, user 8
    its validation part, user 9 its test part. Training counts: item 0 and 4-7: 8, item 1: 5, item 2: 6,
    item 3: 1, item 20: 0 (but 1 validation event), items 21, 22: 0."""
    sequences = []
    for u in range(8):
        items = [0, 4, 5, 6, 7] + ([1] if u < 5 else []) + ([2] if u < 6 else []) + ([3] if u == 0 else [])
        items += list(range(8, 8 + 10 - len(items)))
        sequences.append(items)
    sequences.append([20, 0, 4, 5, 6, 7, 8, 9, 10, 11])
    sequences.append([0, 1, 2, 3, 20, 21, 4, 5, 6, 22])
    return make_log([[(i, 4.0) for i in s] for s in sequences], n_items=30)


def test_cold_groups_known_training_counts() -> None:
    split = temporal_split(_known_count_log())
    assert set(split.test.user.tolist()) == {9} and set(split.valid.user.tolist()) == {8}
    queries = build_queries(split)
    assert queries.target.tolist() == [0, 1, 2, 3, 20, 21, 4, 5, 6, 22]
    groups = cold_choice.cold_groups(split.train, queries)
    assert groups["all"].tolist() == list(range(10))
    assert groups["cold"].tolist() == [1, 3, 4, 5, 9]  # items 1 (5 events), 3 (1), 20, 21, 22 (0); not 2 (6)
    assert groups["unseen"].tolist() == [4, 5, 9]  # item 20's validation event is not a training event
    assert cold_choice.cold_groups(split.train, queries, threshold=6)["cold"].tolist() == [1, 2, 3, 4, 5, 9]


def test_paired_difference_known_answer() -> None:
    users = np.array([0, 0, 1, 2])
    with_text = np.array([0, 3, 20, 9])  # hits: 1, 1, 0, 1
    without = np.array([15, 3, 0, 30])  # hits: 0, 1, 1, 0
    d = cold_choice.paired_difference(users, with_text, without, n_bootstrap=200)
    assert d["hr10"] == pytest.approx((1 + 0 - 1 + 1) / 4)
    ndcg = lambda r: 1 / np.log2(r + 2) if r < 10 else 0.0  # noqa: E731
    assert d["ndcg10"] == pytest.approx(np.mean([ndcg(a) - ndcg(b) for a, b in zip(with_text, without, strict=True)]))
    assert d["mrr"] == pytest.approx(np.mean([1 / (a + 1) - 1 / (b + 1) for a, b in zip(with_text, without, strict=True)]))
    low, high = d["hr10_interval"]
    assert -1.0 <= low <= d["hr10"] <= high <= 1.0
    same = cold_choice.paired_difference(users, with_text, with_text, n_bootstrap=50)
    assert same["hr10"] == 0.0 and same["hr10_interval"] == [0.0, 0.0]


def _write_cold_data(folder: Path, n_users: int = 40, seed: int = 0) -> Path:
    """MovieLens-style files: the first 3/4 of the users (the temporal training part) pick among items
    0-14 by popularity, the later users also among items 15-29, which few or no training events have."""
    rng = np.random.default_rng(seed)
    sequences = []
    for u in range(n_users):
        n_items = 15 if u < n_users * 3 // 4 else 30
        weights = np.arange(n_items, 0, -1, dtype=float)
        items = rng.choice(n_items, size=int(rng.integers(6, 10)), replace=False, p=weights / weights.sum())
        sequences.append([(int(i), float(rng.integers(1, 6))) for i in items])
    sequences[0].append((15, 4.0))  # item 15: one training event
    log = make_log(sequences, 30)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u + 1},{i + 1},{r:.1f},{t}" for u, i, r, t in zip(log.user, log.item, log.rating, log.timestamp, strict=True)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{i + 1},Movie {i + 1} (1995),{'Drama' if i % 2 else 'Comedy'}" for i in range(30)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


def _genre_embeddings(items, config=None, cache_dir=None, *args, **kwargs) -> torch.Tensor:
    """Stand-in for the MiniLM item encodings: genre plus a per-item code (offline, instant)."""
    n = len(items.title)
    genres = torch.as_tensor(items.genre_matrix(), dtype=torch.float32)
    return torch.nn.functional.normalize(torch.cat([genres, 0.5 * torch.eye(n)], dim=1), dim=1)


def test_cold_section_fits_see_no_test_event_and_appear_in_the_report(tmp_path: Path, monkeypatch) -> None:
    events = lambda log: set(zip(log.user.tolist(), log.item.tolist(), strict=True))  # noqa: E731
    seen: list[tuple[str, set]] = []
    next_item_fits: list[tuple[set, set, bool]] = []
    original_fit = preference_store.fit_next_item_model

    def fit_next_item_model(train, item_embeddings, config=None, valid=None, **kwargs):
        next_item_fits.append((events(train), events(valid), config.use_text))
        seen.append(("next_item", events(train) | events(valid)))
        return original_fit(train, item_embeddings, config, valid=valid, **kwargs)

    monkeypatch.setattr(preference_store, "fit_next_item_model", fit_next_item_model)
    for cls in (MostPopularAgent, SequenceModelAgent):
        def fit(self, train_log, *args, _original=cls.fit, _name=cls.__name__, **kwargs):
            seen.append((_name, events(train_log)))
            return _original(self, train_log, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", fit)
    for module in (fidelity_cli, cold_choice, preference_store):
        monkeypatch.setattr(module, "encode_items", _genre_embeddings)

    data = _write_cold_data(tmp_path / "data")
    log = data_spec(str(data)).load()
    assert len(events(log)) == log.n_events  # (user, item) names one event here
    split = temporal_split(log)
    test_events = events(split.test)
    out = tmp_path / "fidelity"
    report = fidelity_cli.main(["--data", str(data), "--out", str(out), "--variants", "id", "--epochs", "1",
                                "--no-simulation", "--no-choice", "--choice-cold", "--sasrec-epochs", "1"])

    # both next-item models: fitted on the temporal training part, early-stopped on its validation part
    assert sorted(f[2] for f in next_item_fits) == [False, True]
    for train_events, valid_events, _ in next_item_fits:
        assert train_events == events(split.train) and valid_events == events(split.valid)
    assert {name for name, _ in seen} == {"next_item", "MostPopularAgent", "SequenceModelAgent"}
    for name, fitted in seen:
        assert not fitted & test_events, f"{name} saw {len(fitted & test_events)} test events"

    cold = report["choice_cold"]
    counts = np.bincount(split.train.item, minlength=log.n_items)[build_queries(split).target]
    assert cold["counts"]["all"]["queries"] == split.test.n_events
    assert cold["counts"]["cold"]["queries"] == int((counts <= 5).sum()) > 0
    assert cold["counts"]["unseen"]["queries"] == int((counts == 0).sum()) > 0
    assert set(cold["ranking"]) == {"choice_model", "choice_model_no_text", "most_popular", "sasrec"}
    assert set(cold["paired_difference"]) == {"all", "cold", "unseen"}
    for group in ("all", "cold", "unseen"):
        r = cold["ranking"]["choice_model"][group]
        d = cold["paired_difference"][group]
        assert d["hr10"] == pytest.approx(r["hr10"] - cold["ranking"]["choice_model_no_text"][group]["hr10"])
    assert cold["fits"]["choice_model"]["path"] != cold["fits"]["choice_model_no_text"]["path"]
    assert json.loads((out / "report.json").read_text())["choice_cold"]["counts"] == cold["counts"]
    markdown = (out / "report.md").read_text()
    assert "## Cold items (temporal split)" in markdown and "Paired difference" in markdown

    # a second report reads both next-item models from the cache: no new fit
    fidelity_cli.main(["--data", str(data), "--out", str(tmp_path / "again"), "--variants", "id", "--epochs", "1",
                       "--no-simulation", "--no-choice", "--choice-cold", "--sasrec-epochs", "1"])
    assert len(next_item_fits) == 2
