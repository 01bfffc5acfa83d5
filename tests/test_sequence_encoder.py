"""Tests of the causal sequence encoder (recarena.agents.sequence_encoder) and of the SASRec / GRU4Rec
baselines built on it: order matters (a task no pooled encoder can solve), determinism, the GRU's
incremental step, save/load, and cold items scored through their text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from recarena.agents import sequence_encoder
from recarena.agents.baselines import GRU4RecAgent, GRU4RecConfig, SequenceModelAgent, SequenceModelConfig
from recarena.agents.features import HistoryFeaturesExtractor
from recarena.agents.registry import load_agent, make_agent
from recarena.agents.sequence_encoder import SequenceEncoder, SequenceEncoderConfig, next_item_loss
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError
from recarena.envs.observation import build_observation, left_pad_histories, observation_space
from tests._baseline_fixtures import make_log, observation

SMALL = {"max_length": 8, "hidden_dim": 32, "n_heads": 2, "feedforward_dim": 64, "batch_size": 16, "dropout": 0.0,
         "learning_rate": 1e-2, "exclude_history": False, "init_from_llm": False}

# ------------------------------------------------------------------------------ order matters
# Every history is a permutation of the same items {0, 1, 2, 3}; the next item is 4 + the LAST one.
# An order-free (pooled) encoder sees the same input for every history, so it can do no better than
# chance among the four possible answers (0.25); a causal sequence encoder must get them all.
PERMUTATIONS = [list(p) for p in itertools.permutations(range(4))]


def order_log():
    return make_log([p + [4 + p[-1]] for p in PERMUTATIONS] * 4, 8)


def order_accuracy(scores: torch.Tensor) -> float:
    expected = torch.tensor([4 + p[-1] for p in PERMUTATIONS])
    return float((scores.argmax(dim=1) == expected).to(torch.float32).mean())


@pytest.mark.parametrize("cls, architecture", [(SequenceModelAgent, "transformer"), (GRU4RecAgent, "gru")])
def test_sequence_encoder_solves_an_order_task(cls, architecture):
    config = from_dict(cls.config_class, {**SMALL, "epochs": 40})
    agent = cls(8, config).fit(order_log())
    assert agent.model.config.architecture == architecture
    assert order_accuracy(agent.scores(observation(PERMUTATIONS, 6, 8))) == 1.0


def test_pooled_encoder_cannot_solve_the_order_task():
    torch.manual_seed(0)
    history, responses = left_pad_histories([np.asarray(p) for p in PERMUTATIONS], [np.full(4, 4.0)] * 24, 6)
    obs = build_observation(history, responses, torch.eye(8))
    space = observation_space(8, 6, 8)
    extractor = HistoryFeaturesExtractor(space, torch.eye(8), embed_dim=16, pooler="mean", use_llm_state=True)
    head = torch.nn.Linear(extractor.features_dim, 8)
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], lr=1e-2)
    target = torch.tensor([4 + p[-1] for p in PERMUTATIONS])
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(head(extractor(obs)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        features = extractor(obs)
        assert torch.allclose(features, features[:1].expand_as(features), atol=1e-5)  # one input for all
        assert order_accuracy(head(features)) <= 0.25


# -------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("cls", [SequenceModelAgent, GRU4RecAgent])
def test_fit_is_deterministic_per_seed(cls):
    text = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    config = from_dict(cls.config_class, {**SMALL, "epochs": 3})
    a = cls(8, config).fit(order_log(), item_embeddings=text)
    b = cls(8, config).fit(order_log(), item_embeddings=text)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = cls(8, from_dict(cls.config_class, {**SMALL, "epochs": 3, "seed": 1})).fit(order_log(), item_embeddings=text)
    assert not torch.equal(a.model.item_embedding, c.model.item_embedding)


# ------------------------------------------------------------------------------- GRU option


def test_gru_incremental_step_matches_reading_the_history():
    config = SequenceEncoderConfig(architecture="gru", hidden_dim=16, n_layers=2, max_length=10)
    torch.manual_seed(0)
    encoder = SequenceEncoder(12, config, torch.randn(12, 6)).eval()
    with torch.no_grad():
        encoder.text_projection.normal_()
    items = torch.tensor([[-1, -1, 3, 5, 7], [1, 2, 3, 4, 5]])
    responses = torch.tensor([[0, 0, 4.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    with torch.no_grad():
        read = encoder.encode_last(items, responses)
        state = encoder.initial_state(2)
        for t in range(items.shape[1]):
            output, state = encoder.advance(state, items[:, t], responses[:, t])
    assert torch.allclose(output, read, atol=1e-5)
    with pytest.raises(NotImplementedError, match="GRU"):
        SequenceEncoder(12, SequenceEncoderConfig()).initial_state(2)


@pytest.mark.parametrize("architecture", ["transformer", "gru"])
def test_scores_do_not_depend_on_padding(architecture):
    agent = make_agent("sasrec" if architecture == "transformer" else "gru4rec", 20, {**SMALL, "epochs": 1})
    short = agent.scores(observation([[3, 4, 5]], 4, 20))
    long = agent.scores(observation([[3, 4, 5]], 30, 20))  # more padding, and a window past max_length
    assert torch.allclose(short, long, atol=1e-5)
    batch = agent.scores(observation([[3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], 12, 20))
    assert torch.allclose(batch[0], short[0], atol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_newest_state_alone_equals_the_full_pass(n_layers):
    """encode_last computes only the newest position in the last block; it equals the full pass's."""
    torch.manual_seed(0)
    encoder = SequenceEncoder(30, SequenceEncoderConfig(n_layers=n_layers, hidden_dim=16, max_length=10),
                              torch.randn(30, 5)).eval()
    items = torch.randint(0, 30, (7, 10))
    items[0, :6], items[1, :9] = -1, -1
    responses = torch.rand(7, 10) * 5
    full = encoder(items, responses)[:, -1]
    torch.testing.assert_close(encoder(items, responses, last_only=True)[:, -1], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.encode_last(items, responses), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("group_rows", [2, 128])
def test_packed_newest_state_equals_the_padded_pass_with_its_gradients(monkeypatch, n_layers, group_rows):
    """encode_last in eval mode reads only the real tokens, rows sorted by length in groups
    (GROUP_ROWS); its state and every parameter's gradient equal the padded full pass's, with empty
    histories, padding inside a history or at its newest position, and rows out of length order."""
    monkeypatch.setattr(sequence_encoder, "GROUP_ROWS", group_rows)
    torch.manual_seed(0)
    encoder = SequenceEncoder(30, SequenceEncoderConfig(n_layers=n_layers, hidden_dim=16, max_length=10),
                              torch.randn(30, 5)).eval()
    with torch.no_grad():
        encoder.text_projection.normal_()  # a trained projection: the text part counts too
    items = torch.randint(0, 30, (9, 10))
    items[0, :6], items[1, :9], items[2], items[5, :2], items[7, :8] = -1, -1, -1, -1, -1
    items[3, 4], items[4, -1] = -1, -1  # a gap, and a newest position left empty: padding all the same
    responses = torch.rand(9, 10) * 5
    weights = torch.randn(9, 16)

    def state_and_gradients(last_only: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        encoder.zero_grad()
        state = encoder(items, responses, last_only=last_only)[:, -1]
        (state * weights).sum().backward()
        return state.detach(), [p.grad.clone() for p in encoder.parameters()]

    packed, packed_grads = state_and_gradients(True)
    full, full_grads = state_and_gradients(False)
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=1e-5)
    for (name, _), a, b in zip(encoder.named_parameters(), packed_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


# ------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_save_load_round_trip_keeps_text_and_scores(tmp_path, name):
    text = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    agent = make_agent(name, 8, {**SMALL, "epochs": 2}).fit(order_log(), item_embeddings=text)
    agent.save(tmp_path / name)
    loaded = load_agent(tmp_path / name)
    assert type(loaded) is type(agent) and loaded.config == agent.config
    assert torch.equal(loaded.model.item_text, text)
    obs = observation([[0, 1, 2], [3]], 6, 8)
    assert torch.equal(loaded.scores(obs), agent.scores(obs))
    assert loaded.fitted and loaded.fit_info["epochs"] == 2


# ------------------------------------------------------------------------------- cold items


def test_cold_items_are_scored_through_their_text():
    # 3 groups of 4 items; the text of an item is its group (one-hot). Users walk within one group;
    # the last item of each group (3, 7, 11) never occurs in training.
    rng = np.random.default_rng(0)
    warm = [[g * 4 + i for i in range(3)] for g in range(3)]
    sequences = [[int(rng.choice(warm[u % 3])) for _ in range(8)] for u in range(90)]
    text = torch.eye(3).repeat_interleave(4, dim=0)
    config = from_dict(SequenceModelConfig, {**SMALL, "epochs": 30})
    agent = SequenceModelAgent(12, config).fit(make_log(sequences, 12), item_embeddings=text)
    obs = observation([warm[g] for g in range(3)], 6, 12)
    model, cold = agent.model, torch.tensor([3, 7, 11])
    with torch.no_grad():
        state = model.encode_last(obs["history"], obs["responses"])
        text_scores = state @ (model.item_text @ model.text_projection).T  # the text part of every score
        # a cold item's text part ranks it in its own group: its group's history scores it first
        assert torch.equal(text_scores[:, cold].argmax(dim=1), torch.arange(3))
    # and an encoder with no id embeddings scores cold items from their text alone, in the same order
    text_only = SequenceModelAgent(12, from_dict(SequenceModelConfig, {**SMALL, "epochs": 30, "use_ids": False}))
    text_only.fit(make_log(sequences, 12), item_embeddings=text)
    assert torch.equal(text_only.scores(obs)[:, cold].argmax(dim=1), torch.arange(3))


# ---------------------------------------------------------------------------------- the loss


def test_next_item_loss_full_and_sampled():
    hidden, vectors = torch.randn(5, 4), torch.randn(9, 4)
    targets = torch.tensor([0, 3, 8, 2, 2])
    full = next_item_loss(hidden, targets, vectors)
    assert torch.allclose(full, torch.nn.functional.cross_entropy(hidden @ vectors.T, targets))
    sampled = next_item_loss(hidden, targets, vectors, "sampled_softmax", 4, torch.Generator().manual_seed(0))
    assert sampled.isfinite() and sampled > 0


@pytest.mark.parametrize("data, match", [({"architecture": "lstm"}, "transformer"), ({"use_ids": False, "use_text": False}, "use_ids"),
                                         ({"hidden_dim": 30, "n_heads": 4}, "divisible")])
def test_invalid_encoder_configs(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(SequenceEncoderConfig, data)
    assert GRU4RecConfig(hidden_dim=30, n_heads=4).architecture == "gru"  # heads do not matter to a GRU


@pytest.mark.parametrize("name, cls", [("sasrec", SequenceModelAgent), ("gru4rec", GRU4RecAgent)])
def test_evaluate_builds_both_baselines(name, cls):
    from recarena.data.splits import leave_last_out
    from recarena.evaluation.sources import build_baseline

    split = leave_last_out(order_log())
    agent = build_baseline(name, split, torch.eye(8), options={**SMALL, "epochs": 1})
    assert type(agent) is cls and agent.fitted and agent.model.text_dim == 8
