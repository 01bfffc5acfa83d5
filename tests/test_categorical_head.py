"""The fused PPO policy head and sampler agree with the plain-PyTorch formulas they replace."""

from __future__ import annotations

import pytest
import torch

from recarena.agents.categorical_head import Workspace, categorical_entropy, categorical_head
from recarena.agents.item_scorer import mask_scores
from recarena.agents.native_ppo import NativePPOAgent, NativePPOConfig


def _problem(batch: int = 9, n_items: int = 13, dim: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn(batch, dim, generator=generator)
    items = torch.randn(n_items, dim, generator=generator)
    bias = torch.randn(n_items, generator=generator)
    allowed = torch.rand(batch, n_items, generator=generator) > 0.4
    allowed[:, 0] = True
    action = torch.randint(0, n_items, (batch,), generator=generator)
    action = torch.where(allowed.gather(1, action[:, None])[:, 0], action, 0)
    weights = torch.randn(2, batch, generator=generator, dtype=torch.float64)
    return state, items, bias, allowed, action, weights


def _reference(state, items, bias, allowed, action):
    log_probs = torch.log_softmax(mask_scores(state @ items.T + bias, allowed), dim=1)
    return log_probs.gather(1, action[:, None])[:, 0], categorical_entropy(log_probs)


@pytest.mark.parametrize("masked", [True, False])
def test_values_and_gradients_match_the_unfused_formulas(masked):
    state, items, bias, allowed, action, (w_log_prob, w_entropy) = _problem()
    allowed = allowed if masked else torch.ones_like(allowed)
    inputs = [t.clone().requires_grad_() for t in (state, items, bias)]
    log_prob, ent = categorical_head(*inputs, ~allowed if masked else None, action, Workspace())
    reference_inputs = [t.double().requires_grad_() for t in (state, items, bias)]
    reference_log_prob, reference_entropy = _reference(*reference_inputs, allowed, action)

    torch.testing.assert_close(log_prob.double(), reference_log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), reference_entropy, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad((log_prob.double() * w_log_prob + ent.double() * w_entropy).sum(), inputs)
    reference_grads = torch.autograd.grad((reference_log_prob * w_log_prob + reference_entropy * w_entropy).sum(),
                                          reference_inputs)
    for grad, reference in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad.double(), reference, atol=1e-5, rtol=1e-4)


def test_blocked_items_get_no_probability_and_no_gradient():
    state, items, bias, allowed, action, _ = _problem()
    allowed[:, 3] = False  # item 3 is blocked for everyone
    action = torch.where(action == 3, 0, action)
    items, bias = items.clone().requires_grad_(), bias.clone().requires_grad_()
    log_prob, ent = categorical_head(state, items, bias, ~allowed, action, Workspace())
    (log_prob.sum() + ent.sum()).backward()
    assert bias.grad[3] == 0 and torch.all(items.grad[3] == 0)
    assert torch.isfinite(log_prob).all() and torch.isfinite(ent).all()


def test_reduced_precision_inputs_give_close_values_and_input_dtypes_for_gradients():
    state, items, bias, allowed, action, _ = _problem(batch=16, n_items=40, dim=8)
    inputs = [state.bfloat16().requires_grad_(), items.bfloat16().requires_grad_(), bias.clone().requires_grad_()]
    log_prob, ent = categorical_head(*inputs, ~allowed, action, Workspace())
    reference_log_prob, reference_entropy = _reference(state, items, bias, allowed, action)
    torch.testing.assert_close(log_prob, reference_log_prob, atol=0.15, rtol=0.05)
    torch.testing.assert_close(ent, reference_entropy, atol=0.15, rtol=0.05)
    (log_prob.sum() + ent.sum()).backward()
    assert [t.grad.dtype for t in inputs] == [torch.bfloat16, torch.bfloat16, torch.float32]


def test_a_backward_after_the_workspace_was_reused_raises():
    state, items, bias, allowed, action, _ = _problem()
    workspace = Workspace()
    first, _ = categorical_head(state.clone().requires_grad_(), items, bias, ~allowed, action, workspace)
    categorical_head(state, items, bias, ~allowed, action, workspace)  # overwrites the shared buffers
    with pytest.raises(RuntimeError, match="reused"):
        first.sum().backward()


def test_single_item_sampler_follows_the_softmax_and_never_picks_a_masked_item():
    agent = NativePPOAgent(6, NativePPOConfig(seed=3), item_embeddings=torch.randn(6, 4))
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, -1e9]]).expand(40_000, 6).contiguous()
    items, log_prob = agent._sample(logits)
    counts = torch.bincount(items[:, 0], minlength=6).double() / len(items)
    expected = torch.softmax(logits[0].double(), dim=0)
    assert counts[5] == 0
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(log_prob, expected.log().float()[items[:, 0]])
