"""One causal sequence encoder of a user's history: the state of the sequence baselines (and, next, of the RL agents).

:class:`SequenceEncoder` reads a left-padded history (item ids, newest last, ``-1`` = padding; and
the user's rating-scale responses) and returns a hidden state at every position, or only at the
newest one (:meth:`SequenceEncoder.encode_last`). Items are scored by a dot product of that state
with the *same* item representations the encoder reads::

    v_i  = E[i] + W e_i                      # item vector: learned id embedding + projected frozen LLM text encoding
    x_t  = sqrt(d) v_{item_t} + P[t] + R r_t # input: item, position (transformer only), response features
    h_t  = f(x_1 .. x_t)                     # causal: a SASRec-style transformer (default) or a GRU (GRU4Rec)
    s_i  = h_t . v_i                         # score of item i as the next one

``e_i`` is a frozen buffer (``recarena.llm.encode_items``); ``W`` starts at zero, so an untrained
encoder reads items by their id embeddings only (which ``init_from_llm`` in the baselines starts at
the items' principal-component coordinates of ``e``), and an item with no training events is still
scored through ``W e_i`` once ``W`` has been learned. ``use_ids`` / ``use_text`` / ``use_responses``
switch the parts off.

* ``architecture: transformer`` - pre-LayerNorm blocks of causal multi-head self-attention that
  skips padding keys (a padding query attends to itself, so no row is empty), learned position
  embeddings counted back from the newest item (0 = newest), so a real item's output does not depend
  on how much padding precedes it and a batch can be cut to its longest history.
* ``architecture: gru`` - a GRU over the real part of each history (oldest to newest), output
  through dropout; no position embeddings (order is the recurrence).

**The window** ``max_length`` (up to 200, as SASRec uses on ML-1M) bounds what is read. Per env step
the cost need not grow with it, because the newest state can be advanced incrementally:

* GRU: :meth:`SequenceEncoder.advance` takes the state after ``t`` events and the new event and
  returns the state after ``t + 1``: O(d^2) per step whatever the history length (the window then
  only bounds a history read at once with :meth:`encode_last`, e.g. at reset).
* Transformer: the state of the newest position needs its query against the keys/values of the
  earlier positions of every layer. An env would keep, per user, a ring buffer of the last
  ``max_length`` keys and values of each layer (computed once, when the event arrived) and compute
  only the new position: O(d^2 + max_length * d) per layer and step, no re-encoding of the window.
  Position embeddings counted from the newest item change for every cached key at each step, so
  that mode needs positions the cache can keep: relative ones (rotary embeddings rotate a key once
  by its absolute index and attention depends only on index differences) - the planned
  ``positions`` option; until then :meth:`encode_last` re-reads the window (cost O(L^2 d)).
  Without dropout on CPU it reads only the real tokens (no padding through the linear maps, norms
  and feed-forward nets) and attends over rows sorted by length in groups padded to their own
  longest history: same values and gradients as the padded pass in ~40% less time (sequence PPO's
  update on the throughput benchmark's env, ``bench/ppo_profile.py``).

:func:`next_item_loss` is the supervised next-item objective (full-catalogue softmax cross-entropy,
"SASRec+", or a sampled softmax over shared uniform negatives).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recarena.core.config import config_dataclass

NEG_INF = float("-inf")
LIKE_THRESHOLD = 4.0
GROUP_ROWS = 128
"""Rows per attention layout of :meth:`SequenceEncoder.encode_last`'s packed pass (rows sorted by length)."""
MAX_RESPONSE = 5.0


@config_dataclass
class SequenceEncoderConfig:
    """Options of the causal sequence encoder."""

    architecture: Literal["transformer", "gru"] = "transformer"
    """A SASRec-style causal transformer, or a GRU (GRU4Rec)."""
    max_length: Annotated[int, Field(ge=1, le=4096)] = 50
    """Longest history read at once (the newest ``max_length`` items). SASRec used 200 on ML-1M;
    50 trains ~3x faster on CPU (it is also evaluate.py's default observation window)."""
    hidden_dim: Annotated[int, Field(ge=1)] = 64
    """Width of item vectors, positions and hidden states."""
    n_layers: Annotated[int, Field(ge=1)] = 2
    """Transformer blocks, or stacked GRU layers."""
    n_heads: Annotated[int, Field(ge=1)] = 2
    """Attention heads (transformer only)."""
    feedforward_dim: Annotated[int, Field(ge=1)] = 128
    """Width of each block's feed-forward net (transformer only)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    use_ids: bool = True
    """Learned per-item id embedding ``E`` (off: items are known by their text only)."""
    use_text: bool = True
    """Projection ``W e_i`` of the frozen LLM item encodings (needs the encodings)."""
    use_responses: bool = True
    """Feed each history item's response (centred rating, liked) to the encoder."""

    @model_validator(mode="after")
    def _check(self) -> SequenceEncoderConfig:
        if self.architecture == "transformer" and self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if not (self.use_ids or self.use_text):
            raise ValueError("the sequence encoder needs use_ids or use_text")
        return self


def response_features(responses: torch.Tensor) -> torch.Tensor:
    """[..., 2] features of rating-scale responses: centred rating and "liked" (NaN = no rating = 5)."""
    responses = torch.nan_to_num(responses.to(torch.float32), nan=MAX_RESPONSE)
    return torch.stack([(responses - 3.0) / 2.0, (responses >= LIKE_THRESHOLD).to(torch.float32)], dim=-1)


class _Block(nn.Module):
    """A pre-LayerNorm transformer block: masked multi-head self-attention, then a feed-forward net."""

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feedforward_norm = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(
            nn.Linear(dim, feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(feedforward, dim)
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, dim] -> [B, L, dim]; ``last_only``: only the newest position's output [B, 1, dim]
        (its query against every key), which is all :meth:`SequenceEncoder.encode_last` needs of the
        last block."""
        batch, length, dim = x.shape
        normed = self.attention_norm(x)
        if last_only:  # keys and values of every position, the query of the newest one
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(normed[:, -1:], weight[:dim], bias[:dim]).view(batch, 1, self.heads, -1).transpose(1, 2)
            k, v = F.linear(normed, weight[dim:], bias[dim:]).view(batch, length, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
            x, allowed, length = x[:, -1:], allowed[:, :, -1:], 1
        else:
            q, k, v = self.qkv(normed).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.residual_dropout(self.attention_out(attended.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.residual_dropout(self.feedforward(self.feedforward_norm(x)))

    def packed(self, x: torch.Tensor, packing: _Packing, newest: torch.Tensor | None = None) -> torch.Tensor:
        """The block without dropout on packed tokens ``x`` [T, dim] laid out by ``packing``: [T, dim];
        with ``newest`` (the packed index [B] of each row's newest token) only those tokens' outputs
        [B, dim], as ``last_only``.

        Every linear map, norm and feed-forward runs on the T tokens only; attention reads each
        group's queries, keys and values in its padded [rows, width] layout."""
        dim, weight, bias = x.shape[1], self.qkv.weight, self.qkv.bias
        normed = self.attention_norm(x)
        q = F.linear(normed if newest is None else normed.index_select(0, newest), weight[:dim], bias[:dim])
        keys = packing.layouts(F.linear(normed, weight[dim : 2 * dim], bias[dim : 2 * dim]), self.heads)
        values = packing.layouts(F.linear(normed, weight[2 * dim :], bias[2 * dim :]), self.heads)
        if newest is None:
            queries, masks = packing.layouts(q, self.heads), packing.allowed
        else:
            queries = [part.view(-1, 1, self.heads, dim // self.heads).transpose(1, 2) for part in q.split(packing.rows)]
            masks = [allowed[:, :, -1:] for allowed in packing.allowed]
        attended = [F.scaled_dot_product_attention(*qkv, attn_mask=allowed).transpose(1, 2).reshape(-1, dim)
                    for *qkv, allowed in zip(queries, keys, values, masks, strict=True)]
        attended = attended[0] if len(attended) == 1 else torch.cat(attended)
        if newest is None:
            x = x + self.attention_out(packing.tokens_of(attended))
        else:
            x = x.index_select(0, newest) + self.attention_out(attended)
        return x + self.feedforward(self.feedforward_norm(x))


class _Packing:
    """Where the kept tokens of a length-sorted batch sit for attention: groups of ``rows`` rows,
    each padded to its own ``widths`` (its longest kept history), laid end to end; ``slots`` [T]
    are the packed tokens' positions in that layout, ``allowed`` each group's [rows, 1, width,
    width] attention mask."""

    def __init__(self, rows: list[int], widths: list[int], slots: torch.Tensor, allowed: list[torch.Tensor]) -> None:
        self.rows, self.widths, self.slots, self.allowed = rows, widths, slots, allowed
        self.sizes = [n * width for n, width in zip(rows, widths, strict=True)]
        self.full = sum(self.sizes) == slots.shape[0]  # every position kept: the layout is the packing

    def layouts(self, packed: torch.Tensor, heads: int) -> list[torch.Tensor]:
        """``packed`` [T, dim] in each group's layout: [rows, heads, width, dim / heads] (zeros where no token sits)."""
        if not self.full:
            packed = packed.new_zeros(sum(self.sizes), packed.shape[1]).index_copy(0, self.slots, packed)
        return [part.view(n, width, heads, -1).transpose(1, 2)
                for part, n, width in zip(packed.split(self.sizes), self.rows, self.widths, strict=True)]

    def tokens_of(self, laid_out: torch.Tensor) -> torch.Tensor:
        """[T, dim]: the packed tokens' rows of ``laid_out`` [sum of rows * width, dim]."""
        return laid_out if self.full else laid_out.index_select(0, self.slots)


class SequenceEncoder(nn.Module):
    """The encoder (see the module docstring).

    Args:
        n_items: catalogue size.
        config: a :class:`SequenceEncoderConfig`.
        item_text: float [n_items, d] frozen LLM item encodings (a persistent buffer, saved with the
            weights), or None: no text part (``d = 0``).

    Initialisation draws from the global torch RNG: callers fork and seed it (the baselines do).
    """

    def __init__(self, n_items: int, config: SequenceEncoderConfig, item_text: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n_items, self.config = int(n_items), config
        dim = config.hidden_dim
        text = torch.zeros(n_items, 0) if item_text is None or not config.use_text else item_text
        text = torch.as_tensor(text, dtype=torch.float32)
        if text.ndim != 2 or text.shape[0] != n_items:
            raise ValueError(f"item_text must be [{n_items}, d], got shape {tuple(text.shape)}")
        self.register_buffer("item_text", text.detach().clone().contiguous())
        self.item_embedding = nn.Parameter(torch.randn(n_items if config.use_ids else 0, dim) * dim**-0.5)
        # Zero: an untrained encoder reads ids only; with ids off, a random start breaks the symmetry.
        projection = torch.zeros(text.shape[1], dim) if config.use_ids else torch.randn(text.shape[1], dim) * dim**-0.5
        self.text_projection = nn.Parameter(projection)
        self.response_projection = nn.Linear(2, dim, bias=False) if config.use_responses else None
        self.input_dropout = nn.Dropout(config.dropout)
        self.scale = math.sqrt(dim)
        if config.architecture == "transformer":
            self.position_embedding = nn.Parameter(torch.randn(config.max_length, dim) * dim**-0.5)
            self.blocks = nn.ModuleList(
                _Block(dim, config.n_heads, config.feedforward_dim, config.dropout) for _ in range(config.n_layers)
            )
            self.output_norm = nn.LayerNorm(dim)
        else:
            self.gru = nn.GRU(dim, dim, num_layers=config.n_layers, batch_first=True,
                              dropout=config.dropout if config.n_layers > 1 else 0.0)
            self.output_dropout = nn.Dropout(config.dropout)

    @property
    def dim(self) -> int:
        return self.config.hidden_dim

    @property
    def text_dim(self) -> int:
        return int(self.item_text.shape[1])

    # ------------------------------------------------------------------------------------ items

    def item_vectors(self) -> torch.Tensor:
        """[n_items, dim]: ``E[i] + W e_i`` of every item (inputs and output scores share them)."""
        vectors = self.item_text @ self.text_projection
        return vectors + self.item_embedding if self.config.use_ids else vectors

    def _inputs(self, items: torch.Tensor, responses: torch.Tensor | None, vectors: torch.Tensor) -> torch.Tensor:
        real = items >= 0
        x = vectors[items.clamp(min=0)] * self.scale
        if self.response_projection is not None and responses is not None:
            x = x + self.response_projection(response_features(responses.to(x.device)))
        return x * real.unsqueeze(-1)

    # ----------------------------------------------------------------------------------- states

    def forward(self, items: torch.Tensor, responses: torch.Tensor | None = None,
                vectors: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Hidden states [B, L, dim] of left-padded histories ``items`` [B, L] (L <= max_length;
        ``-1`` = padding, newest last) with their ``responses`` [B, L]. ``vectors``: a precomputed
        :meth:`item_vectors` (saves recomputing it when the caller scores with it too).
        ``last_only`` (transformer): [B, 1, dim], the newest position only, whose last block then
        costs one query instead of L (the GRU returns every position either way)."""
        vectors = self.item_vectors() if vectors is None else vectors
        real = items >= 0
        if self.config.architecture == "gru":
            return self._gru(self._inputs(items, responses, vectors), real)
        length = items.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"histories of {length} items exceed max_length {self.config.max_length}")
        if last_only and items.device.type == "cpu" and not (self.training and self.config.dropout > 0):
            return self._newest_packed(items, responses, vectors).unsqueeze(1)
        x = self._inputs(items, responses, vectors)
        distance = torch.arange(length - 1, -1, -1, device=items.device)
        x = self.input_dropout(x + self.position_embedding[distance].unsqueeze(0)) * real.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=items.device)
        allowed = ((causal & real.unsqueeze(1)) | eye).unsqueeze(1)  # [B, 1, L(query), L(key)]
        for index, block in enumerate(self.blocks):
            x = block(x, allowed, last_only and index == len(self.blocks) - 1)
        return self.output_norm(x)

    def _newest_packed(self, items: torch.Tensor, responses: torch.Tensor | None, vectors: torch.Tensor) -> torch.Tensor:
        """The transformer's state [B, dim] at the newest position, computed on the kept tokens only.

        Same values as the padded pass's ``[:, -1]`` (within float rounding) at a fraction of its
        cost: a padding position's output reaches no real one (no real query attends to a padding
        key), so only real tokens are kept, and each row's newest position even when it is padding
        (an empty history, which attends to itself). Attention reads rows sorted by length in
        groups of :data:`GROUP_ROWS`, each padded only to its own longest history. Needs no dropout
        (eval mode or ``dropout: 0``), so a training pass draws the same dropout masks as before; CPU
        only (the per-group layouts cost host syncs and small kernels an accelerator is slow at)."""
        batch, length = items.shape
        device = items.device
        real = items >= 0
        kept = real.clone()
        kept[:, -1] = True  # the real tokens and the newest position
        spans = length - kept.to(torch.uint8).argmax(1)  # from the oldest kept token on (its count, left-padded)
        order = torch.sort(spans, stable=True).indices  # shortest first: groups of similar lengths
        items, real, kept, spans = items[order], real[order], kept[order], spans[order]
        slots = kept.view(-1).nonzero().squeeze(1)  # flat [B * L] positions of the kept tokens, row by row
        ends = kept.sum(1).cumsum(0)
        newest = ends - 1  # packed index of each row's newest token
        token_items = items.reshape(-1)[slots]
        x = vectors.index_select(0, token_items.clamp(min=0)) * self.scale
        if self.response_projection is not None and responses is not None:
            token_responses = responses.to(device)[order].reshape(-1)[slots]
            x = x + self.response_projection(response_features(token_responses))
        row, column = slots // length, slots % length
        x = (x + self.position_embedding.index_select(0, (length - 1) - column)) * (token_items >= 0).unsqueeze(-1)
        sizes, widths, allowed, layout_slots = [], [], [], torch.empty_like(slots)
        spans_host, ends_host, offset = spans.tolist(), ends.tolist(), 0
        for start in range(0, batch, GROUP_ROWS):
            stop = min(start + GROUP_ROWS, batch)
            width, first, last = spans_host[stop - 1], (ends_host[start - 1] if start else 0), ends_host[stop - 1]
            # a token at (row, column) of the batch sits at (row - start, column - (length - width)) of its group
            layout_slots[first:last] = offset + (row[first:last] - start) * width + column[first:last] - (length - width)
            causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
            eye = torch.eye(width, dtype=torch.bool, device=device)
            allowed.append(((causal & real[start:stop, length - width :].unsqueeze(1)) | eye).unsqueeze(1))
            sizes.append(stop - start)
            widths.append(width)
            offset += (stop - start) * width
        packing = _Packing(sizes, widths, layout_slots, allowed)
        for block in self.blocks[:-1]:
            x = block.packed(x, packing)
        state = self.output_norm(self.blocks[-1].packed(x, packing, newest))
        return torch.empty_like(state).index_copy(0, order, state)  # back to the callers' row order

    def _gru(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        x = self.input_dropout(x)
        lengths = real.sum(1)
        # Left-padded -> right-padded (real part first), run packed, and shift the outputs back.
        shift = (length - lengths).unsqueeze(1)
        index = (torch.arange(length, device=x.device).unsqueeze(0) + shift) % length
        right = torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, dim))
        packed = nn.utils.rnn.pack_padded_sequence(right, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        output, _ = self.gru(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=length)
        back = (torch.arange(length, device=x.device).unsqueeze(0) - shift) % length
        output = torch.gather(output, 1, back.unsqueeze(-1).expand(-1, -1, dim)) * real.unsqueeze(-1)
        return self.output_dropout(output)

    def encode_last(self, items: torch.Tensor, responses: torch.Tensor | None = None,
                    vectors: torch.Tensor | None = None) -> torch.Tensor:
        """State [B, dim] at the newest position of each history (the newest ``max_length`` items
        are read; the window is cut to the longest real history of the batch)."""
        items = items[:, -self.config.max_length :]
        responses = None if responses is None else responses[:, -self.config.max_length :]
        width = max(int((items >= 0).sum(dim=1).max()) if items.numel() else 0, 1)
        items = items[:, -width:]
        responses = None if responses is None else responses[:, -width:]
        return self(items, responses, vectors, last_only=True)[:, -1]

    def initial_state(self, batch: int) -> torch.Tensor:
        """GRU only: the state [n_layers, B, dim] of an empty history."""
        self._require_gru("initial_state")
        return torch.zeros(self.config.n_layers, batch, self.dim, device=self.item_text.device)

    def advance(self, state: torch.Tensor, item: torch.Tensor, response: torch.Tensor | None = None,
                vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU only: (output [B, dim], new state) after one more event ``item`` [B] (``-1``: no event,
        the state is kept) with its ``response`` [B]. O(d^2) per step, whatever the history length."""
        self._require_gru("advance")
        vectors = self.item_vectors() if vectors is None else vectors
        x = self._inputs(item.unsqueeze(1), None if response is None else response.unsqueeze(1), vectors)
        output, new_state = self.gru(self.input_dropout(x), state)
        real = (item >= 0).view(1, -1, 1)
        new_state = torch.where(real, new_state, state)
        return self.output_dropout(new_state[-1]), new_state

    def _require_gru(self, what: str) -> None:
        if self.config.architecture != "gru":
            raise NotImplementedError(f"{what} is the GRU's incremental step (see the module docstring)")

    def scores(self, items: torch.Tensor, responses: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_items]: ``h_last . v_i`` for every item."""
        vectors = self.item_vectors()
        return self.encode_last(items, responses, vectors) @ vectors.T


def next_item_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    vectors: torch.Tensor,
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax",
    n_negatives: int = 512,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of next items ``targets`` [M] given states ``hidden`` [M, dim] and item
    ``vectors`` [n_items, dim]: over the whole catalogue (``full_softmax``, "SASRec+"), or over the
    target plus ``n_negatives`` uniform negatives shared by the batch (a negative equal to the target
    is masked)."""
    if loss == "full_softmax":
        return F.cross_entropy(hidden @ vectors.T, targets)
    negatives = torch.randint(vectors.shape[0], (n_negatives,), generator=generator).to(hidden.device)
    positive = (hidden * vectors[targets]).sum(-1, keepdim=True)
    negative = (hidden @ vectors[negatives].T).masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), NEG_INF)
    zeros = torch.zeros(len(targets), dtype=torch.int64, device=hidden.device)
    return F.cross_entropy(torch.cat([positive, negative], dim=1), zeros)
