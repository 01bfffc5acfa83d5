"""Tabular and linear Q on the sequence encoder's state (``state: sequence``): the codebook and the
features are the frozen encoder's states, order matters, resume/load are exact, bad configs are refused."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

import recarena.agents.qlearning as qlearning
import recarena.agents.sequence_state as sequence_state
from recarena.agents.qlearning import LinearQAgent, TabularQAgent, TabularQConfig
from recarena.agents.registry import load_agent, make_agent
from recarena.core.config import from_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs import RecommendationVectorEnv
from recarena.envs.observation import build_observation
from tests._resume import straight_and_resumed

N_ITEMS = 30
HIDDEN = 16
ENCODER = {"hidden_dim": HIDDEN, "n_layers": 1, "n_heads": 2, "feedforward_dim": 32, "dropout": 0.0, "max_length": 8}
SEQUENCE = {"state": "sequence", "encoder": ENCODER, "pretrain_epochs": 2}
AGENTS = {
    "tabular_q": {"n_states": 8, "codebook_samples": 64, **SEQUENCE},
    "linear_q": {"form": "bilinear", "init_scale": 0.1, "next_item_coef": 0.5, **SEQUENCE},
    "linear_q/per_item": {"form": "per_item", "init_scale": 0.1, **SEQUENCE},
}


pytestmark = pytest.mark.usefixtures("fresh_cache")  # a RECARENA_CACHE of each test's own


def synthetic_env(num_envs: int = 16) -> RecommendationVectorEnv:
    return RecommendationVectorEnv(
        num_envs=num_envs, simulator="synthetic", max_steps=20, slate_size=1,
        simulator_config={"n_items": N_ITEMS, "n_users": 50, "events_per_user": 10, "seed": 0},
    )


def build(key: str, **overrides):
    return make_agent(key.split("/")[0], N_ITEMS, {**AGENTS[key], **overrides})


def encoder_state(agent, observation) -> torch.Tensor:
    return agent.encoder.encode_last(observation["history"].long(), observation["responses"])


# ----------------------------------------------------------------------- the state is the encoder's


def test_tabular_codebook_is_fitted_on_the_encoder_states(monkeypatch):
    fitted = []
    kmeans = qlearning.kmeans
    monkeypatch.setattr(qlearning, "kmeans", lambda points, *a, **kw: fitted.append(points) or kmeans(points, *a, **kw))
    agent = build("tabular_q")
    agent.learn(synthetic_env(), 64)
    assert agent.fitted and agent.centroids.shape == (8, HIDDEN)
    assert agent.pretrain_info["cached"] is False  # pretrained on the synthetic simulator's log
    (points,) = fitted
    first, _ = synthetic_env().reset(seed=0)  # the agent's first reset: seed 0 * 1_000_003 + 0
    with torch.no_grad():
        torch.testing.assert_close(points[:16], encoder_state(agent, first), rtol=0, atol=0)
    assert torch.equal(agent.states_of(agent._state(first)), torch.cdist(encoder_state(agent, first),
                                                                          agent.centroids).argmin(1))


@pytest.mark.parametrize("key", ["linear_q", "linear_q/per_item"])
def test_linear_q_features_are_the_encoder_state(key):
    agent = build(key)
    agent.learn(synthetic_env(), 128)
    observation, _ = synthetic_env().reset(seed=7)
    with torch.no_grad():
        phi = torch.cat([encoder_state(agent, observation), torch.ones(16, 1)], dim=1)
    if key == "linear_q":
        assert agent.weight.shape == (HIDDEN + 1, agent.item_embeddings.shape[1])
        expected = (phi @ agent.weight) @ agent.item_embeddings.T + agent.item_bias
    else:
        assert agent.weight.shape == (N_ITEMS, HIDDEN + 1)
        expected = phi @ agent.weight.T
    torch.testing.assert_close(agent._q_values(agent._state(observation)), expected)


@pytest.mark.parametrize("key", list(AGENTS))
def test_the_encoder_stays_frozen(key):
    """TD and next-item updates never move the encoder: after training it is the pretrained one."""
    env = synthetic_env()
    agent = build(key)
    agent.learn(env, 256)
    pretrained = make_agent(key.split("/")[0], N_ITEMS, AGENTS[key], env=env)  # the cached pretraining
    assert pretrained.pretrain_info["cached"] is True
    after = agent.encoder.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in pretrained.encoder.state_dict().items())
    assert not any(parameter.requires_grad for parameter in agent.encoder.parameters())


def test_each_step_encodes_the_next_observation_once_and_only_the_ended_sessions_final_ones():
    """The encoder reads N rows per step (carried as the next step's state) plus one row per ended
    session (its final observation), not a second pass over every user."""
    env = synthetic_env()
    agent = build("tabular_q")
    agent.learn(env, 16)  # builds and pretrains the encoder
    rows = []
    encode_last = agent.encoder.encode_last
    agent.encoder.encode_last = lambda history, *a, **kw: rows.append(history.shape[0]) or encode_last(history, *a, **kw)
    episodes = agent.episodes_done
    agent.learn(env, 16 * 40)  # 40 steps of sessions of 20 steps: every user ends twice
    ended = agent.episodes_done - episodes
    assert ended >= 16 and max(rows) == 16 and min(rows) < 16
    assert sum(rows) == 16 * (1 + 40) + ended  # the first state, each next observation, each ended session


# --------------------------------------------------------------------------- order-matters answer

PAIRS = list(itertools.permutations(range(4), 2))  # ordered pairs of the context items 0..3


def order_env() -> SimpleNamespace:
    """Logged sequences [a, b, t(a, b)]: the next item is set by the *order* of the last two items."""
    sequences = [[a, b, 4 + i] for i, (a, b) in enumerate(PAIRS)] * 3
    item = torch.tensor([x for s in sequences for x in s])
    lengths = torch.tensor([len(s) for s in sequences])
    logged = SimpleNamespace(offsets=torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]), item=item,
                             rating=torch.full((len(item),), 5.0), lengths=lengths)
    embeddings = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    return SimpleNamespace(logged_sequences=logged, item_embeddings=embeddings, history_length=4, slate_size=1,
                           n_items=16)


@pytest.mark.parametrize("state", ["sequence", "pooled"])
def test_tabular_q_on_the_sequence_state_separates_two_orders_of_the_same_items(state):
    """Reward 1 for t(a, b), 0 otherwise: the 12 ordered pairs get 12 codes from the sequence state
    and learn every answer; the pooled state of (a, b) equals that of (b, a), so they share a code."""
    env = order_env()
    options = {"state": state} if state == "pooled" else {**SEQUENCE, "encoder": {**ENCODER, "max_length": 4}}
    config = from_dict(TabularQConfig, {**options, "n_states": 12, "codebook_samples": 12 * 16, "learning_rate": 1.0})
    agent = TabularQAgent(16, config, env=env)
    history = torch.tensor([[-1, -1, a, b] for a, b in PAIRS])
    observation = build_observation(history, torch.full(history.shape, 5.0), env.item_embeddings)
    target = torch.arange(4, 4 + len(PAIRS))
    states = agent._state(observation).repeat_interleave(16, dim=0)  # every (pair, item) once
    actions = torch.arange(16).repeat(len(PAIRS))
    rewards = (actions == target.repeat_interleave(16)).to(torch.float32)
    done = torch.ones(len(states), dtype=torch.bool)
    agent._observe_transition(states, actions, rewards, states, done, None)  # fits the codebook, replays
    assert agent.fitted
    scores = agent.scores(observation)
    accuracy = float((scores.argmax(1) == target).float().mean())
    if state == "sequence":
        assert agent.centroids.shape == (12, ENCODER["hidden_dim"])
        assert len(agent.states_of(agent._state(observation)).unique()) == 12 and accuracy == 1.0
    else:
        swapped = [PAIRS.index((b, a)) for a, b in PAIRS]
        assert torch.equal(scores, scores[swapped]) and accuracy <= 0.5


# ------------------------------------------------------------------------------------ resume / load


@pytest.mark.parametrize("key", list(AGENTS))
def test_resumed_training_matches_uninterrupted_training(key):
    # 48: tabular is still warming up at this boundary
    uninterrupted, resumed = straight_and_resumed(lambda: build(key), synthetic_env, 48, 160)
    assert resumed.pretrain_info is None  # the encoder came from the checkpoint: learn() built (pretrained) none

    one_call = build(key)  # each observation encoded once, as the next state and then as the state
    one_call.learn(synthetic_env(), 208)

    a, b, c = (agent.checkpoint_state()[0] for agent in (uninterrupted, resumed, one_call))
    assert any(name.startswith("encoder.") for name in a)
    assert a.keys() == b.keys() == c.keys()
    assert not [name for name in a if not (torch.equal(a[name], b[name]) and torch.equal(a[name], c[name]))]


@pytest.mark.parametrize("key", list(AGENTS))
def test_a_saved_agent_loads_without_the_pretraining_cache(key, tmp_path, monkeypatch):
    agent = build(key)
    agent.learn(synthetic_env(), 128)
    agent.save(tmp_path / "agent")
    monkeypatch.setenv("RECARENA_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(sequence_state, "fit_next_item", lambda *a, **kw: pytest.fail("pretrained again"))
    loaded = load_agent(tmp_path / "agent", device="cpu")
    assert type(loaded) is type(agent) and loaded.config == agent.config
    observation, _ = synthetic_env().reset(seed=5)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))


def test_train_py_resumes_a_sequence_state_run_exactly(tmp_path):
    """Through train.py (which hands the env to the constructor): a run stopped and resumed ends
    with the same weights as a straight one."""
    from recarena.agents.serialization import load_tensors
    from recarena.cli import train as train_script
    from recarena.training.config import run_config_from_dict

    def config(total_steps: int):
        return run_config_from_dict({
            "data": {"source": None},
            "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50, "events_per_user": 10}},
            "env": {"num_envs": 8, "max_steps": 10, "history_length": 8},
            "agent": {"name": "tabular_q", "config": {"n_states": 4, "codebook_samples": 32, **SEQUENCE}},
            "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": 64, "eval_every": 0,
                      "eval_sessions": 8, "log_every": 64},
        })

    straight = train_script.train(config(128), tmp_path / "straight", progress_bar=False)
    resumed = train_script.train(config(64), tmp_path / "resumed", progress_bar=False)
    train_script.train(config(128), resumed.path, resume=True, progress_bar=False)
    a = load_tensors(straight.agent / "weights.safetensors")
    b = load_tensors(resumed.agent / "weights.safetensors")
    assert "centroids" in a and a["centroids"].shape == (4, HIDDEN)
    assert a.keys() == b.keys() and not [key for key in a if not torch.equal(a[key], b[key])]


# ------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("name", ["tabular_q", "linear_q"])
def test_config_errors_name_the_problem(name):
    with pytest.raises(ConfigError, match=r"encoder\.widht.*hidden_dim"):  # unknown keys list the valid ones
        make_agent(name, N_ITEMS, {"state": "sequence", "encoder": {"widht": 3}})
    with pytest.raises(ConfigError, match=r"stat\b.*state"):
        make_agent(name, N_ITEMS, {"stat": "sequence"})
    with pytest.raises(ConfigError, match="state"):
        make_agent(name, N_ITEMS, {"state": "lstm"})
    with pytest.raises(ConfigError, match="pretrain_epochs .* needs state: sequence"):
        make_agent(name, N_ITEMS, {"pretrain_epochs": 2})
    with pytest.raises(ConfigError, match="divisible"):
        make_agent(name, N_ITEMS, {"state": "sequence", "encoder": {"hidden_dim": 5, "n_heads": 2}})
    with pytest.raises(ConfigError, match="no encoder yet"):  # not built from an env: nothing to read states with
        make_agent(name, N_ITEMS, {"state": "sequence"}).scores(synthetic_env().reset(seed=0)[0])


def test_pretraining_needs_logged_sequences():
    env = SimpleNamespace(logged_sequences=None, item_embeddings=torch.zeros(N_ITEMS, 4), history_length=4,
                          slate_size=1, n_items=N_ITEMS, simulator=SimpleNamespace())
    with pytest.raises(ConfigError, match="pretrain_epochs needs a simulator with logged sequences"):
        make_agent("tabular_q", N_ITEMS, SEQUENCE, env=env)


def test_mismatched_checkpoints_are_refused():
    trained = build("linear_q/per_item")
    trained.learn(synthetic_env(), 64)
    tensors, metadata = trained.checkpoint_state()
    with pytest.raises(CheckpointError, match="state: pooled"):
        make_agent("linear_q", N_ITEMS, {"form": "per_item"}).restore_checkpoint_state(tensors, metadata)
    with pytest.raises(CheckpointError, match="encoder does not fit"):
        build("linear_q/per_item", encoder={**ENCODER, "hidden_dim": 8}).restore_checkpoint_state(tensors, metadata)
    without = {name: value for name, value in tensors.items() if not name.startswith("encoder.")}
    with pytest.raises(CheckpointError, match="no encoder weights"):
        build("linear_q/per_item").restore_checkpoint_state(without, metadata)
    assert isinstance(trained, LinearQAgent)
