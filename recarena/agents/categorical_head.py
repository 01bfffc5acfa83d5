"""A fused, allocation-free masked-softmax policy head for PPO updates over a whole catalogue.

A PPO update on one item out of ``n_items`` needs, per example, ``log pi(a)`` and the entropy of
``softmax(s . e_i + b_i)`` over the allowed items, and their gradients. Written with stock ops
this is a dozen sweeps over [B, n_items] tensors, most of them into freshly allocated memory; on a
CPU the first touch of each fresh tensor (page faults) costs more than the sweep itself. This head
computes the same values and gradients in a few in-place sweeps over three [B, n_items] buffers that
are kept between minibatches (:class:`Workspace`). With ``z`` the masked logits, ``p`` their
softmax, ``lse`` their log-normaliser and ``H`` the entropy::

    log pi(a) = z_a - lse            d/dz = onehot(a) - p
    H = lse - sum_i p_i z_i          d/dz = -p * (z - lse + H)

and the matmul's own gradients (``grad_z @ E``, ``grad_z.T @ s``, ``grad_z.sum(0)``).
"""

from __future__ import annotations

from typing import Any

import torch

from recarena.agents.item_scorer import MASKED_SCORE


def sample_categorical(log_probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Int64 [B] draws from ``log_probs`` [B, K] (normalised) by inverse CDF with ``uniform`` [B]
    in [0, 1): the first entry whose cumulative probability exceeds ``uniform * total``. Blocked
    entries have probability 0, so they never are; ``uniform * total < total`` in floating point
    (``uniform <= 1 - 2**-24``), so a trailing blocked entry is never reached either."""
    cumulative = log_probs.exp().cumsum(dim=1)
    index = torch.searchsorted(cumulative, uniform.unsqueeze(1) * cumulative[:, -1:], right=True)
    return index.squeeze(1)


def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy [B] of normalised ``log_probs`` [B, K] (blocked entries: p = 0 exactly)."""
    return -(log_probs.exp() * log_probs).sum(1)


class Workspace:
    """Named scratch tensors reused while their shape, dtype and device stay the same.

    The head's backward overwrites the buffers its forward filled, so each forward must be
    followed by its backward before the next forward on the same workspace (as in a training
    loop); a stale backward raises instead of returning wrong gradients.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self.generation = 0

    def buffer(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised float32 tensor of ``shape`` on ``like``'s device, reused when it fits."""
        current = self._buffers.get(name)
        if current is None or current.shape != shape or current.device != like.device:
            current = torch.empty(shape, dtype=torch.float32, device=like.device)
            self._buffers[name] = current
        return current


class CategoricalHead(torch.autograd.Function):
    """(log pi(action) [B], entropy [B]) of ``softmax(state @ items.T + bias)`` over the items not
    ``blocked`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, state: torch.Tensor, items: torch.Tensor, bias: torch.Tensor,
                blocked: torch.Tensor | None, action: torch.Tensor, workspace: Workspace):
        batch, n_items = state.shape[0], items.shape[0]
        z = workspace.buffer("logits", (batch, n_items), state)
        if state.dtype == torch.float32 and items.dtype == torch.float32:
            torch.addmm(bias.float(), state, items.T, out=z)
        else:  # reduced precision (autocast on an accelerator): the matmul in it, the softmax in fp32
            z.copy_(torch.addmm(bias.to(state.dtype), state, items.to(state.dtype).T))
        if blocked is not None:
            z.masked_fill_(blocked, MASKED_SCORE)
        peak = z.amax(dim=1, keepdim=True)
        p = workspace.buffer("probabilities", (batch, n_items), state)
        torch.sub(z, peak, out=p).exp_()
        total = p.sum(dim=1, keepdim=True)
        p.div_(total)
        lse = peak + total.log()
        log_prob = z.gather(1, action.unsqueeze(1)) - lse
        # sum_i p_i z_i, through a third buffer: a [B, 1, K] x [B, K, 1] bmm is B tiny products (4x slower on CPU)
        expected_z = torch.mul(p, z, out=workspace.buffer("product", (batch, n_items), state)).sum(dim=1, keepdim=True)
        entropy = lse - expected_z
        workspace.generation += 1
        ctx.workspace, ctx.generation = workspace, workspace.generation
        ctx.save_for_backward(state, items, action, lse - entropy)
        ctx.dtypes = (state.dtype, items.dtype, bias.dtype)
        return log_prob.squeeze(1), entropy.squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad_log_prob: torch.Tensor, grad_entropy: torch.Tensor):
        if ctx.workspace.generation != ctx.generation:
            raise RuntimeError("CategoricalHead: the workspace was reused by another forward before this backward")
        state, items, action, shift = ctx.saved_tensors
        batch, n_items = state.shape[0], items.shape[0]
        grad = ctx.workspace.buffer("logits", (batch, n_items), state)  # holds z; becomes dL/dz in place
        p = ctx.workspace.buffer("probabilities", (batch, n_items), state)
        grad_log_prob, grad_entropy = grad_log_prob.unsqueeze(1).float(), grad_entropy.unsqueeze(1).float()
        grad.sub_(shift).mul_(grad_entropy).add_(grad_log_prob).mul_(p).neg_()  # blocked items: p = 0
        grad.scatter_add_(1, action.unsqueeze(1), grad_log_prob)
        state_dtype, items_dtype, bias_dtype = ctx.dtypes
        compute = grad if state_dtype == torch.float32 else grad.to(state_dtype)
        grad_state = grad_items = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_state = (compute @ items.to(compute.dtype)).to(state_dtype)
        if ctx.needs_input_grad[1]:
            grad_items = (compute.T @ state.to(compute.dtype)).to(items_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0).to(bias_dtype)
        return grad_state, grad_items, grad_bias, None, None, None


def categorical_head(state: torch.Tensor, items: torch.Tensor, bias: torch.Tensor, blocked: torch.Tensor | None,
                     action: torch.Tensor, workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability [B] of ``action`` [B], entropy [B]) under ``softmax(state @ items.T + bias)``.

    Args:
        state: [B, D] state vectors; items: [n_items, D] item representations; bias: [n_items].
        blocked: bool [B, n_items], True for items that may not be picked (every row must leave at
            least one item, and ``action`` must not be blocked), or None.
        workspace: buffers reused between calls (one per training loop).
    """
    return CategoricalHead.apply(state, items, bias, blocked, action, workspace)
