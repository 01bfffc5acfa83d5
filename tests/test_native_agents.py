"""Native (device-resident) DQN and PPO: learning, slates, masking, large catalogues, resume, parity."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from recarena.agents.item_scorer import MASKED_SCORE, ItemScorer, history_mask, mask_scores
from recarena.agents.native_dqn import NativeDQNAgent, NativeDQNConfig, random_slates
from recarena.agents.native_ppo import NativePPOAgent, slate_log_prob
from recarena.agents.registry import available_agents, load_agent, make_agent
from recarena.agents.serialization import write_manifest
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs.vector_env import RecommendationVectorEnv
from tests._native_fixtures import (
    BEST,
    SESSION_TAGS,
    RecordingLogger,
    greedy_picks,
    known_answer_env,
    make_ppo,
)


def make_dqn(env, **overrides) -> NativeDQNAgent:
    log_every = overrides.pop("log_every", 1000)
    settings = {"learning_starts": 300, "exploration_steps": 3000, "batch_size": 64, "mask": "none"}
    config = NativeDQNConfig(**{**settings, **overrides})
    return NativeDQNAgent(env.n_items, config, item_embeddings=env.simulator.item_embeddings,
                          slate_size=env.slate_size, log_every=log_every)


def test_native_agents_are_registered():
    assert {"native_dqn", "native_ppo"} <= set(available_agents())
    with pytest.raises(ConfigError, match="gamma"):
        make_agent("native_dqn", 10, {"gamma": 2.0}, item_embeddings=torch.zeros(10, 4))
    with pytest.raises(ConfigError, match="valid keys"):
        make_agent("native_ppo", 10, {"learnig_rate": 1.0}, item_embeddings=torch.zeros(10, 4))


def test_native_dqn_finds_the_obvious_best_item():
    env = known_answer_env()
    agent = make_dqn(env)
    logger = RecordingLogger()
    agent.learn(env, 12_000, logger)
    assert (greedy_picks(agent, env)[:, 0] == BEST).all()
    returns = [value for _, value in logger.scalars["charts/episodic_return"]]
    assert returns[-1] > returns[0]
    assert set(SESSION_TAGS) | {"charts/exploration_rate", "losses/td_loss"} <= set(logger.scalars)


@pytest.mark.parametrize("slate_size", [1, 3])
def test_native_ppo_finds_the_obvious_best_item(slate_size):
    env = known_answer_env(slate_size)
    agent = make_ppo(env)
    logger = RecordingLogger()
    agent.learn(env, 20_000, logger)
    assert set(SESSION_TAGS) | {"losses/policy_loss", "losses/entropy"} <= set(logger.scalars)
    slates = greedy_picks(agent, env, slate_size)
    assert (slates == BEST).any(dim=1).all()


def test_dqn_slates_are_distinct_and_respect_masks():
    env = RecommendationVectorEnv(num_envs=16, simulator="synthetic", simulator_config={"n_items": 20},
                                  slate_size=4, mask_consumed=True, max_steps=5)
    agent = NativeDQNAgent(env.n_items, NativeDQNConfig(learning_starts=10**9), item_embeddings=env.simulator.item_embeddings,
                           slate_size=4)
    observation, _ = env.reset(seed=0)
    for _ in range(6):  # exploration and greedy choices both respect the consumed-item mask
        mask = env.action_masks()
        slates = agent._select(observation, mask)
        assert slates.shape == (16, 4)
        assert all(len(set(row.tolist())) == 4 for row in slates)
        assert mask.gather(1, slates).all()
        observation, *_ = env.step(slates)


def test_masking_helpers():
    scores = torch.tensor([[1.0, 5.0, 3.0], [2.0, 1.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    masked = mask_scores(scores, mask)
    assert masked[0].argmax() == 2 and masked[0, 1] == MASKED_SCORE
    assert torch.equal(masked[1], scores[1])  # a row with nothing allowed stays unmasked
    history = torch.tensor([[-1, 0, 2], [1, 1, -1]])
    assert history_mask(history, 3).tolist() == [[False, True, False], [True, False, True]]
    generator = torch.Generator().manual_seed(0)
    picks = random_slates(torch.tensor([[False, True, True, False]] * 50), 50, 4, 2, generator, torch.device("cpu"))
    assert sorted(set(picks.flatten().tolist())) == [1, 2]


def test_slate_log_prob_is_a_plackett_luce_distribution():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    slates = [(a, b) for a in range(4) for b in range(4) if a != b]
    log_probs = torch.cat([slate_log_prob(logits, torch.tensor([s])) for s in slates])
    assert torch.isclose(log_probs.exp().sum(), torch.tensor(1.0), atol=1e-6)
    first = torch.softmax(logits, 1)[0, 2] * torch.softmax(logits[:, [0, 1, 3]], 1)[0, 0]
    assert torch.isclose(slate_log_prob(logits, torch.tensor([[2, 0]])).exp()[0], first, atol=1e-6)


def test_item_head_scores_a_catalogue_of_1e5_items_in_one_matmul():
    n_items, dim = 100_000, 32
    embeddings = torch.nn.functional.normalize(torch.randn(n_items, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    scorer = ItemScorer(embeddings, hidden_dim=16)
    observation = {
        "history": torch.tensor([[-1, 5, 99_999], [1, 2, 3]]),
        "responses": torch.tensor([[0.0, 4.0, 5.0], [1.0, 2.0, 3.0]]),
        "llm_state": torch.zeros(2, dim),
    }
    scores = scorer(observation)
    assert scores.shape == (2, n_items) and torch.isfinite(scores).all()
    agent = NativeDQNAgent(n_items, NativeDQNConfig(), item_embeddings=embeddings, slate_size=5)
    slates = agent.act(observation, 5, action_mask=history_mask(observation["history"], n_items))
    assert slates.shape == (2, 5)
    assert not set(slates[0].tolist()) & {5, 99_999}


def make_hierarchical_ppo(env, **overrides) -> NativePPOAgent:
    return make_ppo(env, head="hierarchical", **overrides)


SMALL_ENCODER = {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "feedforward_dim": 32, "max_length": 8}


def make_sequence_dqn(env, **overrides) -> NativeDQNAgent:
    return make_dqn(env, state="sequence", encoder=SMALL_ENCODER, **overrides)


def make_sequence_ppo(env, **overrides) -> NativePPOAgent:
    return make_ppo(env, state="sequence", encoder=SMALL_ENCODER, **overrides)


@pytest.mark.parametrize("make", [make_dqn, make_ppo, make_hierarchical_ppo, make_sequence_dqn, make_sequence_ppo],
                         ids=["dqn", "ppo", "ppo-hierarchical", "dqn-sequence", "ppo-sequence"])
def test_resumed_training_ends_with_the_same_weights(make):
    def fresh():
        env = known_answer_env(num_envs=8)
        return env, make(env)

    env_a, straight = fresh()
    straight.learn(env_a, 1024, RecordingLogger())
    straight.learn(env_a, 1024, RecordingLogger())

    env_b, first = fresh()
    first.learn(env_b, 1024, RecordingLogger())
    tensors, metadata = first.checkpoint_state()
    env_state = env_b.get_state()

    env_c, resumed = fresh()
    resumed.restore_checkpoint_state({k: v.clone() for k, v in tensors.items()}, metadata)
    env_c.reset(seed=999)  # a different state, overwritten by the checkpoint
    env_c.set_state(env_state)
    resumed.learn(env_c, 1024, RecordingLogger())

    state_a = straight.checkpoint_state()[0]
    state_c = resumed.checkpoint_state()[0]
    assert state_a.keys() == state_c.keys()
    if make is make_hierarchical_ppo:  # the cluster tables travel with the checkpoint
        assert any("hierarchy.members" in key for key in state_a)
    for key in state_a:
        assert torch.equal(state_a[key], state_c[key]), key


def test_restore_refuses_another_agents_checkpoint():
    env = known_answer_env(num_envs=4)
    tensors, metadata = make_dqn(env).checkpoint_state()
    with pytest.raises(CheckpointError, match="native_dqn"):
        make_ppo(env).restore_checkpoint_state(tensors, metadata)


@pytest.mark.parametrize("make", [make_dqn, make_ppo, make_sequence_dqn, make_sequence_ppo],
                         ids=["dqn", "ppo", "dqn-sequence", "ppo-sequence"])
def test_save_and_load_round_trip(make, tmp_path):
    env = known_answer_env(num_envs=4)
    agent = make(env)
    agent.learn(env, 512, RecordingLogger())
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent")
    observation, _ = env.reset(seed=5)
    assert type(loaded) is type(agent)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))


@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_an_agent_trained_on_a_gpu_loads_where_there_is_none(make, tmp_path, monkeypatch):
    env = known_answer_env(num_envs=4)
    agent = make(env)
    agent.learn(env, 256, RecordingLogger())
    agent.save(tmp_path / "agent")
    meta_path = tmp_path / "agent" / "agent.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["device"] = "cuda"  # as train.py --device cuda writes it
    meta_path.write_text(json.dumps(meta))
    write_manifest(tmp_path / "agent")  # the edit stands for a real save on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = load_agent(tmp_path / "agent")
    assert loaded.device == torch.device("cpu")
    observation, _ = env.reset(seed=5)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))
    assert load_agent(tmp_path / "agent", device="cpu").device == torch.device("cpu")


@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_compiled_network_trains_to_the_same_scores(make):
    """``compile: true`` (torch.compile of the scoring network) changes speed, not what is learned."""
    from torch._dynamo.utils import counters

    scores = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        env = known_answer_env(num_envs=4)
        agent = make(env, compile=compiled)
        agent.learn(env, 256, RecordingLogger())
        observation, _ = env.reset(seed=5)
        scores.append(agent.scores(observation))
        assert (counters["stats"]["unique_graphs"] > 0) == compiled  # dynamo really captured the network
    assert torch.allclose(scores[0], scores[1], atol=1e-5, rtol=1e-5)


def test_compiling_raises_no_torchscript_deprecation_warnings():
    """The first torch.compile of a process imports torch's own torch.utils.mkldnn, whose 14
    @torch.jit.script_method decorators each warned (14 DeprecationWarnings in the test run); the native
    agents compile through compile_module, which silences exactly that message. A fresh interpreter, so
    the import happens here and not in an earlier test."""
    import subprocess
    import sys

    code = (
        "import sys, warnings, torch\n"
        "from recarena.agents.native_base import compile_module\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    compile_module(torch.nn.Linear(2, 2))\n"
        "assert 'torch.utils.mkldnn' in sys.modules, 'torch.compile no longer imports torch.utils.mkldnn'\n"
        "print(sum('script_method' in str(w.message) for w in caught))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_same_seed_repeats_exactly():
    weights = []
    for _ in range(2):
        env = known_answer_env(num_envs=8)
        agent = make_dqn(env)
        agent.learn(env, 1024, RecordingLogger())
        weights.append(agent.network.item_bias.detach().clone())
    assert torch.equal(*weights)


@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_mixed_precision_scores_match_full_precision(make):
    """The GPU path runs the networks under bf16 autocast; its scores must track fp32 closely."""
    env = known_answer_env(num_envs=16)
    agent = make(env)
    agent.learn(env, 1024, RecordingLogger())
    observation, _ = env.reset(seed=3)
    full = agent.scores(observation)
    agent.config.mixed_precision = "bf16"
    half = agent.scores(observation)
    assert torch.allclose(full, half, rtol=0.05, atol=0.05)
    assert torch.equal(full.argmax(1), half.argmax(1))


@pytest.mark.gpu
@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_cuda_training_matches_cpu_greedy_policy(make):
    results = []
    for device in ("cpu", "cuda"):
        env = RecommendationVectorEnv(num_envs=32, simulator="synthetic", device=device, max_steps=8,
                                      simulator_config={"n_items": 30, "n_users": 40, "best_item": BEST},
                                      mask_consumed=False)
        agent = make(env, device=device)
        agent.learn(env, 12_000, RecordingLogger())
        results.append(greedy_picks(agent, env)[:, 0].cpu())
    assert (results[0] == BEST).all() and (results[1] == BEST).all()


def test_logged_next_items_are_the_next_events_of_real_sequences():
    from recarena.agents.item_scorer import LoggedNextItems

    env = known_answer_env()
    sampler = env.logged_sequences
    assert sampler is env.simulator.sampler  # the env hands out the simulator's own sequences
    logged = LoggedNextItems.from_env(env)
    observation, target = logged.sample(64, torch.Generator().manual_seed(3))
    user, prefix = sampler.sample(64, torch.Generator().manual_seed(3))  # the same draw
    start = sampler.offsets[user]
    assert torch.equal(target, sampler.item[start + prefix])
    assert torch.equal(observation["history"][:, -1], sampler.item[start + prefix - 1])
    assert set(observation) == {"history", "responses", "llm_state"}
    with pytest.raises(ConfigError, match="logged sequences"):
        LoggedNextItems.from_env(SimpleNamespace(logged_sequences=None))
    with pytest.raises(ConfigError, match="next_item_coef"):
        make_agent("native_ppo", 10, {"next_item_coef": -1.0}, item_embeddings=torch.zeros(10, 4))


def test_next_item_min_rating_keeps_only_well_rated_next_events():
    from recarena.agents.item_scorer import IGNORED_TARGET, LoggedNextItems, next_item_loss

    env = known_answer_env()
    sampler = env.logged_sequences
    _, every = LoggedNextItems.from_env(env).sample(256, torch.Generator().manual_seed(5))
    _, liked = LoggedNextItems.from_env(env, 3.0).sample(256, torch.Generator().manual_seed(5))
    user, prefix = sampler.sample(256, torch.Generator().manual_seed(5))  # the same draw
    rating = sampler.rating[sampler.offsets[user] + prefix]
    assert 0 < int((rating < 3).sum()) < 256, "the fixture should have both kinds of next events"
    assert torch.equal(liked, torch.where(rating >= 3, every, IGNORED_TARGET))

    scores, history = torch.randn(3, 6), torch.full((3, 2), -1)
    kept = torch.nn.functional.cross_entropy(scores[:2], torch.tensor([1, 4]))
    torch.testing.assert_close(next_item_loss(scores, history, torch.tensor([1, 4, IGNORED_TARGET])), kept)
    assert next_item_loss(scores, history, torch.full((3,), IGNORED_TARGET)) == 0


@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_next_item_loss_is_trained_and_logged(make):
    env = known_answer_env(num_envs=16)
    chunk = 16 * 16
    dqn_logging = {"log_every": chunk, "learning_starts": 0} if make is make_dqn else {}  # a log per chunk
    agent = make(env, next_item_coef=1.0, **dqn_logging)
    logger = RecordingLogger()
    for _ in range(12):
        agent.learn(env, chunk, logger)
    losses = [value for _, value in logger.scalars["losses/next_item"]]
    assert len(losses) >= 12 and all(value > 0 for value in losses)
    assert sum(losses[-3:]) < sum(losses[:3])  # it learns the logged sequences
    plain = RecordingLogger()
    make(env).learn(env, chunk, plain)
    assert "losses/next_item" not in plain.scalars


@pytest.mark.parametrize("make", [make_dqn, make_ppo], ids=["dqn", "ppo"])
def test_learn_refuses_an_env_of_another_catalogue_or_slate_size(make):
    agent = make(known_answer_env(num_envs=4))
    for other in (known_answer_env(num_envs=4, n_items=40), known_answer_env(slate_size=2, num_envs=4)):
        with pytest.raises(ValueError, match="the agent was built for slate_size=1, n_items=30"):
            agent.learn(other, 64, RecordingLogger())
    no_final = known_answer_env(num_envs=4)
    no_final.final_observation = False
    with pytest.raises(ValueError, match="final_observation=True"):
        agent.learn(no_final, 64, RecordingLogger())


def test_state_encoder_matches_its_plain_formula_with_or_without_a_precomputed_pool():
    from recarena.agents.item_scorer import StateEncoder, pool_history_text, with_pooled_text

    torch.manual_seed(0)
    item_text = torch.randn(12, 8)
    encoder = StateEncoder(8, 6)
    history = torch.tensor([[-1, -1, 3, 5], [-1, -1, -1, -1], [1, 2, 3, 4]])
    responses = torch.tensor([[0.0, 0.0, 4.0, 2.0], [0.0] * 4, [5.0, 1.0, 3.0, 3.0]])
    observation = {"history": history, "responses": responses, "llm_state": torch.randn(3, 8).clamp(-1, 1)}

    valid = (history >= 0).float()
    weights = valid * (responses / 5.0 + 0.5)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-6)
    projected = encoder.history_projection(item_text[history.clamp(min=0)])  # [B, H, hidden], bias per slot
    pooled = (weights.unsqueeze(-1) * projected).sum(1)
    features = torch.cat([observation["llm_state"], torch.relu(pooled), valid.mean(1, keepdim=True)], dim=-1)
    expected = encoder.mlp(features)

    torch.testing.assert_close(encoder(observation, item_text), expected)
    torch.testing.assert_close(encoder(with_pooled_text(observation, item_text), item_text), expected)
    assert torch.all(pool_history_text(observation, item_text)[1] == 0)  # an empty history pools to zero


@pytest.mark.parametrize("make", [make_ppo, make_sequence_ppo], ids=["ppo", "ppo-sequence"])
def test_ppo_bootstraps_cut_sessions_from_only_the_cut_rows_on_cpu(make, monkeypatch):
    """On CPU the rollout values only the cut-off rows' final observations; training ends with the
    weights of valuing every row and zeroing the others (float tolerance: other batch shapes)."""
    def every_row(self, final_obs, cut, item_representations):
        return self.network.value(final_obs, None, item_representations) * cut.to(torch.float32)

    cut_rows = []
    only_cut = NativePPOAgent._cut_values

    def spy(self, final_obs, cut, item_representations):
        values = only_cut(self, final_obs, cut, item_representations)
        reference = every_row(self, final_obs, cut, item_representations)
        torch.testing.assert_close(values, reference, rtol=1e-5, atol=1e-6)
        assert torch.all(values[~cut] == 0)
        cut_rows.append(int(cut.sum()))
        return values

    weights = []
    for cut_values in (spy, every_row):
        monkeypatch.setattr(NativePPOAgent, "_cut_values", cut_values)
        env = known_answer_env(num_envs=8)
        agent = make(env)
        agent.learn(env, 512, RecordingLogger())
        weights.append(agent.checkpoint_state()[0])
    assert 0 < sum(cut_rows) < 8 * len(cut_rows)  # some rows were cut, never all of them
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-4, atol=1e-5, msg=key)
