"""The causal sequence encoder as the state of the native DQN and PPO agents, pretrained on the logs.

:class:`SequenceItemScorer` has :class:`recarena.agents.item_scorer.ItemScorer`'s interface
(``item_representations``, ``encode_state``, ``forward``, ``item_bias``, ``item_text``) on a
:class:`recarena.agents.sequence_encoder.SequenceEncoder`::

    s      = encoder.encode_last(history, responses)   # the state: the newest position's hidden state
    v_i    = encoder.item_vectors()[i]                 # the same item vectors the encoder reads
    score  = s . v_i + b_i                             # Q value (DQN) or logit (PPO)

so an untrained bias leaves exactly the SASRec scores. The pooled :class:`ItemScorer` cannot tell
two orders of the same items apart (it averages the history); this state can.

:class:`SequenceStateOptions` holds the options the native agents share (``state``, ``encoder``,
``pretrain_*``). :func:`pretrain_encoder` trains the encoder on next-item prediction over the env's
``logged_sequences`` (the simulator's training log only: held-out events never reach it) with the
same routine as the SASRec baseline (:func:`recarena.agents.next_item_training.fit_next_item`), and
caches the weights under ``$RECARENA_CACHE/pretrained_encoders`` keyed by the sequences' and item
encodings' fingerprint, the encoder config and the pretraining config: a second run loads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from recarena.agents.base import Observation
from recarena.agents.item_scorer import ItemScorer, logged_sequences_of
from recarena.agents.next_item_training import fit_next_item, pca_initialisation, sequence_windows
from recarena.agents.sequence_encoder import SequenceEncoder, SequenceEncoderConfig
from recarena.core.config import config_dataclass, to_dict
from recarena.core.io import atomic_write
from recarena.llm.models import cache_root

PRETRAIN_FORMAT = 1
"""Part of the pretraining cache key: bump it when the pretraining routine changes what it learns."""


@config_dataclass
class SequenceStateOptions:
    """What the native DQN and PPO configs (and tabular / linear Q's) share about their state encoder."""

    state: Literal["pooled", "sequence"] = "pooled"
    """``pooled``: the response-weighted pool of the history's LLM encodings (``ItemScorer``);
    ``sequence``: the causal sequence encoder (:class:`SequenceItemScorer`, options in ``encoder``)."""
    encoder: SequenceEncoderConfig = dataclasses.field(default_factory=SequenceEncoderConfig)
    """The sequence encoder's options (``state: sequence`` only). It reads the newest
    ``min(encoder.max_length, env.history_length)`` items of the observation."""
    pretrain_epochs: Annotated[int, Field(ge=0)] = 0
    """Epochs of next-item pretraining on the env's logged training sequences before RL (0 = none;
    ``state: sequence`` only). Cached: a second run with the same data and config loads the weights."""
    pretrain_batch_size: Annotated[int, Field(ge=1)] = 128
    """Users per pretraining batch (each contributes every position of its window)."""
    pretrain_learning_rate: Annotated[float, Field(gt=0)] = 3e-3
    pretrain_init_from_llm: bool = True
    """Start the id embeddings at the items' principal-component coordinates of their LLM encodings."""

    @model_validator(mode="after")
    def _check_state(self) -> SequenceStateOptions:
        if self.pretrain_epochs and self.state != "sequence":
            raise ValueError(f"pretrain_epochs ({self.pretrain_epochs}) needs state: sequence (got {self.state!r})")
        return self


class SequenceItemScorer(nn.Module):
    """``scores = encode_last(history, responses) @ item_vectors.T + bias`` (see the module docstring).

    Args:
        item_embeddings: float [n_items, d] frozen LLM encodings of the item texts.
        config: the encoder's options.
    """

    def __init__(self, item_embeddings: torch.Tensor, config: SequenceEncoderConfig) -> None:
        super().__init__()
        self.n_items = int(item_embeddings.shape[0])
        self.encoder = SequenceEncoder(self.n_items, config, item_embeddings.detach().to(torch.float32))
        self.item_bias = nn.Parameter(torch.zeros(self.n_items))
        self.eval()  # RL reads the encoder without dropout (pretraining switches it on while it runs)

    @property
    def item_text(self) -> torch.Tensor:
        """Float [n_items, d]: the frozen LLM item encodings."""
        return self.encoder.item_text

    def item_representations(self) -> torch.Tensor:
        """Float [n_items, hidden_dim]: the encoder's item vectors (id embedding + projected text)."""
        return self.encoder.item_vectors()

    def encode_state(self, observation: Observation, item_representations: torch.Tensor | None = None) -> torch.Tensor:
        """Float [B, hidden_dim]: the encoder's state at the newest history item."""
        return self.encoder.encode_last(observation["history"].long(), observation.get("responses"),
                                        item_representations)

    def forward(self, observation: Observation, item_representations: torch.Tensor | None = None) -> torch.Tensor:
        """Float [B, n_items] scores (``item_representations``: a precomputed :meth:`item_representations`)."""
        if item_representations is None:
            item_representations = self.item_representations()
        state = self.encode_state(observation, item_representations)
        return torch.addmm(self.item_bias, state, item_representations.T)


def build_scorer(options: Any, hidden_dim: int, item_embeddings: torch.Tensor) -> ItemScorer | SequenceItemScorer:
    """The item scorer a native agent's config asks for (``options.state``)."""
    if options.state == "sequence":
        return SequenceItemScorer(item_embeddings, options.encoder)
    return ItemScorer(item_embeddings, hidden_dim)


def state_dim(options: Any, hidden_dim: int) -> int:
    """Width of the state vector of :func:`build_scorer`'s scorer."""
    return options.encoder.hidden_dim if options.state == "sequence" else hidden_dim


# ------------------------------------------------------------------------------------ pretraining


def _digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = torch.as_tensor(tensor).detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def pretrain_key(sequences: Any, item_text: torch.Tensor, options: SequenceStateOptions, window: int, seed: int) -> str:
    """The cache key of a pretraining: fingerprint of the training sequences and item encodings, the
    encoder config, the window and the pretraining config (and :data:`PRETRAIN_FORMAT`)."""
    settings = {"format": PRETRAIN_FORMAT, "encoder": to_dict(options.encoder), "window": int(window),
                "epochs": options.pretrain_epochs, "batch_size": options.pretrain_batch_size,
                "learning_rate": options.pretrain_learning_rate, "init_from_llm": options.pretrain_init_from_llm,
                "seed": int(seed)}
    data = _digest(sequences.offsets, sequences.item, sequences.rating, item_text)
    return hashlib.sha256((json.dumps(settings, sort_keys=True) + data).encode()).hexdigest()[:32]


def pretrain_cache_path(key: str) -> Path:
    """Where the weights of pretraining ``key`` are cached."""
    return cache_root() / "pretrained_encoders" / f"{key}.pt"


def pretrain_encoder(encoder: SequenceEncoder, env: Any, options: SequenceStateOptions, seed: int) -> dict[str, Any]:
    """Load into ``encoder`` the weights of next-item pretraining on ``env.logged_sequences`` (cached,
    see the module docstring); returns what was done (``cached``, ``path``, per-epoch ``history``).

    The pretrained encoder starts from its own seeded initialisation (``seed``), so the weights
    depend only on the key, not on what the agent built before it."""
    sequences = logged_sequences_of(env, "pretrain_epochs")
    window = min(options.encoder.max_length, int(env.history_length))
    path = pretrain_cache_path(pretrain_key(sequences, encoder.item_text, options, window, seed))
    if path.exists():
        saved = torch.load(path, map_location=encoder.item_text.device, weights_only=True)
        encoder.load_state_dict(saved["encoder"])
        print(f"sequence encoder: pretrained weights loaded from {path}", file=sys.stderr, flush=True)
        return {"cached": True, "path": str(path), "history": json.loads(saved["history"])}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = SequenceEncoder(encoder.n_items, options.encoder, encoder.item_text.cpu())
    fresh = fresh.to(encoder.item_text.device)
    if options.pretrain_init_from_llm and options.encoder.use_ids and encoder.text_dim:
        with torch.no_grad():
            fresh.item_embedding.copy_(pca_initialisation(fresh.item_text.cpu(), options.encoder.hidden_dim))
    windows = sequence_windows(sequences.offsets, sequences.item, sequences.rating, window)
    print(f"sequence encoder: pretraining {options.pretrain_epochs} epochs on {len(windows[0])} logged sequences "
          f"(window {window})", file=sys.stderr, flush=True)
    history = fit_next_item(fresh, windows, epochs=options.pretrain_epochs, batch_size=options.pretrain_batch_size,
                            learning_rate=options.pretrain_learning_rate, seed=seed)
    state = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"encoder": state, "history": json.dumps(history)}, tmp))
    last = history[-1]
    print(f"sequence encoder: pretrained in {last['seconds']:.0f} s ({last['cpu_seconds']:.0f} s CPU), final loss "
          f"{last['loss']:.3f}; cached at {path}", file=sys.stderr, flush=True)
    encoder.load_state_dict(fresh.state_dict())
    return {"cached": False, "path": str(path), "history": history}
