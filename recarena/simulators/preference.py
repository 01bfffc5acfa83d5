"""The LLM-derived preference model: what rating (1-5) a logged user would give any item.

The model combines collaborative signal learned from the training split with frozen LLM text
encodings (see ``docs/simulators.md``, "Preference model and fidelity")::

    rating(u, i) = mu + b_u + b_i + t_i + <user_vector(u), item_vector(i)>

    user_vector(u) = p_u + P s_u        # learned factor + projection of the user's text profile
    item_vector(i) = q_i + W e_i        # learned factor + projection of the item's LLM encoding
    t_i            = w . e_i            # an item bias read from the item text

``e_i`` is the frozen LLM encoding of item ``i``'s text and ``s_u`` the user's text profile: the
mean encoding of the items the user rated in training, the rating-centred ("taste") mean, and,
where given, the LLM encoding of a written profile of the user's history. The per-item parameters
``b_i, q_i`` are L2-regularised, so for an item with few training ratings they stay near zero and
the text part (``t_i``, ``W e_i``) carries the prediction: that is how cold items stay predictable.

Variants are the same class with parts switched off: ``id`` keeps ``b_u, b_i, p_u, q_i`` (plain
biased matrix factorisation); ``text`` has no per-item parameters at all (items are known only
through their text); ``combined`` has everything.

Like probability is ``sigmoid((rating - 3.5) / temperature)``: 3.5 is the midpoint between the
integer ratings 3 and 4 (like = rating >= 4), and ``temperature = 0.5`` approximates the normal
CDF of the rating error (RMSE ~0.9: ``Phi(x / 0.9) ~ sigmoid(x / 0.53)``). Optional distillation of
LLM yes/no judgements trains this probability against the judge's, with a BCE term.

Implicit-feedback logs (no ratings) are refused with a clear error: the model regresses ratings,
and inventing negatives would make its "ratings" meaningless to the simulator.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
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
from recarena.core.errors import CheckpointError, DataFormatError
from recarena.core.io import atomic_write, atomic_write_json
from recarena.core.seeding import default_torch_threads, resolve_device, torch_generator
from recarena.data.interactions import LIKE_THRESHOLD, MAX_RATING, MIN_RATING, InteractionLog

LIKE_MIDPOINT = LIKE_THRESHOLD - 0.5
"""Raw predicted rating at which the like probability is 1/2 (halfway between 3 and 4 stars)."""

FORMAT_VERSION = 1
FIT_REVISION = 1
"""Bump when a change to the fit changes what it learns: the cache key includes it (see
:mod:`recarena.simulators.preference_store`), so models fitted by earlier code are not reused."""
WEIGHTS_FILE = "model.safetensors"
META_FILE = "preference.json"


@config_dataclass
class PreferenceConfig:
    """Options of the preference model and of its fitting (built with ``recarena.config.from_dict``)."""

    variant: Literal["id", "text", "combined"] = "combined"
    """Which parts are on: learned ids only, LLM text only (no per-item parameters), or both."""
    dim: Annotated[int, Field(gt=0)] = 32
    """Width of the user/item vectors (learned factors and text projections share it)."""
    use_user_profile: bool = True
    """Add the projected text profile of the user's training history to the user vector (text/combined)."""
    epochs: Annotated[int, Field(gt=0)] = 40
    """Maximum passes over the training ratings."""
    lr: Annotated[float, Field(gt=0)] = 0.003
    """Adam learning rate."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    """L2 penalty on the per-user/per-item parameters of each mini-batch (biases and factors)."""
    text_weight_decay: Annotated[float, Field(ge=0)] = 0.01
    """L2 penalty on the shared text projections (applied to the whole matrices each step)."""
    batch_size: Annotated[int, Field(gt=0)] = 4096
    """Ratings per Adam step."""
    patience: Annotated[int, Field(gt=0)] = 3
    """Stop after this many epochs without a better validation RMSE (needs a validation log)."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    """Seeds parameter initialisation and batch order (explicit torch generator)."""
    encoder: str = "minilm"
    """Text encoder that produced the item encodings (a name known to ``llm`` or any HF id/path)."""
    distill_weight: Annotated[float, Field(ge=0)] = 0.0
    """Weight of the BCE term that distils LLM like-judgements into the model (0 = off)."""
    distill_pairs: Annotated[int, Field(ge=0)] = 2000
    """How many (user, item) pairs to have the LLM judge when distillation is on."""
    temperature: Annotated[float, Field(gt=0)] = 0.5
    """Like probability = sigmoid((rating - 3.5) / temperature)."""

    @property
    def uses_ids(self) -> bool:
        return self.variant in ("id", "combined")

    @property
    def uses_text(self) -> bool:
        return self.variant in ("text", "combined")


def preference_config(data: dict[str, Any] | None = None, **overrides: Any) -> PreferenceConfig:
    """A validated :class:`PreferenceConfig` from plain data (unknown keys are a ``ConfigError``)."""
    return from_dict(PreferenceConfig, {**(data or {}), **overrides}, prefix="preference.")


@dataclass
class Judgements:
    """LLM like-probabilities for sampled (user, item) pairs, to be distilled into the model."""

    user: torch.Tensor  # int64 [m]
    item: torch.Tensor  # int64 [m]
    probability: torch.Tensor  # float32 [m], in [0, 1]

    def __post_init__(self) -> None:
        self.user = torch.as_tensor(self.user, dtype=torch.int64).reshape(-1)
        self.item = torch.as_tensor(self.item, dtype=torch.int64).reshape(-1)
        self.probability = torch.as_tensor(self.probability, dtype=torch.float32).reshape(-1)
        if not (len(self.user) == len(self.item) == len(self.probability)):
            raise ValueError("judgements: user, item and probability must have the same length")
        if len(self.probability) and not bool(((self.probability >= 0) & (self.probability <= 1)).all()):
            raise ValueError("judgements: probabilities must lie in [0, 1]")


def _profile_sums(
    log: InteractionLog, item_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised profile sums: consumed [n_users, d], rating-centred [n_users, d], user mean rating [n_users]."""
    embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32).cpu()
    user = torch.as_tensor(log.user, dtype=torch.int64)
    item = torch.as_tensor(log.item, dtype=torch.int64)
    counts = torch.bincount(user, minlength=log.n_users).clamp(min=1).to(torch.float32)
    consumed = torch.zeros(log.n_users, embeddings.shape[1]).index_add_(0, user, embeddings[item])
    mean = torch.zeros(log.n_users)
    taste = torch.zeros_like(consumed)
    if log.has_ratings:
        rating = torch.as_tensor(log.rating, dtype=torch.float32)
        mean = torch.zeros(log.n_users).index_add_(0, user, rating) / counts
        taste.index_add_(0, user, (rating - mean[user]).unsqueeze(1) * embeddings[item])
    return consumed, taste, mean


def user_profiles(log: InteractionLog, item_embeddings: torch.Tensor) -> torch.Tensor:
    """Text profiles of every user's history in ``log``: float32 [n_users, 2 d].

    The first half is the mean encoding of the items the user rated (what they watch), the second
    the rating-centred mean ``sum_i (r_ui - mean_u) e_i`` (what they like more than their own
    average); each is L2-normalised, and users without events get zeros.
    """
    consumed, taste, _ = _profile_sums(log, item_embeddings)
    return torch.cat([F.normalize(consumed, dim=1), F.normalize(taste, dim=1)], dim=1)


class PreferenceModel(nn.Module):
    """Predicts a user's 1-5 rating of any item (see the module docstring for the formula).

    All methods are batched and run on the device of the model's parameters. Prediction methods
    run without gradients and cache the per-item table in eval mode (cleared by ``train()``,
    ``to()`` and loading).
    """

    def __init__(
        self,
        config: PreferenceConfig,
        n_users: int,
        item_embeddings: torch.Tensor,
        user_profile: torch.Tensor | None = None,
        global_mean: float = 3.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.n_users = int(n_users)
        self.n_items = int(item_embeddings.shape[0])
        item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32).detach().cpu()
        if user_profile is None or not (config.uses_text and config.use_user_profile):
            user_profile = torch.zeros(self.n_users, 0)
        user_profile = torch.as_tensor(user_profile, dtype=torch.float32).detach().cpu()
        if user_profile.shape[0] != self.n_users:
            raise ValueError(f"user_profile has {user_profile.shape[0]} rows, expected {self.n_users} users")
        text_dim, profile_dim, dim = item_embeddings.shape[1], user_profile.shape[1], config.dim
        generator = generator if generator is not None else torch_generator(config.seed)

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.register_buffer("item_text", item_embeddings.contiguous())
        self.register_buffer("user_profile", user_profile.contiguous())
        self.user_bias = nn.Parameter(torch.zeros(self.n_users))
        self.user_factor = normal(self.n_users, dim, std=0.01)
        if config.uses_ids:
            self.item_bias = nn.Parameter(torch.zeros(self.n_items))
            self.item_factor = normal(self.n_items, dim, std=0.01)
        if config.uses_text:
            self.text_bias = nn.Parameter(torch.zeros(text_dim))
            self.text_projection = normal(text_dim, dim, std=0.01)
            if profile_dim:
                self.profile_projection = normal(profile_dim, dim, std=0.01)
        self._item_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fit_info: dict[str, Any] = {}
        self.train_fingerprint = ""
        self.item_set_fingerprint = ""

    # -- the formula -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.user_bias.device

    def _user_side(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b_u [B], user_vector [B, dim])."""
        vector = self.user_factor[user]
        if hasattr(self, "profile_projection"):
            vector = vector + self.user_profile[user] @ self.profile_projection
        return self.user_bias[user], vector

    def _item_side(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(item bias [...], item_vector [..., dim]) for any shape of item indices."""
        bias = torch.zeros(items.shape, device=items.device)
        vector = torch.zeros(*items.shape, self.config.dim, device=items.device)
        if self.config.uses_ids:
            bias = bias + self.item_bias[items]
            vector = vector + self.item_factor[items]
        if self.config.uses_text:
            text = self.item_text[items]
            bias = bias + text @ self.text_bias
            vector = vector + text @ self.text_projection
        return bias, vector

    def _item_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Item side for the whole catalogue, cached while the model is in eval mode."""
        if self.training or self._item_cache is None:
            table = self._item_side(torch.arange(self.n_items, device=self.device))
            if self.training:
                return table
            self._item_cache = (table[0].detach(), table[1].detach())
        return self._item_cache

    def raw_scores(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Unclamped predicted ratings [B, k] (differentiable; used for fitting and ranking)."""
        user_bias, user_vector = self._user_side(user)
        if self.training:
            item_bias, item_vector = self._item_side(items)
        else:
            table_bias, table_vector = self._item_table()
            item_bias, item_vector = table_bias[items], table_vector[items]
        dot = (item_vector * user_vector.unsqueeze(1)).sum(-1)
        return self.global_mean + user_bias.unsqueeze(1) + item_bias + dot

    def raw_scores_all(self, user: torch.Tensor) -> torch.Tensor:
        """Unclamped predicted ratings of every item [B, n_items]."""
        user_bias, user_vector = self._user_side(user)
        item_bias, item_vector = self._item_table()
        return (
            self.global_mean + user_bias.unsqueeze(1) + item_bias.unsqueeze(0) + user_vector @ item_vector.T
        )

    def train(self, mode: bool = True) -> PreferenceModel:
        self._item_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), ...: the cache lives on the old device
        self._item_cache = None
        return super()._apply(fn, *args, **kwargs)

    # -- public prediction API -----------------------------------------------------------------
    def _check(
        self, user: torch.Tensor, items: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        user = torch.as_tensor(user, device=self.device)
        if user.dtype != torch.int64 or user.dim() != 1:
            raise ValueError(f"user must be an int64 tensor [B], got {user.dtype} {tuple(user.shape)}")
        if len(user) and not bool(((user >= 0) & (user < self.n_users)).all()):
            raise IndexError(f"user indices must lie in [0, {self.n_users})")
        if items is None:
            return user, None
        items = torch.as_tensor(items, device=self.device)
        if items.dtype != torch.int64 or items.dim() != 2 or items.shape[0] != user.shape[0]:
            raise ValueError(
                f"items must be an int64 tensor [B={len(user)}, k], got {items.dtype} {tuple(items.shape)}"
            )
        if items.numel() and not bool(((items >= 0) & (items < self.n_items)).all()):
            raise IndexError(f"item indices must lie in [0, {self.n_items})")
        return user, items

    @torch.no_grad()
    def predict(self, user: torch.Tensor, items: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Predicted ratings float32 [B, k] in [1, 5] for users [B] and items [B, k].

        ``check=False`` skips the index checks (each one a device sync), for callers that validated
        the indices already, such as the simulator's step."""
        if check:
            user, items = self._check(user, items)
        return self.raw_scores(user, items).clamp(MIN_RATING, MAX_RATING)

    @torch.no_grad()
    def predict_all(self, user: torch.Tensor) -> torch.Tensor:
        """Predicted ratings float32 [B, n_items] in [1, 5] for users [B]."""
        user, _ = self._check(user)
        return self.raw_scores_all(user).clamp(MIN_RATING, MAX_RATING)

    @torch.no_grad()
    def like_probability(self, user: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """P(rating >= 4) [B, k] (or [B, n_items] when ``items`` is None)."""
        user, items = self._check(user, items)
        raw = self.raw_scores_all(user) if items is None else self.raw_scores(user, items)
        return torch.sigmoid((raw - LIKE_MIDPOINT) / self.config.temperature)

    # -- data compatibility and persistence ------------------------------------------------------
    def check_compatible(self, log: InteractionLog) -> None:
        """Raise :class:`CheckpointError` unless ``log`` has this model's item catalogue and user count."""
        if log.item_set_fingerprint() != self.item_set_fingerprint:
            raise CheckpointError(
                f"preference model was fitted on item set {self.item_set_fingerprint} "
                f"({self.n_items} items) but the log '{log.name}' has item set "
                f"{log.item_set_fingerprint()} ({log.n_items} items); refit the model on this data"
            )
        if log.n_users != self.n_users:
            raise CheckpointError(
                f"preference model was fitted on {self.n_users} users but the log '{log.name}' has "
                f"{log.n_users}; refit the model on this data"
            )

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``preference.json`` (config, shapes, data fingerprints)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        meta = {
            "format_version": FORMAT_VERSION,
            "config": to_dict(self.config),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "text_dim": int(self.item_text.shape[1]),
            "profile_dim": int(self.user_profile.shape[1]),
            "train_fingerprint": self.train_fingerprint,
            "item_set_fingerprint": self.item_set_fingerprint,
            "fit_info": self.fit_info,
        }
        atomic_write_json(directory / META_FILE, meta)  # written last: its presence marks a complete save
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        map_location: str | torch.device = "cpu",
        log: InteractionLog | None = None,
    ) -> PreferenceModel:
        """Restore a model written by :meth:`save`; with ``log``, also check it matches that data."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise CheckpointError(
                f"{directory}: not a saved preference model (needs {META_FILE} and {WEIGHTS_FILE})"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            config = from_dict(PreferenceConfig, meta["config"])
            state = load_file(str(weights_path))
            model = cls(
                config,
                n_users=meta["n_users"],
                item_embeddings=torch.zeros(meta["n_items"], meta["text_dim"]),
                user_profile=torch.zeros(meta["n_users"], meta["profile_dim"]),
            )
            model.load_state_dict(state, strict=True)
        except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as error:
            raise CheckpointError(f"{directory}: cannot load preference model: {error}") from error
        model.train_fingerprint = meta.get("train_fingerprint", "")
        model.item_set_fingerprint = meta.get("item_set_fingerprint", "")
        model.fit_info = meta.get("fit_info", {})
        model = model.to(map_location).eval()
        if log is not None:
            model.check_compatible(log)
        return model


# -- fitting ----------------------------------------------------------------------------------


def _rating_tensors(
    log: InteractionLog, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(log.user, dtype=torch.int64, device=device),
        torch.as_tensor(log.item, dtype=torch.int64, device=device),
        torch.as_tensor(log.rating, dtype=torch.float32, device=device),
    )


@torch.no_grad()
def evaluate_rmse(model: PreferenceModel, log: InteractionLog, batch_size: int = 65536) -> float:
    """RMSE of the model's clamped predictions on every rating of ``log``."""
    was_training = model.training
    model.eval()
    user, item, rating = _rating_tensors(log, model.device)
    squared = 0.0
    for start in range(0, len(user), batch_size):
        end = start + batch_size
        prediction = model.predict(user[start:end], item[start:end].unsqueeze(1)).squeeze(1)
        squared += float(((prediction - rating[start:end]) ** 2).sum())
    model.train(was_training)
    return math.sqrt(squared / max(len(user), 1))


def _require_ratings(log: InteractionLog, role: str) -> None:
    if log.n_events == 0:
        raise DataFormatError(
            log.source or log.name, f"the {role} log has no events to fit the preference model on"
        )
    if not log.has_ratings:
        raise DataFormatError(
            log.source or log.name,
            f"the {role} log has no explicit ratings (implicit feedback); the preference model regresses "
            "1-5 ratings and cannot be fitted on it. The logged simulator's learned choice simulates such logs "
            "without it (choice.model: learned, the default of the 'logged' simulator: reward = click)",
        )


def fit_preference_model(
    train: InteractionLog,
    item_embeddings: torch.Tensor,
    config: PreferenceConfig | None = None,
    valid: InteractionLog | None = None,
    user_text_embeddings: torch.Tensor | None = None,
    judgements: Judgements | None = None,
    progress: bool = True,
) -> PreferenceModel:
    """Fit a :class:`PreferenceModel` on the ratings of ``train`` with mini-batch Adam on MSE.

    ``item_embeddings`` [n_items, d] are the frozen LLM item encodings (``recarena.llm.encode_items``);
    ``user_text_embeddings`` [n_users, d'] optionally add the LLM encoding of each user's written
    profile to the user's text profile. With ``valid``, training stops early on validation RMSE and
    the best epoch's parameters are kept. With ``judgements`` and ``config.distill_weight > 0``, a
    BCE term pulls the model's like probability towards the LLM judge's. Deterministic for a given
    ``config.seed`` on CPU. Raises ``DataFormatError`` for logs without ratings.
    """
    config = config or PreferenceConfig()
    default_torch_threads()
    _require_ratings(train, "training")
    if valid is not None:
        _require_ratings(valid, "validation")
        if valid.item_set_fingerprint() != train.item_set_fingerprint():
            raise ValueError("train and valid logs must share one item index space")
    item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32)
    if item_embeddings.dim() != 2 or item_embeddings.shape[0] != train.n_items:
        raise ValueError(
            f"item_embeddings must be [n_items={train.n_items}, d], got {tuple(item_embeddings.shape)}"
        )
    if judgements is not None and config.distill_weight > 0 and len(judgements.user) == 0:
        raise ValueError("distillation is on (distill_weight > 0) but no judgements were given")
    device = resolve_device(config.device)
    generator = torch_generator(config.seed)
    started = time.perf_counter()

    profile = user_profiles(train, item_embeddings)
    if user_text_embeddings is not None:
        user_text_embeddings = torch.as_tensor(user_text_embeddings, dtype=torch.float32).cpu()
        if user_text_embeddings.shape[0] != train.n_users:
            raise ValueError(
                f"user_text_embeddings must have {train.n_users} rows, got {user_text_embeddings.shape[0]}"
            )
        profile = torch.cat([profile, F.normalize(user_text_embeddings, dim=1)], dim=1)
    model = PreferenceModel(
        config, train.n_users, item_embeddings, profile, float(np.mean(train.rating)), generator=generator
    ).to(device)
    model.train_fingerprint = train.fingerprint()
    model.item_set_fingerprint = train.item_set_fingerprint()

    user, item, rating = _rating_tensors(train, device)
    distill = judgements is not None and config.distill_weight > 0
    if distill:
        judged_user = judgements.user.to(device)
        judged_item = judgements.item.to(device)
        judged_probability = judgements.probability.to(device)
    dense = [p for name, p in model.named_parameters() if name.startswith(("text_", "profile_"))]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n, batch_size = len(user), config.batch_size
    history: list[dict[str, float]] = []
    stopping = EarlyStopping(config.patience)
    epochs = tqdm(
        range(1, config.epochs + 1), desc=f"fit {config.variant}", disable=not progress, leave=False
    )
    for epoch in epochs:
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        squared_error = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            u, i, r = user[batch], item[batch], rating[batch]
            prediction = model.raw_scores(u, i.unsqueeze(1)).squeeze(1)
            mse = F.mse_loss(prediction, r)
            penalty = model.user_bias[u].square() + model.user_factor[u].square().sum(1)
            if config.uses_ids:
                penalty = penalty + model.item_bias[i].square() + model.item_factor[i].square().sum(1)
            loss = mse + config.weight_decay * penalty.mean()
            if dense:
                loss = loss + config.text_weight_decay * sum(p.square().sum() for p in dense)
            if distill:
                pick = torch.randint(
                    len(judged_user), (min(len(judged_user), max(batch_size // 4, 1)),), generator=generator
                )
                pick = pick.to(device)
                logits = (
                    model.raw_scores(judged_user[pick], judged_item[pick].unsqueeze(1)).squeeze(1)
                    - LIKE_MIDPOINT
                )
                bce = F.binary_cross_entropy_with_logits(
                    logits / config.temperature, judged_probability[pick]
                )
                loss = loss + config.distill_weight * bce
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            squared_error += float(mse.detach()) * len(batch)
        record = {"epoch": epoch, "train_rmse": math.sqrt(squared_error / n)}
        if valid is not None:
            record["valid_rmse"] = evaluate_rmse(model, valid)
            stop = stopping.update(record["valid_rmse"], epoch, model)
        history.append(record)
        epochs.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if valid is not None and stop:
            break
    stopping.restore_best(model)
    model.eval()
    model.fit_info = {
        "epochs_run": len(history),
        "best_epoch": stopping.best_epoch or len(history),
        "best_valid_rmse": stopping.best if valid is not None else None,
        "seconds": round(time.perf_counter() - started, 2),
        "n_train_ratings": int(n),
        "distilled_pairs": int(len(judgements.user)) if distill else 0,
        "history": history,
    }
    return model


__all__ = [
    "Judgements",
    "PreferenceConfig",
    "PreferenceModel",
    "evaluate_rmse",
    "fit_preference_model",
    "preference_config",
    "user_profiles",
]
