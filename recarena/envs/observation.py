"""The observation builder shared by the single env, the vector env and offline evaluation.

A policy therefore sees exactly the same features when it is trained in simulation and when it is
scored by replaying logged histories. All functions work on batches of tensors on any device.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from recarena.data.interactions import MAX_RATING

MAX_RESPONSE = MAX_RATING
"""Observed responses are ratings on the simulator's scale, kept in [0, MAX_RESPONSE] (padding is 0)."""


def observation_space(n_items: int, history_length: int, embedding_dim: int) -> spaces.Dict:
    """The Dict observation space: ``history``, ``responses`` and the LLM-encoded ``llm_state``."""
    return spaces.Dict(
        {
            "history": spaces.Box(-1, n_items - 1, shape=(history_length,), dtype=np.int64),
            "responses": spaces.Box(0.0, MAX_RESPONSE, shape=(history_length,), dtype=np.float32),
            "llm_state": spaces.Box(-1.0, 1.0, shape=(embedding_dim,), dtype=np.float32),
        }
    )


def llm_state(history: torch.Tensor, responses: torch.Tensor, item_embeddings: torch.Tensor) -> torch.Tensor:
    """LLM encoding of histories [B, H] -> [B, d].

    A response-weighted mean of the cached item encodings of the history (padding -1 has weight 0),
    L2-normalised, so it always lies in [-1, 1]; an empty history gives the zero vector.
    """
    valid = history >= 0
    weights = torch.where(valid, responses.clamp(min=0.0) + 1.0, torch.zeros_like(responses))
    # A weighted embedding bag sums the encodings without materialising a [B, H, d] tensor.
    pooled = torch.nn.functional.embedding_bag(
        history.clamp(min=0), item_embeddings, per_sample_weights=weights.to(item_embeddings.dtype), mode="sum"
    )
    norm = pooled.norm(dim=-1, keepdim=True)
    state = pooled / norm.clamp(min=1e-12)  # an empty history (pooled == 0) stays the zero vector
    return state.clamp_(-1.0, 1.0).to(torch.float32)


def clean_responses(history: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """The observation's responses [B, H] from the state's: NaN (not answered) as ``MAX_RESPONSE``,
    padding (item -1) 0, clamped to the space's [0, MAX_RESPONSE]."""
    responses = torch.nan_to_num(responses, nan=MAX_RESPONSE, posinf=MAX_RESPONSE, neginf=0.0)
    return torch.where(history >= 0, responses, torch.zeros_like(responses)).clamp_(0.0, MAX_RESPONSE)


def build_observation(
    history: torch.Tensor, responses: torch.Tensor, item_embeddings: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The batched observation dict for histories [B, H] (item -1 = padding) and responses [B, H]
    (the state's: NaN, not answered, is read as ``MAX_RESPONSE`` as in :func:`clean_responses`)."""
    history = history.to(torch.int64)
    responses = torch.nan_to_num(responses, nan=MAX_RESPONSE, posinf=MAX_RESPONSE, neginf=0.0)
    return {
        "history": history,
        "responses": clean_responses(history, responses).to(torch.float32),
        "llm_state": llm_state(history, responses, item_embeddings.to(history.device)),
    }


def left_pad_histories(
    sequences: list[np.ndarray], responses: list[np.ndarray], history_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack variable-length (items, responses) sequences into left-padded [B, H] tensors (newest last)."""
    batch = len(sequences)
    history = torch.full((batch, history_length), -1, dtype=torch.int64)
    values = torch.zeros((batch, history_length), dtype=torch.float32)
    for row, (items, ratings) in enumerate(zip(sequences, responses, strict=True)):
        items = np.asarray(items)[-history_length:]
        ratings = np.asarray(ratings, dtype=np.float32)[-history_length:]
        if len(items):
            history[row, -len(items):] = torch.as_tensor(items, dtype=torch.int64)
            values[row, -len(items):] = torch.as_tensor(np.nan_to_num(ratings, nan=MAX_RESPONSE))
    return history, values


def history_item_mask(history: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool [B, n_items]: True for the items that appear in ``history`` [B, H] (-1 = padding).

    Static shapes, so no host synchronisation on an accelerator: every entry is scattered into a
    [B, n_items + 1] mask whose extra last column takes the padding, then that column is dropped
    (the result is a view of it). Negative entries are padding; an entry above ``n_items``
    raises (a device-side assertion on CUDA).
    """
    mask = torch.zeros(history.shape[0], n_items + 1, dtype=torch.bool, device=history.device)
    index = torch.where(history >= 0, history, torch.full_like(history, n_items)).to(torch.int64)
    return mask.scatter_(1, index, True)[:, :n_items]
