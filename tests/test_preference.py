"""Tests of the LLM-derived preference model (simulators.preference) on small synthetic logs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recarena.core.errors import CheckpointError, ConfigError, DataFormatError
from recarena.data.interactions import InteractionLog, ItemMetadata
from recarena.simulators.preference import (
    Judgements,
    PreferenceConfig,
    PreferenceModel,
    evaluate_rmse,
    fit_preference_model,
    preference_config,
    user_profiles,
)


def make_log(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    name: str = "synthetic",
    item_prefix: str = "i",
) -> InteractionLog:
    """An InteractionLog from event arrays (sorted by user, then by event order as time)."""
    order = np.argsort(users, kind="stable")
    users, items, ratings = users[order], items[order], ratings[order]
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=offsets[1:])
    meta = ItemMetadata(
        title=[f"item {i}" for i in range(n_items)],
        year=np.zeros(n_items, dtype=np.int32),
        genres=[() for _ in range(n_items)],
        text=["" for _ in range(n_items)],
    )
    return InteractionLog(
        name=name,
        user_raw_ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        item_raw_ids=np.array([f"{item_prefix}{i}" for i in range(n_items)], dtype=object),
        user=users.astype(np.int64),
        item=items.astype(np.int64),
        rating=ratings.astype(np.float32),
        timestamp=np.arange(len(users), dtype=np.int64),
        user_offsets=offsets,
        items=meta,
    )


def latent_world(seed: int = 0, n_users: int = 80, n_items: int = 60, per_user: int = 30, text_dim: int = 12):
    """Ratings from known latent factors; item "text" encodings carry the item factors (plus noise dims).

    Returns (train, test, item_embeddings, cold_items); ``cold_items`` have at most one training rating.
    """
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(n_users, 3))
    item_factors = rng.normal(size=(n_items, 3))
    item_bias = rng.normal(scale=0.5, size=n_items)
    text = np.concatenate(
        [item_factors, item_bias[:, None], rng.normal(size=(n_items, text_dim - 4))], axis=1
    )
    item_embeddings = torch.as_tensor(text, dtype=torch.float32)

    def rate(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        score = 3.0 + item_bias[i] + 0.6 * (user_factors[u] * item_factors[i]).sum(1)
        return np.clip(score + rng.normal(scale=0.1, size=len(u)), 1.0, 5.0)

    cold = np.arange(n_items - 12, n_items)  # the last 12 items are cold: rare in training
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        users.append(np.full(per_user, u))
        items.append(chosen)
    users, items = np.concatenate(users), np.concatenate(items)
    held_out = rng.random(len(users)) < 0.2
    is_cold = np.isin(items, cold)
    train_keep = ~held_out & ~is_cold
    # give each cold item a single training rating so it is rare, not absent
    for item in cold:
        first = np.flatnonzero(items == item)[0]
        train_keep[first] = True
    test_keep = ~train_keep & (held_out | is_cold)
    ratings = rate(users, items)
    train = make_log(
        users[train_keep], items[train_keep], ratings[train_keep], n_users, n_items, "synthetic/train"
    )
    test = make_log(
        users[test_keep], items[test_keep], ratings[test_keep], n_users, n_items, "synthetic/test"
    )
    return train, test, item_embeddings, cold


FAST = dict(epochs=60, batch_size=256, lr=0.02, dim=8, weight_decay=0.01, patience=60)


@pytest.fixture(scope="module")
def world():
    return latent_world()


@pytest.fixture(scope="module")
def combined(world):
    train, _, embeddings, _ = world
    return fit_preference_model(train, embeddings, preference_config(FAST), progress=False)


def rmse(model: PreferenceModel, log: InteractionLog, mask: np.ndarray | None = None) -> float:
    prediction = model.predict(torch.as_tensor(log.user), torch.as_tensor(log.item).unsqueeze(1))[
        :, 0
    ].numpy()
    error = prediction - log.rating
    if mask is not None:
        error = error[mask]
    return float(np.sqrt(np.mean(error**2)))


def test_fits_latent_factor_ratings_far_below_mean_baseline(world, combined):
    train, test, _, cold = world
    warm = ~np.isin(test.item, cold)
    baseline = float(np.sqrt(np.mean((test.rating[warm] - train.rating.mean()) ** 2)))
    fitted = rmse(combined, test, warm)
    assert fitted < 0.5 * baseline, (fitted, baseline)
    assert math.isclose(evaluate_rmse(combined, test), rmse(combined, test), rel_tol=1e-5)


def test_text_features_make_cold_items_predictable(world, combined):
    train, test, embeddings, cold = world
    id_only = fit_preference_model(train, embeddings, preference_config(FAST, variant="id"), progress=False)
    is_cold = np.isin(test.item, cold)
    assert is_cold.sum() > 100
    id_cold, combined_cold = rmse(id_only, test, is_cold), rmse(combined, test, is_cold)
    # ID-only knows a cold item from one rating; the text encodings carry its factors and bias.
    assert combined_cold < 0.7 * id_cold, (combined_cold, id_cold)
    text_only = fit_preference_model(
        train, embeddings, preference_config(FAST, variant="text"), progress=False
    )
    assert rmse(text_only, test, is_cold) < 0.7 * id_cold


def test_variants_switch_parts_off(world):
    train, _, embeddings, _ = world
    names = {}
    for variant in ("id", "text", "combined"):
        model = PreferenceModel(
            preference_config(variant=variant), train.n_users, embeddings, user_profiles(train, embeddings)
        )
        names[variant] = {name for name, _ in model.named_parameters()}
    assert "item_factor" in names["id"] and "text_projection" not in names["id"]
    assert "profile_projection" not in names["id"]
    assert "item_factor" not in names["text"] and "item_bias" not in names["text"]
    assert {"text_projection", "profile_projection", "item_factor"} <= names["combined"]


def test_deterministic_under_seed(world):
    train, test, embeddings, _ = world
    config = preference_config(FAST, epochs=5)
    users, items = torch.as_tensor(test.user), torch.as_tensor(test.item).unsqueeze(1)
    first = fit_preference_model(train, embeddings, config, progress=False).predict(users, items)
    second = fit_preference_model(train, embeddings, config, progress=False).predict(users, items)
    other = fit_preference_model(train, embeddings, preference_config(FAST, epochs=5, seed=1), progress=False)
    assert torch.equal(first, second)
    assert not torch.equal(first, other.predict(users, items))


def test_early_stopping_keeps_best_validation_epoch(world):
    train, test, embeddings, _ = world
    model = fit_preference_model(
        train, embeddings, preference_config(FAST, epochs=40, patience=2), valid=test, progress=False
    )
    info = model.fit_info
    best = min(record["valid_rmse"] for record in info["history"])
    assert info["best_valid_rmse"] == pytest.approx(best)
    assert info["epochs_run"] < 40  # early stopping fired (patience 2)
    assert evaluate_rmse(model, test) == pytest.approx(best, rel=1e-5)


def test_predict_shapes_and_range(world, combined):
    train, _, _, _ = world
    users = torch.tensor([0, 1, 2], dtype=torch.int64)
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], dtype=torch.int64)
    ratings = combined.predict(users, items)
    assert ratings.shape == (3, 4) and ratings.dtype == torch.float32
    assert bool(((ratings >= 1) & (ratings <= 5)).all())
    everything = combined.predict_all(users)
    assert everything.shape == (3, train.n_items)
    assert torch.allclose(everything.gather(1, items), ratings, atol=1e-5)
    like = combined.like_probability(users, items)
    assert like.shape == (3, 4) and bool(((like > 0) & (like < 1)).all())
    raw = combined.raw_scores(users, items)
    # like probability is monotone in the predicted rating and 1/2 at 3.5 stars
    order = raw.flatten().argsort()
    assert bool((like.flatten()[order].diff() >= 0).all())
    assert combined.like_probability(users).shape == (3, train.n_items)


def test_extreme_predictions_are_clamped(world):
    train, _, embeddings, _ = world
    model = PreferenceModel(
        preference_config(variant="id"), train.n_users, embeddings, global_mean=9.0
    ).eval()
    assert torch.all(model.predict(torch.tensor([0]), torch.tensor([[0, 1]])) == 5.0)
    assert torch.all(model.predict_all(torch.tensor([0])) == 5.0)


@pytest.mark.parametrize(
    "user, items, error",
    [
        (torch.tensor([0.0]), torch.tensor([[0]]), ValueError),  # float users
        (torch.tensor([0]), torch.tensor([0]), ValueError),  # items not [B, k]
        (torch.tensor([0, 1]), torch.tensor([[0]]), ValueError),  # batch mismatch
        (torch.tensor([10_000]), torch.tensor([[0]]), IndexError),
        (torch.tensor([0]), torch.tensor([[-1]]), IndexError),
    ],
)
def test_predict_rejects_bad_inputs(combined, user, items, error):
    with pytest.raises(error):
        combined.predict(user, items)


def test_save_load_round_trip(tmp_path, world, combined):
    train, test, _, _ = world
    combined.save(tmp_path / "pref")
    meta = json.loads((tmp_path / "pref" / "preference.json").read_text())
    assert meta["item_set_fingerprint"] == train.item_set_fingerprint()
    assert meta["train_fingerprint"] == train.fingerprint()
    loaded = PreferenceModel.load(tmp_path / "pref", map_location="cpu", log=train)
    assert loaded.config == combined.config
    users, items = torch.as_tensor(test.user), torch.as_tensor(test.item).unsqueeze(1)
    assert torch.equal(loaded.predict(users, items), combined.predict(users, items))
    assert torch.equal(loaded.predict_all(users[:5]), combined.predict_all(users[:5]))
    assert not list((tmp_path / "pref").glob("*.tmp"))


def test_load_against_other_item_set_is_an_error(tmp_path, world, combined):
    train, _, _, _ = world
    combined.save(tmp_path / "pref")
    other = make_log(train.user, train.item, train.rating, train.n_users, train.n_items, item_prefix="movie")
    with pytest.raises(CheckpointError, match="item set"):
        PreferenceModel.load(tmp_path / "pref", log=other)
    with pytest.raises(CheckpointError, match="not a saved preference model"):
        PreferenceModel.load(tmp_path / "missing")
    (tmp_path / "pref" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        PreferenceModel.load(tmp_path / "pref")


def test_invalid_config_is_an_error():
    with pytest.raises(ConfigError, match="valid keys"):
        preference_config(learning_rate=0.1)
    with pytest.raises(ConfigError, match="variant"):
        preference_config(variant="hybrid")
    with pytest.raises(ConfigError, match="lr"):
        preference_config(lr=-1.0)
    with pytest.raises(ConfigError, match="distill_weight"):
        PreferenceConfig(distill_weight=-0.5)


def test_implicit_log_is_refused(world):
    train, _, embeddings, _ = world
    implicit = make_log(train.user, train.item, np.full(train.n_events, np.nan), train.n_users, train.n_items)
    with pytest.raises(DataFormatError, match="no explicit ratings"):
        fit_preference_model(implicit, embeddings, preference_config(FAST), progress=False)


def test_embedding_shape_mismatch_is_an_error(world):
    train, _, embeddings, _ = world
    with pytest.raises(ValueError, match="item_embeddings"):
        fit_preference_model(train, embeddings[:-1], preference_config(FAST), progress=False)


def test_distillation_pulls_like_probability_towards_judge(world):
    train, _, embeddings, _ = world
    # Item 0's judgements say every user loves it; the ratings never do (item 0 gets low ratings).
    keep = train.item != 0
    users = np.concatenate([train.user[keep], np.arange(5)])
    items = np.concatenate([train.item[keep], np.zeros(5, dtype=np.int64)])
    ratings = np.concatenate([train.rating[keep], np.full(5, 1.0)])
    log = make_log(users, items, ratings, train.n_users, train.n_items)
    judged = Judgements(
        torch.arange(train.n_users), torch.zeros(train.n_users, dtype=torch.int64), torch.ones(train.n_users)
    )
    config = dict(FAST, epochs=20, variant="id")
    plain = fit_preference_model(log, embeddings, preference_config(config), progress=False)
    distilled = fit_preference_model(
        log, embeddings, preference_config(config, distill_weight=1.0), judgements=judged, progress=False
    )
    everyone = torch.arange(train.n_users)
    item0 = torch.zeros(train.n_users, 1, dtype=torch.int64)
    assert (
        distilled.like_probability(everyone, item0).mean()
        > plain.like_probability(everyone, item0).mean() + 0.2
    )
    assert distilled.fit_info["distilled_pairs"] == train.n_users
    with pytest.raises(ValueError, match="probabilities"):
        Judgements(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.5]))


# -- fidelity report pieces (recarena.evaluation.fidelity) -----------------------------------------------

from recarena.evaluation import fidelity  # noqa: E402


def test_user_last_split_holds_out_each_users_latest_events(world):
    train, _, _, _ = world
    from recarena.data.splits import user_last_split

    split = user_last_split(train, test_fraction=0.2, valid_fraction=0.1)
    assert split.train.n_events + split.valid.n_events + split.test.n_events == train.n_events
    for user in range(train.n_users):
        n = int(train.sequence_lengths()[user])
        t_test = split.test.timestamp[split.test.user_slice(user)]
        t_train = split.train.timestamp[split.train.user_slice(user)]
        assert len(t_test) == math.ceil(0.2 * n)
        assert t_train.max() < t_test.min()


def test_ranking_metrics_known_answers():
    users = np.array([0, 0, 0, 1, 1, 1])
    ratings = np.array([5.0, 3.0, 1.0, 2.0, 4.0, 1.0])
    assert fidelity.heldout_ndcg(users, ratings, ratings) == (1.0, 2)
    assert fidelity.per_user_spearman(users, ratings, ratings, min_ratings=3) == (1.0, 2)
    reversed_scores = -ratings
    rho, _ = fidelity.per_user_spearman(users, reversed_scores, ratings, min_ratings=3)
    assert rho == pytest.approx(-1.0)
    ndcg, _ = fidelity.heldout_ndcg(users, reversed_scores, ratings)
    assert ndcg < 0.7
    metrics = fidelity.pointwise_metrics(users, ratings + 0.5, ratings, 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(np.where(ratings == 5.0, 0.0, 0.25))))
    assert metrics["auc"] == 1.0


def test_full_ranking_of_a_model_that_knows_the_answer(world):
    train, test, embeddings, _ = world
    model = PreferenceModel(preference_config(variant="id", dim=1), train.n_users, embeddings).eval()
    with torch.no_grad():  # a model whose item bias marks exactly item 7 as best for everyone
        model.item_bias.zero_()
        model.item_bias[7] = 5.0
    held = make_log(np.arange(3), np.full(3, 7), np.full(3, 5.0), train.n_users, train.n_items)
    seen = make_log(np.array([0]), np.array([1]), np.array([4.0]), train.n_users, train.n_items)
    result = fidelity.full_ranking(model, seen, held)
    assert result == {"users": 3, "hr10": 1.0, "ndcg10": 1.0}


def test_report_runs_on_a_small_log(world):
    train, _, embeddings, _ = world
    report = fidelity.run_report(
        train, embeddings, base_config=dict(FAST, epochs=3), simulate=False, progress=False
    )
    assert set(report["models"]) == {"mean", "id", "text", "combined"}
    for name in ("id", "text", "combined"):
        assert report["models"][name]["overall"]["rmse"] < report["models"]["mean"]["overall"]["rmse"]
        assert "hr10" in report["models"][name]["full_ranking"]
    assert "### cold items" in fidelity.format_tables(report)
