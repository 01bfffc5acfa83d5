"""The SB3 agents on the shared sequence encoder (``features.state: sequence``): the extractor's output
is the encoder's state, pretraining is loaded into the policy (the native agents' cache), determinism,
save/load, exact resume through train.py, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_train import SMALL, _assert_same_weights, _config, _fresh_observation, _weights

from recarena.agents.features import HistoryFeaturesExtractor
from recarena.agents.registry import load_agent, make_agent
from recarena.agents.sequence_encoder import SequenceEncoder
from recarena.agents.sequence_features import SequenceFeaturesExtractor, policy_encoders
from recarena.agents.sequence_state import pretrain_cache_path
from recarena.cli import train as train_script
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError
from recarena.envs.vector_env import RecommendationVectorEnv

SIMULATOR = {"n_items": 20, "n_users": 50, "events_per_user": 10, "best_item": 3}
ENCODER = {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "feedforward_dim": 32, "dropout": 0.1, "max_length": 8}
SEQUENCE = {"state": "sequence", "encoder": ENCODER, "pretrain_epochs": 2, "pretrain_batch_size": 16}


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECARENA_CACHE", str(tmp_path / "cache"))


def _env(num_envs: int = 8) -> RecommendationVectorEnv:
    return RecommendationVectorEnv(num_envs=num_envs, simulator="synthetic", simulator_config=dict(SIMULATOR),
                                   max_steps=10)


def _agent(name: str, env: Any, seed: int = 0, total_steps: int = 320, **features: Any) -> Any:
    return make_agent(name, env.n_items, dict(SMALL[name], features={**SEQUENCE, **features}), env=env, seed=seed,
                      total_steps=total_steps)


def _cached_encoder(agent: Any) -> dict[str, torch.Tensor]:
    return torch.load(agent.pretrain_info["path"], weights_only=True)["encoder"]


@pytest.mark.parametrize("name", ["dqn", "ppo", "maskable_ppo"])
def test_extractor_state_is_the_pretrained_encoders_encode_last(name: str) -> None:
    env = _env()
    agent = _agent(name, env)
    assert agent.pretrain_info["cached"] is False
    assert agent.policy_keys == ["history", "responses"]  # the encoder reads no llm_state
    encoders = policy_encoders(agent.model.policy)
    assert len(encoders) == (2 if name == "dqn" else 1)  # DQN: online and target Q-networks
    cached = _cached_encoder(agent)
    for encoder in encoders:  # every extractor holds exactly the cached pretrained weights
        _assert_same_weights(cached, encoder.state_dict())

    # A standalone encoder with the cached weights gives the extractor's output, at the newest
    # max_length items of the observed window.
    reference = SequenceEncoder(env.n_items, from_dict(type(agent.config.features.encoder), ENCODER),
                                env.simulator.item_embeddings)
    reference.load_state_dict(cached)
    reference.eval()
    observation = _fresh_observation()
    history = torch.as_tensor(observation["history"])
    history[:4, -3:] = torch.tensor([5, 6, 7])  # a few real histories of different lengths and orders
    history[4:8, -12:] = torch.arange(12)
    responses = torch.as_tensor(observation["responses"]).clone()
    responses[history >= 0] = 4.0
    obs = {"history": history.float(), "responses": responses}
    extractor = next(m for m in agent.model.policy.modules() if isinstance(m, SequenceFeaturesExtractor))
    agent.model.policy.set_training_mode(True)  # RL reads the encoder without dropout either way
    with torch.no_grad():
        features = extractor(obs)
        expected = reference.encode_last(history[:, -ENCODER["max_length"]:], responses[:, -ENCODER["max_length"]:])
    assert features.shape == (len(history), ENCODER["hidden_dim"]) == (len(history), extractor.features_dim)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert not torch.allclose(features[0], features[4])


def test_native_and_sb3_agents_share_the_pretraining_cache() -> None:
    env = _env()
    sb3 = _agent("ppo", env)
    native = make_agent("native_ppo", env.n_items, {**SEQUENCE, "num_steps": 4, "seed": 0}, env=env)
    assert sb3.pretrain_info["cached"] is False and native.pretrain_info["cached"] is True
    assert native.pretrain_info["path"] == sb3.pretrain_info["path"]
    assert Path(sb3.pretrain_info["path"]) == pretrain_cache_path(Path(sb3.pretrain_info["path"]).stem)


@pytest.mark.parametrize("name", ["dqn", "ppo"])
def test_same_seed_same_fine_tuned_weights(name: str) -> None:
    def run(seed: int) -> tuple[dict[str, torch.Tensor], Any]:
        env = _env()
        agent = _agent(name, env, seed=seed)
        agent.learn(env, 320)
        return {k: v.clone() for k, v in agent.model.policy.state_dict().items()}, agent

    (first, agent), (second, _), (other, _) = run(0), run(0), run(1)
    _assert_same_weights(first, second)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    # SB3's loss fine-tuned the pretrained encoder (the online network's, for DQN).
    cached = _cached_encoder(agent)
    trained = policy_encoders(agent.model.policy)[0].state_dict()
    assert not torch.equal(cached["item_embedding"], trained["item_embedding"])


def test_save_load_round_trip(tmp_path: Path) -> None:
    env = _env()
    agent = _agent("dqn", env)
    agent.learn(env, 256)
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent")
    assert loaded.pretrain_info is None  # loading reads the saved weights; it pretrains nothing
    observation = _fresh_observation()
    torch.testing.assert_close(agent.scores(observation), loaded.scores(observation), rtol=0, atol=0)


def test_resume_after_crash_ends_with_the_same_weights(tmp_path: Path) -> None:
    """train.py with the pretrained sequence state: a run crashed after its first checkpoint and resumed
    (the pretraining is a cache hit, then the checkpoint restored) ends where the straight run does."""
    extra = {"features": SEQUENCE}
    straight = train_script.train(_config("dqn", 768, extra), tmp_path / "straight", progress_bar=False)

    def crash(tag: str, value: float, step: int) -> None:
        if step > 384:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train_script.train(_config("dqn", 768, extra), tmp_path / "crashed", progress_bar=False, listeners=[crash])
    resumed = train_script.train(_config("dqn", 768, extra), tmp_path / "crashed", resume=True, progress_bar=False)
    _assert_same_weights(_weights(straight.path), _weights(resumed.path))


def test_default_extractor_is_unchanged() -> None:
    env = _env()
    agent = make_agent("ppo", env.n_items, SMALL["ppo"], env=env)
    assert isinstance(agent.model.policy.features_extractor, HistoryFeaturesExtractor)
    assert agent.pretrain_info is None and "llm_state" in agent.policy_keys


@pytest.mark.parametrize("name", ["dqn", "ppo", "maskable_ppo"])
def test_config_errors_list_the_valid_keys(name: str) -> None:
    env = _env()
    with pytest.raises(ConfigError, match=r"features\.encodr.*valid keys.*'state'.*'encoder'.*'pretrain_epochs'"):
        make_agent(name, env.n_items, {"features": {"state": "sequence", "encodr": {}}}, env=env)
    with pytest.raises(ConfigError, match=r"encoder\.widht.*hidden_dim"):
        make_agent(name, env.n_items, {"features": {"state": "sequence", "encoder": {"widht": 3}}}, env=env)
    with pytest.raises(ConfigError, match="pretrain_epochs .* needs state: sequence"):
        make_agent(name, env.n_items, {"features": {"pretrain_epochs": 2}}, env=env)
