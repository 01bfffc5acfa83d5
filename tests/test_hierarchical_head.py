"""The two-level (hierarchical) softmax policy head and native PPO with ``head="hierarchical"``."""

from __future__ import annotations

import math
import time

import pytest
import torch

from recarena.agents.categorical_head import Workspace, sample_categorical
from recarena.agents.hierarchical_head import HierarchicalHead, MemberScores, balanced_clusters
from recarena.agents.item_scorer import allowed_items, history_mask
from recarena.agents.native_ppo import NativePPOAgent, NativePPOConfig
from recarena.agents.registry import load_agent, make_agent
from recarena.core.errors import ConfigError
from tests._native_fixtures import (
    BEST,
    SESSION_TAGS,
    RecordingLogger,
    greedy_picks,
    known_answer_env,
    make_ppo,
)


def _head(n_items: int = 23, dim: int = 6, hidden: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = HierarchicalHead(torch.randn(n_items, dim, generator=generator), hidden, seed=seed)
    with torch.no_grad():
        head.cluster_residual.normal_(generator=generator)
        head.cluster_bias.normal_(generator=generator)
    items = torch.randn(n_items, hidden, generator=generator)
    bias = torch.randn(n_items, generator=generator)
    return head, items, bias, generator


def _masked_reference(head, state, items, bias, allowed):
    """Dense [B, n_items] probabilities of the masked two-level policy, written out cluster by cluster."""
    tables = head.tables(items, bias)
    top = state @ tables.cluster_items.T + tables.cluster_bias
    probabilities = torch.zeros(state.shape[0], items.shape[0], dtype=torch.float64)
    for row in range(state.shape[0]):
        clusters = [c for c in range(head.n_clusters) if allowed[row, head.members[c][head.members[c] >= 0]].any()]
        cluster_p = torch.softmax(top[row, clusters].double(), 0)
        for p_cluster, c in zip(cluster_p, clusters, strict=True):
            members = [int(a) for a in head.members[c] if a >= 0 and allowed[row, a]]
            within = torch.softmax((items[members] @ state[row] + bias[members]).double(), 0)
            probabilities[row, members] = p_cluster * within
    return probabilities


@pytest.mark.parametrize("n_items", [1, 2, 10, 30, 101, 3706])
def test_clusters_partition_the_catalogue_in_near_equal_sizes(n_items):
    embeddings = torch.randn(n_items, 12, generator=torch.Generator().manual_seed(1))
    members = balanced_clusters(embeddings, seed=0)
    assert members.shape[0] == math.ceil(math.sqrt(n_items))
    real = members[members >= 0]
    assert torch.equal(real.sort().values, torch.arange(n_items))  # every item exactly once
    sizes = (members >= 0).sum(1)
    assert sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    assert torch.equal(members, balanced_clusters(embeddings.clone(), seed=0))  # deterministic


def test_clusters_group_similar_items():
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 10
    labels = torch.arange(16) % 4
    embeddings = centres[labels] + 0.01 * torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    members = balanced_clusters(embeddings, seed=0)
    for row in members:
        assert len(set(labels[row[row >= 0]].tolist())) == 1


def test_clusters_of_1e5_items_are_fast():
    embeddings = torch.randn(100_000, 384, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    members = balanced_clusters(embeddings, seed=3)
    assert time.perf_counter() - start < 10.0  # about a second on one loaded core
    assert members.shape == (317, 316)
    assert torch.equal(members[members >= 0].sort().values, torch.arange(100_000))
    sizes = (members >= 0).sum(1)
    assert sizes.max() - sizes.min() <= 1


def test_an_agent_over_1e5_items_ranks_and_samples_without_catalogue_sized_masks():
    n_items = 100_000
    embeddings = torch.nn.functional.normalize(torch.randn(n_items, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    agent = NativePPOAgent(n_items, NativePPOConfig(head="hierarchical", mask="history", hidden_dim=16),
                           item_embeddings=embeddings)
    observation = {
        "history": torch.tensor([[-1, 5, 99_999], [1, 2, 3]]),
        "responses": torch.tensor([[0.0, 4.0, 5.0], [1.0, 2.0, 3.0]]),
        "llm_state": torch.zeros(2, 32),
    }
    scores = agent.scores(observation)
    assert scores.shape == (2, n_items)
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(2))
    actor = agent.network.actor
    tables = agent.hierarchy.tables(actor.item_representations(), actor.item_bias)
    items, log_prob, (clusters, members) = agent._sample_hierarchical(observation, None, tables)
    assert clusters.shape == (2, 317) and members.shape == (2, 316)
    assert not set(items[0].tolist()) & {5, 99_999} and not set(items[1].tolist()) & {1, 2, 3}
    assert torch.isfinite(log_prob).all() and (log_prob < 0).all()


def test_item_maps_invert_the_member_table():
    head, *_ = _head()
    assert torch.equal(head.members[head.cluster_of, head.slot_of], torch.arange(23))
    assert {"members", "cluster_of", "slot_of", "cluster_residual", "cluster_bias"} <= set(head.state_dict())


@pytest.mark.parametrize("source", ["allowed", "history"])
def test_masked_distribution_sums_to_one_over_allowed_items(source):
    head, items, bias, generator = _head()
    batch = 6
    state = torch.randn(batch, 5, generator=generator)
    history = torch.randint(-1, 23, (batch, 9), generator=generator)
    cluster_1 = head.members[1][head.members[1] >= 0]
    history[0] = -1
    history[0, : len(cluster_1)] = cluster_1  # row 0 consumed every member of cluster 1
    allowed = history_mask(history, 23)
    mask = {"allowed": allowed_items(allowed)} if source == "allowed" else {"history": history}
    reference = _masked_reference(head, state, items, bias, allowed)
    torch.testing.assert_close(reference.sum(1), torch.ones(batch, dtype=torch.float64))
    assert (reference[~allowed] == 0).all()

    tables = head.tables(items, bias)
    for item in range(23):  # the head's log-probability of every item equals the reference
        target = torch.full((batch,), item)
        log_prob, _ = head.log_prob_and_entropy(state, tables, target, *head.masks_for(target, **mask))
        expected = reference[:, item]
        ok = expected > 0
        torch.testing.assert_close(log_prob[ok].double().exp(), expected[ok], atol=1e-5, rtol=1e-4)
        assert (log_prob[~ok] < -1e6).all()
    cluster_mass = torch.stack([reference[:, row[row >= 0]].sum(1) for row in head.members], dim=1)
    assert torch.equal(head.blocked_clusters(**mask), cluster_mass == 0)
    assert cluster_mass[0, 1] == 0


def test_sampling_matches_the_probabilities_and_skips_masked_clusters():
    head, items, bias, generator = _head()
    draws = 60_000
    state = torch.randn(1, 5, generator=generator).expand(draws, 5)
    allowed = torch.ones(1, 23, dtype=torch.bool)
    allowed[0, head.members[2][head.members[2] >= 0]] = False  # a whole cluster blocked
    allowed[0, [int(head.members[0, 0]), int(head.members[3, 1])]] = False
    reference = _masked_reference(head, state[:1], items, bias, allowed)[0]
    tables = head.tables(items, bias)
    uniform = torch.rand(draws, 2, generator=generator)
    item, log_prob, blocked_clusters, blocked_members = head.sample(state, tables, uniform,
                                                                    allowed=allowed.expand(draws, 23))
    assert blocked_clusters[0, 2] and not blocked_clusters[0, [0, 1, 3]].any()
    assert allowed[0, item].all() and (head.cluster_of[item] != 2).all()
    frequencies = torch.bincount(item, minlength=23).double() / draws
    torch.testing.assert_close(frequencies, reference, atol=0.01, rtol=0)
    torch.testing.assert_close(log_prob.double(), reference[item].log(), atol=1e-5, rtol=1e-5)
    # the stored masks re-score the drawn items to the same log-probabilities
    rescored, _ = head.log_prob_and_entropy(state, tables, item, blocked_clusters, blocked_members)
    torch.testing.assert_close(rescored, log_prob)


def test_a_row_that_allows_nothing_blocks_nothing():
    head, *_ = _head()
    allowed = torch.zeros(2, 23, dtype=torch.bool)
    allowed[1, 4] = True
    blocked_clusters, blocked_members = head.masks_for(torch.tensor([0, 4]), allowed=allowed)
    assert not blocked_clusters[0].any() and blocked_clusters[1].sum() == head.n_clusters - 1
    assert torch.equal(blocked_members[0], head.members[head.cluster_of[0]] < 0)
    assert blocked_members[1].sum() == head.members.shape[1] - 1


def test_member_scores_values_and_gradients_match_autograd():
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64)
    state = torch.randn(9, 3, generator=generator, dtype=torch.float64)
    cluster = torch.randint(0, 5, (9,), generator=generator)
    weights = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    inputs = [table.float().requires_grad_(), state.float().requires_grad_()]
    workspace = Workspace()
    scores = MemberScores.apply(*inputs, cluster, workspace)
    reference_inputs = [table.clone().requires_grad_(), state.clone().requires_grad_()]
    reference = torch.einsum("bmd,bd->bm", reference_inputs[0][cluster], reference_inputs[1])
    torch.testing.assert_close(scores.double(), reference, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad((scores.double() * weights).sum(), inputs)
    reference_grads = torch.autograd.grad((reference * weights).sum(), reference_inputs)
    for grad, expected in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad.double(), expected, atol=1e-5, rtol=1e-5)
    first = MemberScores.apply(*inputs, cluster, workspace)
    MemberScores.apply(*inputs, cluster, workspace)  # overwrites the shared buffer
    with pytest.raises(RuntimeError, match="reused"):
        first.sum().backward()


def test_inverse_cdf_never_draws_a_zero_probability_entry():
    log_probs = torch.log_softmax(torch.tensor([[-1e9, 0.0, -1e9, 1.0, -1e9]]), 1).expand(1000, 5)
    uniform = torch.cat([torch.zeros(1), torch.full((1,), 1 - 2**-24), torch.rand(998)])
    picks = sample_categorical(log_probs, uniform)
    assert set(picks.tolist()) <= {1, 3} and picks[0] == 1 and picks[1] == 3


def test_update_log_prob_equals_the_full_scores_log_prob():
    env = known_answer_env(num_envs=8)
    agent = make_ppo(env, head="hierarchical")
    agent.learn(env, 256, RecordingLogger())  # move the weights off their initialisation
    observation, _ = env.reset(seed=4)
    scores = agent.scores(observation)  # full log pi(a) for every item
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(8))
    actor, head = agent.network.actor, agent.hierarchy
    action = torch.randint(0, env.n_items, (8,), generator=torch.Generator().manual_seed(0))
    state = actor.encode_state(observation)
    tables = head.tables(actor.item_representations(), actor.item_bias)
    log_prob, entropy = head.log_prob_and_entropy(state, tables, action, *head.masks_for(action))
    torch.testing.assert_close(log_prob, scores.gather(1, action[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    # gradients reach the item head, the state encoder and the cluster parameters
    (log_prob.sum() + entropy.sum()).backward()
    for parameter in (actor.item_bias, actor.item_projection.weight, head.cluster_residual, head.cluster_bias):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_config_validation_and_unsupported_slates():
    with pytest.raises(ConfigError, match="head"):
        make_agent("native_ppo", 10, {"head": "sampled"}, item_embeddings=torch.zeros(10, 4))
    with pytest.raises(ValueError, match="head"):
        NativePPOConfig(head="sampled")
    with pytest.raises(ConfigError, match="slate_size=3"):
        make_ppo(known_answer_env(slate_size=3, num_envs=4), head="hierarchical")
    assert NativePPOConfig().head == "full"
    agent = make_agent("native_ppo", 10, {"head": "hierarchical"}, item_embeddings=torch.randn(10, 4))
    assert agent.hierarchy is not None and agent.hierarchy.n_clusters == 4


def test_native_ppo_with_the_hierarchical_head_finds_the_obvious_best_item():
    env = known_answer_env()
    agent = make_ppo(env, head="hierarchical")
    logger = RecordingLogger()
    agent.learn(env, 20_000, logger)
    assert set(SESSION_TAGS) | {"losses/policy_loss", "losses/entropy"} <= set(logger.scalars)
    assert (greedy_picks(agent, env)[:, 0] == BEST).all()


@pytest.mark.parametrize("mask", ["env", "history"])
def test_masked_training_never_recommends_a_consumed_item(mask):
    from recarena.envs.vector_env import RecommendationVectorEnv

    env = RecommendationVectorEnv(num_envs=16, simulator="synthetic", simulator_config={"n_items": 20},
                                  mask_consumed=True, max_steps=6)
    agent = NativePPOAgent(env.n_items, NativePPOConfig(head="hierarchical", mask=mask),
                           item_embeddings=env.simulator.item_embeddings)
    observation, _ = env.reset(seed=0)
    agent.observation = observation
    from recarena.agents.session_stats import SessionStats

    agent.stats = SessionStats(16, env.simulator.item_embeddings, agent.device)
    original_step = env.step
    checked = []

    def step(actions):
        allowed = env.action_masks()
        checked.append(bool(allowed.gather(1, actions.reshape(len(actions), -1)).all()))
        return original_step(actions)

    env.step = step
    batch = agent._collect(env)
    assert all(checked) and len(checked) == agent.config.n_steps
    if mask == "env":
        clusters, members = batch["blocked"]
        assert clusters.shape == (16 * agent.config.n_steps, agent.hierarchy.n_clusters)
        assert members.shape == (16 * agent.config.n_steps, agent.hierarchy.members.shape[1])
    else:
        assert batch["blocked"] is None
    agent._update(batch)  # and the update re-scores the stored actions without error


def test_save_and_load_round_trip(tmp_path):
    env = known_answer_env(num_envs=4)
    agent = make_ppo(env, head="hierarchical")
    agent.learn(env, 512, RecordingLogger())
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent")
    assert loaded.config.head == "hierarchical"
    assert torch.equal(loaded.hierarchy.members, agent.hierarchy.members)
    observation, _ = env.reset(seed=5)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))


def test_mixed_precision_scores_and_update_track_full_precision():
    env = known_answer_env(num_envs=16)
    agent = make_ppo(env, head="hierarchical")
    agent.learn(env, 1024, RecordingLogger())
    observation, _ = env.reset(seed=3)
    full = agent.scores(observation)
    agent.config.mixed_precision = "bf16"
    half = agent.scores(observation)
    torch.testing.assert_close(full, half, rtol=0.05, atol=0.05)
    agent.learn(env, 512, RecordingLogger())  # rollouts and updates run under bf16 autocast too
    assert all(torch.isfinite(p).all() for p in agent.network.parameters())


def test_next_item_loss_is_trained_under_the_hierarchical_policy():
    env = known_answer_env(num_envs=16)
    agent = make_ppo(env, head="hierarchical", next_item_coef=1.0)
    logger = RecordingLogger()
    for _ in range(12):
        agent.learn(env, 16 * 16, logger)
    losses = [value for _, value in logger.scalars["losses/next_item"]]
    assert len(losses) >= 12 and all(0 < value < 1e3 for value in losses)
    assert sum(losses[-3:]) < sum(losses[:3])
    # the loss is the cross-entropy of the hierarchical policy with the history's items excluded
    observation, target = agent.logged.sample(32, torch.Generator().manual_seed(0))
    actor, head = agent.network.actor, agent.hierarchy
    with torch.no_grad():
        state, items = actor.encode_state(observation), actor.item_representations()
        tables = head.tables(items, actor.item_bias)
        loss = head.next_item_loss(state, tables, observation["history"], target)
        log_prob, _ = head.log_prob_and_entropy(state, tables, target, *head.masks_for(target, history=observation["history"]))
        allowed = allowed_items(history_mask(observation["history"], agent.n_items))
        reference = _masked_reference(head, state, items, actor.item_bias, allowed).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(loss, -log_prob.mean())
    ignored = target.clone()
    ignored[::2] = -100  # an ignore index: those examples are skipped
    with torch.no_grad():
        partial = head.next_item_loss(state, tables, observation["history"], ignored)
        nothing = head.next_item_loss(state, tables, observation["history"], torch.full_like(target, -100))
    torch.testing.assert_close(partial, -log_prob[1::2].mean())
    assert nothing == 0
    ok = reference > 0
    assert ok.sum() > 16
    torch.testing.assert_close(log_prob[ok].double(), reference[ok].log(), atol=1e-4, rtol=1e-4)
