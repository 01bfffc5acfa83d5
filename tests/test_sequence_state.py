"""The sequence state of the native agents: order-aware known answer, pretraining (cache, determinism,
training data only), config validation."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

import recarena.agents.sequence_state as sequence_state
from recarena.agents.item_scorer import ItemScorer, next_item_loss
from recarena.agents.native_dqn import NativeDQNAgent, NativeDQNConfig
from recarena.agents.native_ppo import NativePPOAgent, NativePPOConfig
from recarena.agents.next_item_training import sequence_windows
from recarena.agents.registry import make_agent
from recarena.agents.sequence_state import SequenceItemScorer
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError
from recarena.envs.observation import build_observation

N_ITEMS = 16
PAIRS = list(itertools.permutations(range(4), 2))  # ordered pairs of the context items 0..3
ENCODER = {"hidden_dim": 32, "n_layers": 2, "n_heads": 2, "feedforward_dim": 64, "dropout": 0.0, "max_length": 4}


def logged_env(sequences: list[list[int]], history_length: int = 4, seed: int = 0) -> SimpleNamespace:
    """What the agents read of an env: its logged training sequences, item encodings, window, slate."""
    item = torch.tensor([x for s in sequences for x in s], dtype=torch.int64)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    logged = SimpleNamespace(offsets=offsets, item=item, rating=torch.full((len(item),), 5.0), lengths=lengths)
    embeddings = torch.nn.functional.normalize(torch.randn(N_ITEMS, 8, generator=torch.Generator().manual_seed(seed)), dim=1)
    return SimpleNamespace(logged_sequences=logged, item_embeddings=embeddings, history_length=history_length,
                           slate_size=1, n_items=N_ITEMS)


def order_env() -> SimpleNamespace:
    """Sequences [a, b, t(a, b)]: the next item after the last two is set by their *order* (12
    ordered pairs of 4 context items, 12 distinct targets 4..15), each sequence 3 times."""
    return logged_env([[a, b, 4 + i] for i, (a, b) in enumerate(PAIRS)] * 3)


def pair_observation(env: SimpleNamespace) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    history = torch.tensor([[-1, -1, a, b] for a, b in PAIRS])
    target = torch.arange(4, 4 + len(PAIRS))
    return build_observation(history, torch.full(history.shape, 5.0), env.item_embeddings), target


def sequence_config(cls=NativePPOConfig, **overrides):
    settings = {"state": "sequence", "encoder": ENCODER, "pretrain_epochs": 80, "pretrain_batch_size": 36,
                "pretrain_learning_rate": 1e-2}
    return from_dict(cls, {**settings, **overrides})


pytestmark = pytest.mark.usefixtures("fresh_cache")  # a RECARENA_CACHE of each test's own


@pytest.mark.parametrize("agent_class", [NativePPOAgent, NativeDQNAgent], ids=["ppo", "dqn"])
def test_pretrained_sequence_state_learns_what_the_pooled_state_cannot(agent_class):
    env = order_env()
    observation, target = pair_observation(env)
    config_class = NativePPOConfig if agent_class is NativePPOAgent else NativeDQNConfig
    agent = agent_class(N_ITEMS, sequence_config(config_class), env=env)
    accuracy = (agent.scores(observation).argmax(1) == target).float().mean()
    assert accuracy == 1.0
    assert agent.pretrain_info["cached"] is False
    if agent_class is NativeDQNAgent:  # the target network starts as the pretrained online one
        for online, target_weight in zip(agent.network.parameters(), agent.target_network.parameters(), strict=True):
            assert torch.equal(online, target_weight)

    # The pooled state of (a, b) and (b, a) is the same, so at most one of the two targets wins.
    torch.manual_seed(0)
    pooled = ItemScorer(env.item_embeddings, 32)
    optimizer = torch.optim.Adam(pooled.parameters(), lr=1e-2)
    for _ in range(300):
        loss = next_item_loss(pooled(observation), observation["history"], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = pooled(observation)
    swapped = [PAIRS.index((b, a)) for a, b in PAIRS]
    torch.testing.assert_close(scores, scores[swapped])
    assert (scores.argmax(1) == target).float().mean() <= 0.5
    assert float(loss.detach()) > 0.6  # ~log 2: it cannot beat a coin flip between the two orders


def test_untrained_sequence_state_does_not_know_the_answer():
    env = order_env()
    observation, target = pair_observation(env)
    agent = NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=0), env=env)
    assert agent.pretrain_info is None
    assert (agent.scores(observation).argmax(1) == target).float().mean() < 0.5


def test_pretraining_is_cached_and_deterministic(monkeypatch, tmp_path):
    calls = []
    fit = sequence_state.fit_next_item

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return fit(*args, **kwargs)

    monkeypatch.setattr(sequence_state, "fit_next_item", counting_fit)
    env = order_env()
    config = sequence_config(pretrain_epochs=5)
    first = NativePPOAgent(N_ITEMS, config, env=env)
    second = NativePPOAgent(N_ITEMS, config, env=env)
    assert len(calls) == 1 and second.pretrain_info["cached"] is True
    assert second.pretrain_info["history"] == first.pretrain_info["history"]
    for key, value in first.network.actor.encoder.state_dict().items():
        assert torch.equal(value, second.network.actor.encoder.state_dict()[key]), key

    monkeypatch.setenv("RECARENA_CACHE", str(tmp_path / "another_cache"))  # same seed, refitted: same weights
    third = NativePPOAgent(N_ITEMS, config, env=env)
    assert len(calls) == 2 and third.pretrain_info["cached"] is False
    for key, value in first.network.actor.encoder.state_dict().items():
        assert torch.equal(value, third.network.actor.encoder.state_dict()[key]), key

    # The key covers the data, the encoder and the pretraining config (and the seed).
    NativePPOAgent(N_ITEMS, config, env=logged_env([[1, 2, 3], [3, 2, 1]]))
    NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=5, encoder={**ENCODER, "hidden_dim": 16}), env=env)
    NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=6), env=env)
    NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=5, seed=1), env=env)
    assert len(calls) == 6
    # Another agent family with the same options reuses the same pretraining.
    dqn = NativeDQNAgent(N_ITEMS, sequence_config(NativeDQNConfig, pretrain_epochs=5), env=env)
    assert len(calls) == 6 and dqn.pretrain_info["cached"] is True


def test_pretraining_reads_only_the_logged_training_sequences(monkeypatch):
    """The env's logged_sequences are the simulator's training log; here each user's held-out last
    event is item 15, which the training sequences never contain, and it must not reach the fit."""
    held_out = 15
    full = [[1, 2, 3, 4, held_out], [5, 6, 7, held_out], [2, 9, 3, 8, held_out]]
    train = [s[:-1] for s in full]
    seen = []
    fit = sequence_state.fit_next_item
    monkeypatch.setattr(sequence_state, "fit_next_item", lambda model, windows, **kw: seen.append(windows) or
                        fit(model, windows, **kw))
    env = logged_env(train)
    NativeDQNAgent(N_ITEMS, sequence_config(NativeDQNConfig, pretrain_epochs=1), env=env)
    (inputs, _, targets), = seen
    logged = env.logged_sequences
    expected = sequence_windows(logged.offsets, logged.item, logged.rating, 4)
    assert torch.equal(inputs, expected[0]) and torch.equal(targets, expected[2])
    assert held_out not in inputs.tolist() and held_out not in targets.flatten().tolist()
    assert sorted(targets[targets >= 0].tolist()) == sorted(x for s in train for x in s[1:])


def test_pretraining_window_is_the_shorter_of_encoder_and_observation():
    env = logged_env([[1, 2, 3, 4, 5, 6, 7]], history_length=3)
    seen = []
    fit = sequence_state.fit_next_item
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequence_state, "fit_next_item", lambda model, windows, **kw: seen.append(windows) or
                      fit(model, windows, **kw))
        NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=1), env=env)
    assert seen[0][0].tolist() == [[4, 5, 6]] and seen[0][2].tolist() == [[5, 6, 7]]


def test_pretraining_needs_logged_sequences():
    env = SimpleNamespace(logged_sequences=None, item_embeddings=torch.zeros(N_ITEMS, 4), history_length=4,
                          slate_size=1, n_items=N_ITEMS, simulator=SimpleNamespace())
    with pytest.raises(ConfigError, match="pretrain_epochs needs a simulator with logged sequences"):
        NativePPOAgent(N_ITEMS, sequence_config(pretrain_epochs=1), env=env)


@pytest.mark.parametrize("name", ["native_ppo", "native_dqn"])
def test_config_validation_names_the_problem(name):
    embeddings = torch.zeros(N_ITEMS, 4)
    with pytest.raises(ConfigError, match=r"encoder\.widht.*hidden_dim"):  # unknown keys list the valid ones
        make_agent(name, N_ITEMS, {"state": "sequence", "encoder": {"widht": 3}}, item_embeddings=embeddings)
    with pytest.raises(ConfigError, match="state"):
        make_agent(name, N_ITEMS, {"state": "lstm"}, item_embeddings=embeddings)
    with pytest.raises(ConfigError, match="pretrain_epochs .* needs state: sequence"):
        make_agent(name, N_ITEMS, {"pretrain_epochs": 2}, item_embeddings=embeddings)
    with pytest.raises(ConfigError, match="divisible"):
        make_agent(name, N_ITEMS, {"state": "sequence", "encoder": {"hidden_dim": 5, "n_heads": 2}},
                   item_embeddings=embeddings)
    agent = make_agent(name, N_ITEMS, {"state": "sequence", "encoder": {"architecture": "gru", "hidden_dim": 8}},
                       item_embeddings=embeddings)
    scorer = agent.network if name == "native_dqn" else agent.network.actor
    assert isinstance(scorer, SequenceItemScorer) and scorer.encoder.config.architecture == "gru"


def test_sequence_scorer_is_the_encoders_dot_product_plus_bias():
    env = order_env()
    scorer = SequenceItemScorer(env.item_embeddings, from_dict(NativePPOConfig, {"encoder": ENCODER}).encoder)
    with torch.no_grad():
        scorer.item_bias.copy_(torch.randn(N_ITEMS))
    observation, _ = pair_observation(env)
    expected = scorer.encoder.scores(observation["history"], observation["responses"]) + scorer.item_bias
    torch.testing.assert_close(scorer(observation), expected)
    assert not scorer.training  # RL reads it without dropout


def test_train_py_pretrains_once_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Through train.py on the synthetic simulator: the run pretrains (a resumed run loads the cached
    weights and then the checkpoint's over them) and a resumed run ends where a straight one does."""
    from recarena.agents.serialization import load_tensors
    from recarena.cli import train as train_script
    from recarena.training.config import run_config_from_dict

    calls = []
    fit = sequence_state.fit_next_item
    monkeypatch.setattr(sequence_state, "fit_next_item", lambda *a, **kw: calls.append(1) or fit(*a, **kw))

    def config(total_steps: int):
        return run_config_from_dict({
            "data": {"source": None},
            "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50, "events_per_user": 10}},
            "env": {"num_envs": 8, "max_steps": 10, "history_length": 8},
            "agent": {"name": "native_ppo", "config": {"n_steps": 4, "state": "sequence", "pretrain_epochs": 2,
                                                       "encoder": {**ENCODER, "hidden_dim": 16, "max_length": 8}}},
            "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": 64, "eval_every": 0,
                      "eval_sessions": 8, "log_every": 64},
        })

    straight = train_script.train(config(128), tmp_path / "straight", progress_bar=False)
    assert len(calls) == 1
    resumed = train_script.train(config(64), tmp_path / "resumed", progress_bar=False)
    train_script.train(config(128), resumed.path, resume=True, progress_bar=False)
    assert len(calls) == 1  # every later run found the pretrained weights in the cache
    a = load_tensors(straight.agent / "weights.safetensors")
    b = load_tensors(resumed.agent / "weights.safetensors")
    assert a.keys() == b.keys() and not [key for key in a if not torch.equal(a[key], b[key])]
