"""A small causal next-item model: P(user picks item i next | history), learned from the logs.

:class:`NextItemGRU` reads a user's history (item ids and their rating-scale responses) with a GRU
and scores every item of the catalogue. An item is represented by a learned id embedding plus a
projection of its frozen LLM text encoding (``recarena.llm.encode_items``), and its bias by a learned
id bias plus a linear function of the same encoding, so an item with few or no training events is
still scored from its text. Input and output item vectors are tied::

    v_i   = E[i] + W e_i                 # item vector (id part + text part)
    b_i   = c[i] + w . e_i               # item bias (id part + text part)
    x_t   = [v_{item_t}, (r_t - 3) / 2, 1[r_t >= 4]]   # GRU input: the item and its response
    h_t   = GRU(x_t, h_{t-1})            # h_0 = 0
    s_i   = (A h_t) . v_i + b_i          # logit of item i being the next one

The cost of one step is independent of the history length: a simulator keeps ``h`` per user and
advances it with the chosen item (:meth:`NextItemGRU.advance`); a history is read once
(:meth:`NextItemGRU.encode`, the last ``window`` items). The same network is meant to serve as an
agent state encoder later.

:func:`fit_next_item_model` trains it with full-catalogue softmax cross-entropy on every next event
of the *training* log only (each user's sequence cut into chunks of ``window + 1`` events, every
event after a user's first a target once), with AdamW, a seeded generator for initialisation,
dropout and batch order (bit-identical refits on CPU), early stopping on the next-event log-loss of
the validation events (each user's first validation event after their training history), and a
tqdm bar. When the training log has no repeated (user, item) pairs (MovieLens: users never re-rate
a film), items the user already consumed are removed from the softmax (``exclude_consumed``), as
they are from the simulated user's choice and from ranking evaluation.

:meth:`NextItemModel.save` / :meth:`NextItemModel.load` write ``model.safetensors`` + ``choice.json``
(config, shapes, train-log and item-set fingerprints, repeat rate), the JSON last.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from recarena.core.config import config_dataclass, from_dict, to_dict
from recarena.core.early_stopping import EarlyStopping
from recarena.core.errors import CheckpointError
from recarena.core.io import atomic_write, atomic_write_json
from recarena.core.seeding import default_torch_threads, resolve_device, torch_generator
from recarena.data.interactions import LIKE_THRESHOLD, MAX_RATING, InteractionLog

FORMAT_VERSION = 1
FIT_REVISION = 2
"""Bump when a change to the fit (data windows, loss, early stopping) changes what it learns: the
cache key includes it, so models fitted by earlier code are refitted instead of silently reused."""
WEIGHTS_FILE = "model.safetensors"
META_FILE = "choice.json"
NEG_INF = float("-inf")


@config_dataclass
class NextItemConfig:
    """Options of the next-item network and of its fitting."""

    dim: Annotated[int, Field(ge=1)] = 64
    """Width of item vectors and of the GRU state."""
    window: Annotated[int, Field(ge=1)] = 50
    """Items read from a history at once (reset, evaluation) and the length of training chunks."""
    use_ids: bool = True
    """Learned per-item embedding and bias (off: items are known only by their text)."""
    use_text: bool = True
    """Projection of the frozen LLM item encodings into item vectors and biases."""
    use_responses: bool = True
    """Feed each history item's rating-scale response to the GRU."""
    exclude_consumed: Literal["auto", "always", "never"] = "auto"
    """Remove already consumed items from the training softmax: ``auto`` = when the training log
    has no repeated (user, item) pairs."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    epochs: Annotated[int, Field(ge=1)] = 30
    """Most passes over the training events (early stopping on validation log-loss)."""
    patience: Annotated[int, Field(ge=1)] = 2
    """Stop after this many epochs without a better validation log-loss."""
    batch_size: Annotated[int, Field(ge=1)] = 128
    """Chunks (of at most ``window`` targets) per AdamW step."""
    lr: Annotated[float, Field(gt=0)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    """AdamW (decoupled) weight decay of every parameter."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: str = "cpu"
    """``cpu``, ``cuda[:N]`` or ``auto`` (fitting only; a loaded model goes where the simulator is)."""
    encoder: str = "minilm"
    """Text encoder of the item encodings (part of the cache key)."""


def next_item_config(data: dict[str, Any] | None = None, **overrides: Any) -> NextItemConfig:
    """A validated :class:`NextItemConfig` from plain data."""
    return from_dict(NextItemConfig, {**(data or {}), **overrides}, prefix="choice.sequence.")


def response_features(response: torch.Tensor) -> torch.Tensor:
    """[..., 2] features of rating-scale responses: centred rating and "liked" (0 response = padding)."""
    response = torch.nan_to_num(response.to(torch.float32), nan=MAX_RATING)
    return torch.stack([(response - 3.0) / 2.0, (response >= LIKE_THRESHOLD).to(torch.float32)], dim=-1)


class NextItemGRU(nn.Module):
    """The network (see the module docstring). ``item_text`` [n_items, d] is a frozen buffer."""

    def __init__(
        self,
        n_items: int,
        item_text: torch.Tensor,
        config: NextItemConfig,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.n_items = int(n_items)
        dim = config.dim
        text = torch.as_tensor(item_text, dtype=torch.float32)
        if not config.use_text:
            text = text[:, :0]
        if text.shape[0] != n_items:
            raise ValueError(f"item_text must have {n_items} rows, got {text.shape[0]}")
        if not (config.use_ids or config.use_text):
            raise ValueError("the next-item model needs use_ids or use_text")
        self.register_buffer("item_text", text.detach().clone().contiguous())  # (encodings may be inference tensors)
        generator = generator or torch.Generator().manual_seed(config.seed)

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        d_text = int(text.shape[1])
        self.item_embedding = normal(n_items if config.use_ids else 0, dim, std=dim**-0.5)
        self.item_bias = nn.Parameter(torch.zeros(n_items if config.use_ids else 0))
        self.text_projection = normal(d_text, dim, std=d_text**-0.5 if d_text else 1.0)
        self.text_bias = nn.Parameter(torch.zeros(d_text))
        self.bias = nn.Parameter(torch.zeros(()))
        extra = 2 if config.use_responses else 0
        self.input_size = dim + extra
        self.gru = nn.GRU(self.input_size, dim, batch_first=True)
        bound = dim**-0.5
        with torch.no_grad():  # nn.GRU's own initialisation, drawn from our generator
            for weight in (self.gru.weight_ih_l0, self.gru.weight_hh_l0, self.gru.bias_ih_l0, self.gru.bias_hh_l0):
                weight.copy_((torch.rand(weight.shape, generator=generator) * 2 - 1) * bound)
        self.output = nn.Parameter(torch.eye(dim) + torch.randn(dim, dim, generator=generator) * 0.01)
        self.dropout = nn.Dropout(config.dropout)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> torch.device:
        return self.bias.device

    # -------------------------------------------------------------------------------- items

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors [n_items, dim], biases [n_items]) of every item."""
        vectors = torch.zeros(self.n_items, self.dim, device=self.device)
        bias = self.bias.expand(self.n_items)
        if self.config.use_ids:
            vectors = vectors + self.item_embedding
            bias = bias + self.item_bias
        if self.config.use_text:
            vectors = vectors + self.item_text @ self.text_projection
            bias = bias + self.item_text @ self.text_bias
        return vectors, bias

    def _inputs(self, vectors: torch.Tensor, items: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        x = vectors.index_select(0, items.clamp(min=0).reshape(-1)).view(*items.shape, self.dim)
        if self.config.use_responses:
            x = torch.cat([x, response_features(responses)], dim=-1)
        return x

    # -------------------------------------------------------------------------------- states

    def _cell(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        g = self.gru
        return torch.gru_cell(x, h, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.dim, device=self.device)

    def encode(self, items: torch.Tensor, responses: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """State [B, dim] after reading histories ``items`` [B, L] (newest last; -1 = padding,
        anywhere) with their ``responses``, from the zero state. Static shapes, no host sync."""
        vectors = self.item_table()[0] if table is None else table
        items = items.to(self.device)
        x = self._inputs(vectors, items, responses.to(self.device))
        h = self.initial_state(items.shape[0])
        for t in range(items.shape[1]):
            h = torch.where((items[:, t] >= 0).unsqueeze(1), self._cell(x[:, t], h), h)
        return h

    def advance(
        self,
        h: torch.Tensor,
        item: torch.Tensor,
        response: torch.Tensor,
        clicked: torch.Tensor,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The state after consuming ``item`` [B] with ``response`` [B], where ``clicked`` [B]."""
        vectors = self.item_table()[0] if table is None else table
        x = self._inputs(vectors, item, response)
        return torch.where(clicked.unsqueeze(1), self._cell(x, h), h)

    def sequence_states(self, items: torch.Tensor, responses: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """States [B, L, dim] after each position of right-padded sequences (training)."""
        x = self.dropout(self._inputs(vectors, items, responses))
        output, _ = self.gru(x)
        return output

    # -------------------------------------------------------------------------------- scores

    def logits(self, h: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits [B, n_items] of every item being next."""
        vectors, bias = self.item_table() if table is None else table
        return (h @ self.output) @ vectors.T + bias

    def item_logits(
        self, h: torch.Tensor, items: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits [B, k] of the items ``items`` [B, k]."""
        vectors, bias = self.item_table() if table is None else table
        chosen = vectors.index_select(0, items.reshape(-1)).view(*items.shape, self.dim)
        return torch.einsum("bd,bkd->bk", h @ self.output, chosen) + bias.index_select(0, items.reshape(-1)).view(items.shape)


class NextItemModel:
    """A fitted :class:`NextItemGRU` with what the simulator needs to know about its data."""

    def __init__(self, network: NextItemGRU, repeat_rate: float, exclude_consumed: bool) -> None:
        self.network = network
        self.repeat_rate = float(repeat_rate)
        self.exclude_consumed = bool(exclude_consumed)
        self.train_fingerprint = ""
        self.item_set_fingerprint = ""
        self.fit_info: dict[str, Any] = {}

    @property
    def config(self) -> NextItemConfig:
        return self.network.config

    @property
    def n_items(self) -> int:
        return self.network.n_items

    @property
    def device(self) -> torch.device:
        return self.network.device

    def to(self, device: torch.device | str) -> NextItemModel:
        self.network.to(device)
        return self

    @torch.no_grad()
    def log_probabilities(self, h: torch.Tensor, consumed: torch.Tensor | None = None) -> torch.Tensor:
        """log P(next = i | state) [B, n_items]; consumed items removed where the model excludes them."""
        logits = self.network.logits(h)
        if consumed is not None and self.exclude_consumed:
            logits = logits.masked_fill(consumed.to(logits.device), NEG_INF)
        return torch.log_softmax(logits, dim=1)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        meta = {
            "format_version": FORMAT_VERSION,
            "config": to_dict(self.config),
            "n_items": self.n_items,
            "text_dim": int(self.network.item_text.shape[1]),
            "repeat_rate": self.repeat_rate,
            "exclude_consumed": self.exclude_consumed,
            "train_fingerprint": self.train_fingerprint,
            "item_set_fingerprint": self.item_set_fingerprint,
            "fit_info": self.fit_info,
        }
        atomic_write_json(directory / META_FILE, meta)  # last: its presence marks a complete save
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, map_location: str | torch.device = "cpu", log: InteractionLog | None = None
    ) -> NextItemModel:
        """Restore a :meth:`save`; with ``log`` (the training log), check it was fitted on that data."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"{directory}: not a saved choice model (needs {META_FILE} and {WEIGHTS_FILE})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            config = from_dict(NextItemConfig, meta["config"])
            network = NextItemGRU(meta["n_items"], torch.zeros(meta["n_items"], meta["text_dim"]), config)
            network.load_state_dict(load_file(str(weights_path)), strict=True)
        except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as error:
            raise CheckpointError(f"{directory}: cannot load choice model: {error}") from error
        model = cls(network.to(map_location).eval(), meta["repeat_rate"], meta["exclude_consumed"])
        model.train_fingerprint = meta.get("train_fingerprint", "")
        model.item_set_fingerprint = meta.get("item_set_fingerprint", "")
        model.fit_info = meta.get("fit_info", {})
        if log is not None and log.item_set_fingerprint() != model.item_set_fingerprint:
            raise CheckpointError(
                f"{directory}: the choice model was fitted on item set {model.item_set_fingerprint}, the log "
                f"'{log.name}' has {log.item_set_fingerprint()}; refit it on this data"
            )
        if log is not None and log.fingerprint() != model.train_fingerprint:
            raise CheckpointError(
                f"{directory}: the choice model was fitted on training log {model.train_fingerprint}, not on "
                f"'{log.name}' ({log.fingerprint()}); refit it on this data"
            )
        return model


# ------------------------------------------------------------------------------------ data


def repeat_rate(log: InteractionLog) -> float:
    """Share of events whose item the same user had already consumed earlier in ``log``."""
    if log.n_events == 0:
        return 0.0
    keys = log.user.astype(np.int64) * log.n_items + log.item.astype(np.int64)
    return float(1.0 - len(np.unique(keys)) / log.n_events)


def training_chunks(log: InteractionLog, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(event index [c, window + 1] right-padded with -1, user [c], first position [c], length [c]).

    Each user's sequence is cut from its end into chunks of ``window + 1`` consecutive events that
    overlap by one, so every event after the user's first is a target exactly once.
    """
    rows, users, starts = [], [], []
    lengths = log.sequence_lengths()
    for user in np.nonzero(lengths >= 2)[0]:
        begin, end = int(log.user_offsets[user]), int(log.user_offsets[user + 1])
        stop = end
        while stop - begin >= 2:
            start = max(stop - window - 1, begin)
            rows.append(np.arange(start, stop))
            users.append(user)
            starts.append(start - begin)
            stop = start + 1
    index = np.full((len(rows), window + 1), -1, dtype=np.int64)
    for r, events in enumerate(rows):
        index[r, : len(events)] = events
    length = np.array([len(r) for r in rows], dtype=np.int64)
    return (
        torch.from_numpy(index),
        torch.as_tensor(np.array(users, dtype=np.int64)),
        torch.as_tensor(np.array(starts, dtype=np.int64)),
        torch.from_numpy(length),
    )


def first_positions(log: InteractionLog) -> torch.Tensor:
    """Int [n_users, n_items]: position of each item's first event in each user's sequence (the
    dtype's maximum where never; int16 unless some user has 32,767+ events)."""
    longest = int(log.sequence_lengths().max()) if log.n_users else 0
    dtype = torch.int16 if longest < torch.iinfo(torch.int16).max else torch.int32
    table = torch.full((log.n_users * log.n_items,), torch.iinfo(dtype).max, dtype=dtype)
    position = torch.as_tensor(np.arange(log.n_events) - log.user_offsets[log.user], dtype=dtype)
    keys = torch.as_tensor(log.user * log.n_items + log.item, dtype=torch.int64)
    table.scatter_reduce_(0, keys, position, reduce="amin")
    return table.view(log.n_users, log.n_items)


def history_windows(
    log: InteractionLog, users: np.ndarray, ends: np.ndarray, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, responses) [n, window]: the ``window`` events of each user before position ``ends``
    (exclusive), left-padded with -1 / 0."""
    users, ends = np.asarray(users, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    position = ends[:, None] - window + np.arange(window)[None, :]
    valid = position >= 0
    event = log.user_offsets[users][:, None] + np.clip(position, 0, None)
    event = np.clip(event, 0, max(log.n_events - 1, 0))
    items = np.where(valid, log.item[event], -1) if log.n_events else np.full(position.shape, -1)
    ratings = np.nan_to_num(log.rating[event], nan=MAX_RATING) if log.n_events else np.zeros(position.shape)
    responses = np.where(valid, ratings, 0.0)
    return torch.as_tensor(items, dtype=torch.int64), torch.as_tensor(responses, dtype=torch.float32)


def validation_events(train: InteractionLog, valid: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of each user's first validation event (valid events are in time order per user)."""
    if valid.n_events == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first = valid.user_offsets[:-1][valid.sequence_lengths() > 0]
    return valid.user[first].astype(np.int64), valid.item[first].astype(np.int64)


def hold_out_last(log: InteractionLog, min_events: int = 3) -> tuple[InteractionLog, InteractionLog]:
    """(log without each user's last event, those last events): for users with >= ``min_events``."""
    lengths = log.sequence_lengths()
    position = np.arange(log.n_events) - log.user_offsets[log.user]
    last = (position == lengths[log.user] - 1) & (lengths[log.user] >= min_events)
    return log.select_events(~last, name=f"{log.name}/choice-train"), log.select_events(last, name=f"{log.name}/choice-valid")


# ------------------------------------------------------------------------------------ fitting


@torch.no_grad()
def next_event_metrics(
    model: NextItemModel, train: InteractionLog, users: np.ndarray, items: np.ndarray, batch_size: int = 1024
) -> dict[str, float]:
    """Log-loss, HR@10 and NDCG@10 of each user's next item (``items``) after their whole ``train``
    sequence (the last ``window`` events read), consumed items excluded where the model excludes them."""
    if len(users) == 0:
        return {"n": 0}
    network = model.network
    was_training = network.training
    network.eval()
    window = network.config.window
    lengths = train.sequence_lengths()
    nll, hits, ndcgs = [], [], []
    table = network.item_table()
    for start in range(0, len(users), batch_size):
        u = users[start : start + batch_size]
        target = torch.as_tensor(items[start : start + batch_size], device=network.device)
        history, responses = history_windows(train, u, lengths[u], window)
        h = network.encode(history, responses, table[0])
        logits = network.logits(h, table)
        if model.exclude_consumed:
            consumed = _consumed_mask(train, u).to(logits.device)
            consumed[torch.arange(len(u)), target] = False
            logits = logits.masked_fill(consumed, NEG_INF)
        log_p = torch.log_softmax(logits, dim=1)
        target_log_p = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        rank = (log_p > target_log_p.unsqueeze(1)).sum(1)
        nll.append(-target_log_p.cpu())
        hits.append((rank < 10).float().cpu())
        ndcgs.append(torch.where(rank < 10, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(rank, dtype=torch.float32)).cpu())
    network.train(was_training)
    return {
        "n": int(len(users)),
        "log_loss": float(torch.cat(nll).mean()),
        "hr10": float(torch.cat(hits).mean()),
        "ndcg10": float(torch.cat(ndcgs).mean()),
    }


def _consumed_mask(log: InteractionLog, users: np.ndarray) -> torch.Tensor:
    """Bool [len(users), n_items]: every item of each user's sequence in ``log``."""
    mask = torch.zeros(len(users), log.n_items, dtype=torch.bool)
    lengths = log.sequence_lengths()[users]
    rows = np.repeat(np.arange(len(users)), lengths)
    events = np.concatenate([np.arange(log.user_offsets[u], log.user_offsets[u + 1]) for u in users]) if len(users) else np.zeros(0, dtype=np.int64)
    if len(events):
        mask[torch.as_tensor(rows), torch.as_tensor(log.item[events])] = True
    return mask


@torch.enable_grad()  # callers may hold no_grad (e.g. a simulator built inside an evaluation)
def fit_next_item_model(
    train: InteractionLog,
    item_embeddings: torch.Tensor,
    config: NextItemConfig | None = None,
    valid: InteractionLog | None = None,
    progress: bool = True,
) -> NextItemModel:
    """Fit a :class:`NextItemModel` on the next events of ``train`` (see the module docstring).

    ``valid`` (same index space; each user's first event is used) drives early stopping; without
    it every epoch runs. Deterministic for a given ``config.seed`` on CPU.
    """
    config = config or NextItemConfig()
    default_torch_threads()
    if train.n_events == 0:
        raise ValueError(f"the log '{train.name}' has no events to fit the choice model on")
    item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32).cpu()
    if item_embeddings.dim() != 2 or item_embeddings.shape[0] != train.n_items:
        raise ValueError(f"item_embeddings must be [n_items={train.n_items}, d], got {tuple(item_embeddings.shape)}")
    if valid is not None and valid.item_set_fingerprint() != train.item_set_fingerprint():
        raise ValueError("train and valid logs must share one item index space")
    device = resolve_device(config.device)
    generator = torch_generator(config.seed)
    started = time.perf_counter()
    repeats = repeat_rate(train)
    exclude = config.exclude_consumed == "always" or (config.exclude_consumed == "auto" and repeats == 0.0)
    network = NextItemGRU(train.n_items, item_embeddings, config, generator=generator).to(device)
    model = NextItemModel(network, repeats, exclude)
    model.train_fingerprint = train.fingerprint()
    model.item_set_fingerprint = train.item_set_fingerprint()

    index, chunk_user, chunk_start, _ = training_chunks(train, config.window)
    if len(index) == 0:
        raise ValueError(f"the log '{train.name}' has no user with 2 or more events to learn next items from")
    items_all = torch.as_tensor(train.item, dtype=torch.int64)
    ratings_all = torch.as_tensor(np.nan_to_num(train.rating, nan=MAX_RATING), dtype=torch.float32)
    positions = first_positions(train).to(device) if exclude else None
    valid_users, valid_items = validation_events(train, valid) if valid is not None else (np.zeros(0), np.zeros(0))
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    stopping = EarlyStopping(config.patience)
    n_targets = int((index[:, 1:] >= 0).sum())
    epochs = tqdm(range(1, config.epochs + 1), desc="fit choice model", disable=not progress, leave=False)
    for epoch in epochs:
        network.train()
        total = 0.0
        order = torch.randperm(len(index), generator=generator)
        for begin in range(0, len(order), config.batch_size):
            batch = order[begin : begin + config.batch_size]
            events = index[batch]
            real = events >= 0
            width = int(real.sum(1).max())
            events, real = events[:, :width], real[:, :width]
            safe = events.clamp(min=0)
            items = torch.where(real, items_all[safe], torch.full_like(safe, -1)).to(device)
            responses = torch.where(real, ratings_all[safe], torch.zeros_like(ratings_all[safe])).to(device)
            table = network.item_table()
            states = network.sequence_states(items[:, :-1], responses[:, :-1], table[0])
            target_mask = real[:, 1:].to(device)
            h = states[target_mask]
            target = items[:, 1:][target_mask]
            logits = network.logits(network.dropout(h), table)
            if positions is not None:
                # items consumed before the target's position (its own first occurrence excluded)
                position = (chunk_start[batch].unsqueeze(1) + torch.arange(1, width)).to(device)
                user = chunk_user[batch].unsqueeze(1).expand(-1, width - 1).to(device)
                seen = positions.index_select(0, user[target_mask]) < position[target_mask].unsqueeze(1).to(positions.dtype)
                logits = logits.masked_fill(seen, NEG_INF)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(target)
        record: dict[str, float] = {"epoch": epoch, "train_log_loss": total / max(n_targets, 1)}
        if len(valid_users):
            scores = next_event_metrics(model, train, valid_users, valid_items)
            record.update(valid_log_loss=scores["log_loss"], valid_hr10=scores["hr10"])
            stop = stopping.update(scores["log_loss"], epoch, network)
        history.append(record)
        epochs.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if len(valid_users) and stop:
            break
    stopping.restore_best(network)
    network.eval()
    model.fit_info = {
        "epochs_run": len(history),
        "best_epoch": stopping.best_epoch or len(history),
        "best_valid_log_loss": stopping.best if stopping.best_state is not None else None,
        "seconds": round(time.perf_counter() - started, 2),
        "n_targets": n_targets,
        "n_valid_events": int(len(valid_users)),
        "repeat_rate": repeats,
        "exclude_consumed": exclude,
        "history": history,
    }
    return model


__all__ = [
    "NextItemConfig",
    "NextItemGRU",
    "NextItemModel",
    "fit_next_item_model",
    "hold_out_last",
    "history_windows",
    "next_event_metrics",
    "next_item_config",
    "repeat_rate",
    "validation_events",
]
