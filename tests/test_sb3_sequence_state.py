"""The SB3 agents on the shared sequence encoder (``features.state: sequence``): the extractor's output
is the encoder's state, pretraining is loaded into the policy (the native agents' cache), determinism,
save/load, exact resume through train.py, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from recarena.agents.features import HistoryFeaturesExtractor
from recarena.agents.registry import load_agent, make_agent
from recarena.agents.sequence_encoder import SequenceEncoder
from recarena.agents.sequence_features import SequenceFeaturesExtractor, policy_encoders
from recarena.agents.sequence_state import pretrain_cache_path
from recarena.cli import train as train_script
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError
from recarena.envs.vector_env import RecommendationVectorEnv
from tests._train_fixtures import (
    SIMULATOR,
    SMALL,
    _assert_same_weights,
    _config,
    _fresh_observation,
    _weights,
)

ENCODER = {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "feedforward_dim": 32, "dropout": 0.1, "max_length": 8}
SEQUENCE = {"state": "sequence", "encoder": ENCODER, "pretrain_epochs": 2, "pretrain_batch_size": 16}


pytestmark = pytest.mark.usefixtures("fresh_cache")  # a RECARENA_CACHE of each test's own


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
    native = make_agent("native_ppo", env.n_items, {**SEQUENCE, "n_steps": 4, "seed": 0}, env=env)
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


@pytest.mark.parametrize(("name", "head"), [("dqn", "mlp"), ("dqn", "item_dot"), ("ppo", "item_dot")])
def test_resume_after_crash_ends_with_the_same_weights(tmp_path: Path, name: str, head: str) -> None:
    """train.py with the pretrained sequence state: a run crashed after its first checkpoint and resumed
    (the pretraining is a cache hit, then the checkpoint restored) ends where the straight run does."""
    extra = {"features": {**SEQUENCE, "head": head}}
    straight = train_script.train(_config(name, 768, extra), tmp_path / "straight", progress_bar=False)

    def crash(tag: str, value: float, step: int) -> None:
        if step > 384:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train_script.train(_config(name, 768, extra), tmp_path / "crashed", progress_bar=False, listeners=[crash])
    resumed = train_script.train(_config(name, 768, extra), tmp_path / "crashed", resume=True, progress_bar=False)
    weights = _weights(resumed.path)
    assert any(k.endswith("item_bias") for k in weights) == (head == "item_dot")
    _assert_same_weights(_weights(straight.path), weights)


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


# ------------------------------------------------------------------ features.head: item_dot


def _reference_encoder(agent: Any, env: Any) -> SequenceEncoder:
    """A standalone encoder with the cached pretrained weights."""
    reference = SequenceEncoder(env.n_items, from_dict(type(agent.config.features.encoder), ENCODER),
                                env.simulator.item_embeddings)
    reference.load_state_dict(_cached_encoder(agent))
    return reference.eval()


@pytest.mark.parametrize("name", ["dqn", "ppo", "maskable_ppo"])
def test_item_dot_head_at_step_0_ranks_as_the_pretrained_encoder(name: str) -> None:
    """Known answer: before any RL, the Q-values / logits are the pretrained encoder's next-item scores
    ``encode_last . v_i`` (zero bias), and SB3's own greedy action is the encoder's top item; the MLP
    head does not rank that way."""
    env = _env()
    agent = _agent(name, env, head="item_dot")
    reference = _reference_encoder(agent, env)
    observation = _fresh_observation()
    history, responses = torch.as_tensor(observation["history"]), torch.as_tensor(observation["responses"]).clone()
    history[:8, -3:] = torch.tensor([5, 6, 7])
    history[8:16, -12:] = torch.arange(12)
    history[16:24, -2:] = torch.tensor([9, 2])
    responses[history >= 0] = 4.0
    responses[:4, -1] = 1.0  # some disliked newest items
    obs = {"history": history, "responses": responses}
    with torch.no_grad():
        expected = reference.scores(history.long(), responses)
    scores = agent.scores(obs)
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-5)
    top = expected.argmax(dim=1)
    assert len(set(top.tolist())) > 1  # the observations do not all share one answer
    greedy, _ = agent.model.predict({k: v.numpy() for k, v in obs.items() if k in agent.policy_keys}, deterministic=True)
    assert greedy.tolist() == top.tolist()
    mlp = _agent(name, env)  # same pretrained encoder, SB3's MLP head
    assert not torch.allclose(mlp.scores(obs), expected, atol=1e-3)
    head = agent.model.policy.q_net.q_net if name == "dqn" else agent.model.policy.action_net
    assert [n for n, _ in head.named_parameters()] == ["item_bias"] and not head.item_bias.any()


def test_item_dot_head_learns_the_encoder_and_bias_and_the_critic_stays_an_mlp() -> None:
    env = _env()
    agent = _agent("ppo", env, head="item_dot")
    policy = agent.model.policy
    assert policy.mlp_extractor.latent_dim_pi == ENCODER["hidden_dim"]  # the actor reads the state itself
    assert [m.out_features for m in policy.mlp_extractor.value_net if hasattr(m, "out_features")] == SMALL["ppo"]["net_arch"]
    optimised = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in policy.parameters()} == optimised  # the head's bias and the encoder are trained
    bias_before = policy.action_net.item_bias.detach().clone()
    vectors_before = policy_encoders(policy)[0].item_vectors().detach().clone()
    agent.learn(env, 320)
    assert not torch.equal(policy.action_net.item_bias, bias_before)
    assert not torch.equal(policy_encoders(policy)[0].item_vectors(), vectors_before)
    # The head scores with the fine-tuned encoder's own item vectors.
    observation = _fresh_observation()
    encoder = policy_encoders(policy)[0]
    with torch.no_grad():
        state = encoder.encode_last(torch.as_tensor(observation["history"]).long(), torch.as_tensor(observation["responses"]))
        expected = state @ encoder.item_vectors().T + policy.action_net.item_bias
    torch.testing.assert_close(agent.scores(observation), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["dqn", "maskable_ppo"])
def test_item_dot_head_save_load_round_trip(tmp_path: Path, name: str) -> None:
    env = _env()
    agent = _agent(name, env, head="item_dot")
    agent.learn(env, 256)
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent")
    assert loaded.config.features.head == "item_dot"
    observation = _fresh_observation()
    torch.testing.assert_close(agent.scores(observation), loaded.scores(observation), rtol=0, atol=0)


def test_item_dot_head_needs_the_sequence_state() -> None:
    env = _env()
    with pytest.raises(ConfigError, match="head: item_dot needs state: sequence"):
        make_agent("ppo", env.n_items, {"features": {"head": "item_dot"}}, env=env)
    with pytest.raises(ConfigError, match=r"features\.head.*'mlp'.*'item_dot'"):
        make_agent("dqn", env.n_items, {"features": {"state": "sequence", "head": "dot"}}, env=env)


def test_policy_sees_only_its_keys_in_terminal_observations() -> None:
    """PPO bootstraps a truncated session's value from ``terminal_observation`` through the policy's
    observation space; with the sequence state (no llm_state) that observation is cut to the policy's
    keys as the others are (it raised a KeyError on llm_state before)."""
    from recarena.agents.sb3_agents import _SelectKeys
    from recarena.envs.sb3 import SB3VecEnvAdapter

    env = RecommendationVectorEnv(num_envs=4, simulator="synthetic", max_steps=2, simulator_config={
        **SIMULATOR, "leave": {"no_click_cost": 0.0, "dislike_cost": 0.0, "hazard": 0.0}})
    venv = _SelectKeys(SB3VecEnvAdapter(env), ["history", "responses"])
    venv.seed(0)
    venv.reset()
    terminal = []
    for _ in range(2):
        venv.step_async(torch.arange(4).numpy())
        _, _, _, infos = venv.step_wait()
        terminal += [info["terminal_observation"] for info in infos if "terminal_observation" in info]
    assert len(terminal) == 4 and all(sorted(t) == ["history", "responses"] for t in terminal)
