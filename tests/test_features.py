"""The LLM-state features extractor: shapes, known answers per pooler, frozen encodings, bad input."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

from recarena.agents.features import HistoryFeaturesExtractor
from recarena.envs.observation import build_observation, observation_space

N_ITEMS, H, D = 12, 6, 8


def _embeddings(seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(N_ITEMS, D, generator=torch.Generator().manual_seed(seed)), dim=1)


def _batch() -> dict[str, torch.Tensor]:
    history = torch.tensor([[-1, -1, -1, 2, 5, 7], [-1, -1, -1, -1, -1, -1], [0, 1, 2, 3, 4, 5]])
    responses = torch.tensor([[0, 0, 0, 4.0, 1.0, 5.0], [0.0] * 6, [1, 2, 3, 4, 5, 3.0]])
    return build_observation(history, responses, _embeddings())


def _extractor(pooler: str = "mean", use_llm_state: bool = True, keys=("history", "responses", "llm_state")):
    torch.manual_seed(0)
    full = observation_space(N_ITEMS, H, D)
    space = spaces.Dict({k: full[k] for k in keys})
    return HistoryFeaturesExtractor(space, _embeddings(), embed_dim=4, pooler=pooler, use_llm_state=use_llm_state)


@pytest.mark.parametrize("pooler", ["mean", "gru", "attention"])
@pytest.mark.parametrize("use_llm_state", [True, False])
def test_output_shape_matches_features_dim(pooler: str, use_llm_state: bool) -> None:
    extractor = _extractor(pooler, use_llm_state)
    out = extractor(_batch())
    assert extractor.features_dim == 4 + (D if use_llm_state else 0)
    assert out.shape == (3, extractor.features_dim)
    assert torch.isfinite(out).all()


def test_mean_pooler_known_answer() -> None:
    extractor = _extractor("mean", use_llm_state=False)
    obs = _batch()
    out = extractor(obs)
    tokens = extractor.projection(_embeddings()[[2, 5, 7]]) + extractor.response_projection(
        torch.tensor([[4.0], [1.0], [5.0]]) / 5.0
    )
    torch.testing.assert_close(out[0], tokens.mean(0))
    assert torch.equal(out[1], torch.zeros(4))  # empty history pools to zero


def test_gru_pooler_equals_gru_over_unpadded_sequence() -> None:
    extractor = _extractor("gru", use_llm_state=False)
    obs = _batch()
    out = extractor(obs)
    tokens = extractor.tokens(obs["history"][:1, 3:], obs["responses"][:1, 3:])
    _, hidden = extractor.gru(tokens)
    torch.testing.assert_close(out[0], hidden[-1, 0])
    assert torch.equal(out[1], torch.zeros(4))


@pytest.mark.parametrize("pooler", ["mean", "gru"])
def test_padding_length_does_not_change_order_free_poolers(pooler: str) -> None:
    """The same history in a longer (more padded) window gives the same pooled vector."""
    torch.manual_seed(0)
    short = HistoryFeaturesExtractor(observation_space(N_ITEMS, 3, D), _embeddings(), embed_dim=4, pooler=pooler)
    torch.manual_seed(0)
    long = HistoryFeaturesExtractor(observation_space(N_ITEMS, 6, D), _embeddings(), embed_dim=4, pooler=pooler)
    a = build_observation(torch.tensor([[2, 5, 7]]), torch.tensor([[4.0, 1.0, 5.0]]), _embeddings())
    b = build_observation(torch.tensor([[-1, -1, -1, 2, 5, 7]]), torch.tensor([[0, 0, 0, 4.0, 1.0, 5.0]]), _embeddings())
    torch.testing.assert_close(short(a), long(b))


def test_attention_is_order_sensitive_and_handles_empty_history() -> None:
    extractor = _extractor("attention", use_llm_state=False)
    with torch.no_grad():
        extractor.positions.copy_(torch.randn(H, 4))
    obs = _batch()
    flipped = {k: v.clone() for k, v in obs.items()}
    flipped["history"][0, 3:] = torch.tensor([7, 5, 2])
    flipped["responses"][0, 3:] = torch.tensor([5.0, 1.0, 4.0])
    assert not torch.allclose(extractor(obs)[0], extractor(flipped)[0])
    # An empty history attends only to the learned "no history" token.
    expected = extractor.value(extractor.empty_token[0, 0])
    torch.testing.assert_close(extractor(obs)[1], expected)


def test_llm_state_recomputed_when_not_observed() -> None:
    observed = _extractor("mean")
    recomputed = _extractor("mean", keys=("history", "responses"))
    obs = _batch()
    torch.testing.assert_close(observed(obs), recomputed({"history": obs["history"], "responses": obs["responses"]}))
    torch.testing.assert_close(observed(obs)[:, 4:], obs["llm_state"])


def test_sb3_float_history_is_accepted() -> None:
    """SB3 hands Box observations over as float32; indices must survive the round trip."""
    extractor = _extractor("gru")
    obs = _batch()
    as_float = {k: v.to(torch.float32) for k, v in obs.items()}
    torch.testing.assert_close(extractor(obs), extractor(as_float))


def test_item_encodings_are_frozen_and_not_in_state_dict() -> None:
    extractor = _extractor("attention")
    assert "item_embeddings" not in extractor.state_dict()
    assert all(p is not extractor.item_embeddings for p in extractor.parameters())
    extractor(_batch()).sum().backward()
    assert extractor.projection.weight.grad is not None and extractor.projection.weight.grad.abs().sum() > 0
    assert extractor.item_embeddings.grad is None


def test_invalid_arguments() -> None:
    space = observation_space(N_ITEMS, H, D)
    with pytest.raises(ValueError, match="pooler must be one of"):
        HistoryFeaturesExtractor(space, _embeddings(), pooler="lstm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="item_embeddings has 5 rows"):
        HistoryFeaturesExtractor(space, _embeddings()[:5])
    with pytest.raises(ValueError, match="llm_state has 8 dims"):
        HistoryFeaturesExtractor(space, torch.randn(N_ITEMS, 3))
    with pytest.raises(ValueError, match="embed_dim"):
        HistoryFeaturesExtractor(space, _embeddings(), embed_dim=0)
    with pytest.raises(ValueError, match="Dict observation space"):
        HistoryFeaturesExtractor(spaces.Box(0, 1, (3,)), _embeddings())  # type: ignore[arg-type]


def test_unanswered_responses_are_observed_as_the_top_response() -> None:
    """NaN responses (not answered, e.g. implicit logs) are observed as MAX_RESPONSE, in the declared
    space, and pooled as such: every path (env, replay, evaluation) builds the same observation."""
    history = torch.tensor([[-1, 2, 5, 7]])
    unanswered = build_observation(history, torch.tensor([[float("nan"), 4.0, float("nan"), 1.0]]), _embeddings())
    top = build_observation(history, torch.tensor([[0.0, 4.0, 5.0, 1.0]]), _embeddings())
    assert torch.equal(unanswered["responses"], top["responses"])
    assert torch.equal(unanswered["llm_state"], top["llm_state"])
    space = observation_space(N_ITEMS, 4, D)
    assert space.contains({key: value[0].numpy() for key, value in unanswered.items()})
