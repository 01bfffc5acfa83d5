"""Logged users: simulated users that start from, and answer from, real logged histories ("logged").

A session starts from a real user's history prefix in the training log (``sampler`` options). When
the recommended item is one that user really rated *later* in the log (after the prefix), the
response is the logged rating ("logged-first" mode); elsewhere - and everywhere in "model-only"
mode - the fitted LLM-derived preference model (:mod:`recarena.simulators.preference`) answers. Boredom
applies to both. The share of logged vs modelled responses is counted
(:meth:`LoggedUserSimulator.statistics`) and each step reports it per user (``StepOutcome.from_log``).

**Choice.** ``choice.model: learned`` (the default of "logged") picks from a slate with the learned
choice of :mod:`recarena.simulators.choice`: a multinomial logit over the next-item model's
``log P(next = i | history)`` (:mod:`recarena.simulators.sequence`, fitted on the training log's next
events), the preference model's predicted rating and the boredom state, with a no-choice option,
whose weights are fitted by maximum likelihood on validation events when the simulator is built.
``choice.model: rating`` is the rating-only logit of earlier versions (``response / temperature``);
the simulator registered as "logged-rating" defaults to it (the ``-v0`` env ids).
On logs without ratings (``choice.rating: auto``; or ``off``) there is no preference model: the user
is the next-item model (and boredom) alone, every response is ``MAX_RATING`` and so the reward is
the click.

**Answers and likes (env ``-v2``).** Where the log does not answer, the user's rating is a fixed draw
per (user, item) from the preference model's calibrated ordered-probit distribution
(``answers: calibrated``; :mod:`recarena.simulators.answers`), with ``(a, b, sd)`` fitted by maximum
likelihood on the validation events' real ratings (those the choice utility is fitted on); the
*expected* rating in the choice utility stays the mean prediction. A chosen item is liked when its
response rounds to 4 or more (``like_rounding``: response >= 3.5). The ``-v1`` users (simulator
"logged-v1") answer with the mean prediction and like at a response >= 4.

**Leaving (env ``-v3``).** After each chosen item the user ends the session with the probability the
training log's sessions show at that position and like (``leave.model: sessions``;
:mod:`recarena.simulators.sessions`, fitted when the simulator is built and recorded in
``choice_fit["leave"]``); a no-click costs patience, and the user leaves when it runs out. The
``-v2`` users (simulator "logged-v2") leave by the patience rules alone.

The (user, item) -> (logged rating, position) lookup is a sorted int64 key array
``user * n_items + item`` searched with ``torch.searchsorted``, on the simulator's device. Where a
user rated an item twice, the earliest event is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from recarena.core.config import config_dataclass, from_dict, to_dict
from recarena.core.errors import ConfigError
from recarena.core.seeding import torch_generator
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.data.spec import DataSpec, data_spec
from recarena.simulators.answers import (
    AnswerCalibration,
    answer_noise,
    answer_probabilities,
    calibrated_answers,
    fit_answer_calibration,
)
from recarena.simulators.base import UserState
from recarena.simulators.behaviour import (
    LIKE_THRESHOLD,
    MAX_RATING,
    BehaviourConfig,
    ChoiceConfig,
    LeaveConfig,
    UserSampler,
    item_topics_from_genres,
    kmeans_topics,
)
from recarena.simulators.choice import LearnedChoice, UtilityFitConfig, UtilityWeights, choice_slates, fit_mnl
from recarena.simulators.composed import ComposedSimulator
from recarena.simulators.preference import (
    LIKE_MIDPOINT,
    PreferenceConfig,
    PreferenceModel,
    fit_preference_model,
)
from recarena.simulators.registry import register
from recarena.simulators.sequence import (
    NextItemConfig,
    NextItemModel,
    fit_next_item_model,
    hold_out_last,
    validation_events,
)
from recarena.simulators.sessions import fit_session_hazard


@config_dataclass
class LoggedChoiceConfig(ChoiceConfig):
    """How a logged user chooses from a slate (``temperature``/``no_choice_rating``: rating model only)."""

    model: Literal["learned", "rating"] = "learned"
    """``learned``: the fitted multinomial logit over next-item probability, predicted rating and
    boredom (:mod:`recarena.simulators.choice`); ``rating``: ``response / temperature`` (env ``-v0``)."""
    rating: Literal["auto", "on", "off"] = "auto"
    """Learned model: whether the preference model's rating enters the utility (and answers): ``auto``
    = when the log has ratings. ``off`` (or a log without ratings): the user is the next-item model
    alone, every response is the top of the scale, and the reward is the click."""
    sequence: NextItemConfig = field(default_factory=NextItemConfig)
    """The next-item network and its fitting (``recarena.simulators.sequence.NextItemConfig``)."""
    fit: UtilityFitConfig = field(default_factory=UtilityFitConfig)
    """How the likelihood of the utility weights is constructed from validation events."""
    response_boredom: Literal["fitted", "config"] = "fitted"
    """Learned model: the boredom penalty of the response (rating points per unit of fatigue).
    ``fitted``: the least-squares slope of (logged rating - predicted rating) on the item's fatigue
    at the validation events, as a penalty (clipped at 0); ``config``: ``interest.boredom_penalty``."""


@config_dataclass
class RatingChoiceConfig(LoggedChoiceConfig):
    """:class:`LoggedChoiceConfig` whose default model is the rating-only logit."""

    model: Literal["learned", "rating"] = "rating"


@config_dataclass
class SessionLeaveConfig(LeaveConfig):
    """:class:`LeaveConfig` whose default model is the hazard of the logged sessions (env ``-v3``)."""

    model: Literal["patience", "sessions"] = "sessions"


@config_dataclass
class LoggedConfig(BehaviourConfig):
    """Options of the logged-user simulator (plus the shared behaviour options)."""

    choice: LoggedChoiceConfig = field(default_factory=LoggedChoiceConfig)
    leave: SessionLeaveConfig = field(default_factory=SessionLeaveConfig)
    choice_path: str | None = None
    """Directory of a saved next-item model (``NextItemModel.save``); None fits one on the training
    log (``choice.sequence``) when ``choice.model`` is ``learned``."""

    mode: Literal["logged-first", "model-only"] = "logged-first"
    """Answer from the log where the user really rated the item later, or always from the model."""
    preference_path: str | None = None
    """Directory of a saved PreferenceModel; None fits one on the training log (``preference``)."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """How to fit the preference model when no ``preference_path`` (or model object) is given."""
    encoder: dict[str, Any] = field(default_factory=dict)
    """``recarena.llm.EncoderConfig`` options for the item encodings when none are given (default MiniLM)."""
    cache_dir: str | None = None
    """Embedding cache directory (default ``$RECARENA_CACHE``)."""
    rating_table: Literal["auto", "always", "never"] = "auto"
    """Precompute the model's ratings of every (user, item) into a dense table, so a step is a
    gather: the model is frozen and depends only on (user, item), so this is exact. "auto" does
    it when the table has at most ``RATING_TABLE_LIMIT`` entries (ML-1M: 22.4M, 90 MB)."""
    answers: Literal["calibrated", "mean"] = "calibrated"
    """How a user rates an item the log does not answer. ``calibrated`` (env ``-v2``): a fixed draw per
    (user, item) from the preference model's calibrated ordered probit over 1..5, ``mu = a * predicted
    + b`` with spread ``sd`` fitted on the validation events' real ratings
    (:mod:`recarena.simulators.answers`); ``mean`` (``-v1``): the model's mean prediction."""
    answer_seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    """Fixes every (user, item) draw of the calibrated answers: the population's opinions. The env seed
    does not change them, so a policy's return is comparable across episodes and seeds."""
    like_rounding: bool = True
    """``True`` (``-v2``): a chosen item is liked when its response rounds to 4 or more (>= 3.5);
    ``False`` (``-v1``): when it is >= 4 (so a logged 4 minus any boredom is not liked)."""


@config_dataclass
class V2LoggedConfig(LoggedConfig):
    """Options of "logged-v2": the logged simulator whose users leave by the patience rules (env ``-v2``)."""

    leave: LeaveConfig = field(default_factory=LeaveConfig)


@config_dataclass
class V1LoggedConfig(V2LoggedConfig):
    """Options of "logged-v1": the logged simulator with the ``-v1`` answers (mean prediction) and likes (>= 4)."""

    answers: Literal["calibrated", "mean"] = "mean"
    like_rounding: bool = False


@config_dataclass
class RatingLoggedConfig(V1LoggedConfig):
    """Options of "logged-rating": the logged simulator whose choice defaults to the rating model
    (and, as the ``-v0`` ids it serves, the mean-prediction answers and likes at >= 4)."""

    choice: RatingChoiceConfig = field(default_factory=RatingChoiceConfig)


RATING_TABLE_LIMIT = 64_000_000

FitEvents = tuple[InteractionLog, "InteractionLog | None", np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(log the models see, held-out log or None, users, prefix lengths, items, ratings) of the events the
choice utility and the answer calibration are fitted on (:meth:`LoggedUserSimulator._fit_events`)."""


class LogLookup:
    """(user, item) -> (found, position in the user's sequence, logged rating), batched on device."""

    def __init__(self, log: InteractionLog, device: torch.device) -> None:
        self.n_items = log.n_items
        position = np.arange(log.n_events, dtype=np.int64) - log.user_offsets[log.user]
        keys = log.user.astype(np.int64) * log.n_items + log.item.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        rating = np.nan_to_num(log.rating.astype(np.float32), nan=MAX_RATING)
        self.keys = torch.as_tensor(keys[order], device=device)
        self.position = torch.as_tensor(position[order], device=device)
        self.rating = torch.as_tensor(rating[order], device=device)

    def __call__(self, user: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.keys.numel() == 0:
            none = torch.zeros_like(items, dtype=torch.bool)
            return none, torch.zeros_like(items), torch.zeros_like(items, dtype=torch.float32)
        query = user.unsqueeze(1) * self.n_items + items
        index = torch.searchsorted(self.keys, query).clamp(max=self.keys.numel() - 1)
        found = torch.take(self.keys, index) == query
        return found, torch.take(self.position, index), torch.take(self.rating, index)


def _train_log(data: Any) -> InteractionLog:
    if isinstance(data, LogSplit):
        return data.train
    if isinstance(data, InteractionLog):
        return data
    if is_data_spec(data):
        return data_spec(data).load_split().train
    raise ConfigError(
        "the logged simulator needs data: an InteractionLog (training log), a LogSplit, or a data spec "
        f"(a bundled name, a path, a spec file or a mapping: recarena.data.data_spec); got {type(data).__name__}"
    )


def is_data_spec(data: Any) -> bool:
    """Whether ``data`` names logs to load (``recarena.data.data_spec``) rather than holding them."""
    return isinstance(data, (str, os.PathLike, Mapping, DataSpec))


@register("logged")
class LoggedUserSimulator(ComposedSimulator):
    """Users who start from real history prefixes and answer from the log, else from the model.

    ``data``: a ``LogSplit`` (sessions start from its training log; the learned choice fits its
    utility weights on the first validation event of each user), an ``InteractionLog`` (the
    training log; the choice fit holds out each user's last event), or a data spec (a bundled name,
    a path, a spec file or a mapping: ``recarena.data.data_spec``; the split its ``split`` names, with the
    preference and next-item models cached on disk:
    :mod:`recarena.simulators.preference_store`). ``components``: ``preference_model``,
    ``item_embeddings``, ``choice_model`` (a fitted ``NextItemModel``).
    """

    config_class = LoggedConfig
    version = "logged-v3"  # the session-hazard leave model's defaults (env -v3); runs pin it

    def __init__(
        self,
        config: LoggedConfig | None = None,
        data: Any = None,
        device: torch.device | str = "cpu",
        preference_model: Any = None,
        item_embeddings: torch.Tensor | None = None,
        choice_model: NextItemModel | None = None,
    ) -> None:
        config = config or self.config_class()
        if is_data_spec(data) and preference_model is None:
            # A named source: its split (data.split), with the fitted models cached on disk.
            from recarena.simulators.preference_store import logged_simulator_arguments

            data, options = logged_simulator_arguments(data, to_dict(config))
            config = from_dict(type(config), options)
        log = _train_log(data)
        valid = data.valid if isinstance(data, LogSplit) and data.valid.n_events else None
        device = torch.device(device)
        if log.n_events == 0:
            raise ConfigError(f"the log '{log.name}' has no events to start sessions from")
        learned = config.choice.model == "learned"
        self.uses_ratings = not learned or config.choice.rating == "on" or (config.choice.rating == "auto" and log.has_ratings)
        if item_embeddings is None and isinstance(preference_model, PreferenceModel) and preference_model.item_text.shape[1]:
            item_embeddings = preference_model.item_text
        if item_embeddings is None:
            item_embeddings = self._encode_items(log, config)
        item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32)
        if item_embeddings.shape[0] != log.n_items:
            raise ConfigError(f"item_embeddings has {item_embeddings.shape[0]} rows, the log has {log.n_items} items")
        if not self.uses_ratings:
            preference_model = None  # implicit feedback: the user is the choice model alone
        elif preference_model is None:
            if config.preference_path is not None:
                preference_model = PreferenceModel.load(config.preference_path, map_location=device, log=log)
            else:
                preference_model = fit_preference_model(log, item_embeddings, config.preference)
        if hasattr(preference_model, "to"):
            preference_model = preference_model.to(device)
        if hasattr(preference_model, "eval"):
            preference_model.eval()
        self.preference_model = preference_model

        sampler = UserSampler(
            config.sampler,
            torch.as_tensor(log.user_offsets),
            torch.as_tensor(log.item),
            torch.as_tensor(log.rating),
            log.n_items,
            device,
        )
        topics = item_topics_from_genres(log.items.genre_matrix())
        if config.interest.topics == "kmeans" or not bool(topics.any()):
            topics = kmeans_topics(item_embeddings, config.interest.n_clusters, seed=config.preference.seed)
        hazard = fit_session_hazard(log, config.leave.session_gap) if config.leave.model == "sessions" else None
        super().__init__(config, sampler=sampler, item_topics=topics, item_embeddings=item_embeddings, device=device,
                         session_hazard=hazard)
        self.penalise_response = self.uses_ratings
        self.log = log
        self.data_fingerprint = log.fingerprint()
        self.lookup = LogLookup(log, self.device)
        self.rating_table = self._rating_table(log.n_users) if self._wants_table(log.n_users) else None
        self.like_threshold = LIKE_MIDPOINT if config.like_rounding else LIKE_THRESHOLD
        self.answer_seed = int(config.answer_seed)
        self.calibration: AnswerCalibration | None = None
        self.answer_table: torch.Tensor | None = None
        self.choice_fit: dict[str, Any] | None = None
        calibrated = self.uses_ratings and config.answers == "calibrated"
        events = self._fit_events(log, valid) if learned or calibrated else None  # selected once for both fits
        if learned:
            self._build_learned_choice(config, valid, events, item_embeddings, choice_model)
        if calibrated:
            self._calibrate_answers(events)
        if hazard is not None:
            self.choice_fit = {**(self.choice_fit or {}), "leave": hazard.info}

    # ------------------------------------------------------------------ calibrated answers

    @staticmethod
    def _fit_events(log: InteractionLog, valid: InteractionLog | None) -> FitEvents:
        """(log the models see, held-out log, users, prefix lengths, items, ratings) of the events the
        choice utility and the answer calibration are fitted on: each user's first validation event
        (never a test event), or, without a validation part, each user's last training event."""
        if valid is not None:
            users, items = validation_events(log, valid)
            prefix = log.sequence_lengths()[users]
            first = valid.user_offsets[:-1][valid.sequence_lengths() > 0]
            return log, None, users, prefix, items, valid.rating[first]
        fit_log, held = hold_out_last(log)
        users, items = held.user.astype(np.int64), held.item.astype(np.int64)
        return fit_log, held, users, log.sequence_lengths()[users] - 1, items, held.rating

    @torch.no_grad()
    def _calibrate_answers(self, events: FitEvents) -> None:
        """Fit ``(a, b, sd)`` of the calibrated answers on the fit events' real ratings, record them in
        :attr:`choice_fit` (``answers``), and fold the draws into :attr:`answer_table` where the dense
        rating table exists."""
        _, held, users, _, items, ratings = events
        user = torch.as_tensor(users, dtype=torch.int64, device=self.device)
        item = torch.as_tensor(items, dtype=torch.int64, device=self.device).unsqueeze(1)
        predicted = self.predicted_ratings(user, item).squeeze(1).cpu().numpy()
        self.calibration = fit_answer_calibration(predicted, ratings)
        self.calibration.info["events"] = "validation" if held is None else "last training event (no validation part)"
        self.calibration.info["seed"] = self.answer_seed
        drawn = calibrated_answers(torch.as_tensor(predicted), answer_noise(self.answer_seed, user.cpu(), item.squeeze(1).cpu()), self.calibration)
        rated = np.isfinite(ratings)
        self.calibration.info["drawn_like_rate"] = float((drawn.numpy()[rated] >= LIKE_THRESHOLD).mean()) if rated.any() else None
        if self.choice_fit is None:
            self.choice_fit = {}
        self.choice_fit["answers"] = self.calibration.to_dict()
        self.reseed_answers(self.answer_seed)

    @torch.no_grad()
    def reseed_answers(self, seed: int, chunk: int = 1024) -> None:
        """Draw every calibrated answer again with ``seed`` (a new population's opinions); the answer
        table, if any, is rewritten in place (views of it stay valid)."""
        if self.calibration is None:
            raise ConfigError("reseed_answers needs calibrated answers (answers: calibrated, on a log with ratings)")
        self.answer_seed = int(seed)
        if self.rating_table is None:
            return
        if self.answer_table is None:
            self.answer_table = torch.empty(self.rating_table.shape, dtype=torch.float32, device=self.device)
        items = torch.arange(self.n_items, device=self.device).unsqueeze(0)
        n_users = self.rating_table.shape[0]
        for start in range(0, n_users, chunk):
            stop = min(start + chunk, n_users)
            noise = answer_noise(self.answer_seed, torch.arange(start, stop, device=self.device).unsqueeze(1), items)
            self.answer_table[start:stop] = calibrated_answers(self.rating_table[start:stop], noise, self.calibration)

    def model_answers(self, user: torch.Tensor, slate: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Float32 [B, k]: the users' own answers to the slate items where the log does not answer:
        the calibrated draw, or the mean ``predicted`` (``answers: mean``)."""
        if self.calibration is None:
            return predicted
        if self.answer_table is not None:
            return torch.take(self.answer_table, user.unsqueeze(1) * self.n_items + slate)
        noise = answer_noise(self.answer_seed, user.unsqueeze(1), slate)
        return calibrated_answers(predicted, noise, self.calibration)

    def answer_distribution(
        self, state: UserState, items: torch.Tensor, predicted: torch.Tensor
    ) -> torch.Tensor | None:
        if self.calibration is None:
            return None
        return answer_probabilities(predicted, self.calibration)

    # ------------------------------------------------------------------ the learned choice

    def _build_learned_choice(
        self,
        config: LoggedConfig,
        valid: InteractionLog | None,
        events: FitEvents,
        item_embeddings: torch.Tensor,
        model: NextItemModel | None,
    ) -> None:
        """Load or fit the next-item model, then fit the utility weights on the fit ``events``
        (:meth:`_fit_events`: without a validation part, each user's last training event is held out)."""
        fit_log, held, users, prefix, items, ratings = events
        if model is None:
            if config.choice_path is not None:
                model = NextItemModel.load(config.choice_path, map_location=self.device, log=fit_log)
            else:
                held_out = valid if valid is not None else held
                model = fit_next_item_model(fit_log, item_embeddings, config.choice.sequence, valid=held_out)
        if model.n_items != self.n_items:
            raise ConfigError(f"the choice model scores {model.n_items} items, the log has {self.n_items}")
        self.next_item_model = model.to(self.device)
        self.choice_model = LearnedChoice(self.next_item_model, UtilityWeights(), use_rating=self.uses_ratings)
        if self.uses_ratings and config.choice.response_boredom == "fitted":
            self.response_penalty = self.fit_response_penalty(users, prefix, items, ratings)
        popularity = torch.as_tensor(fit_log.item_counts(), dtype=torch.float32) + 1.0
        weights = self.fit_choice_utility(users, prefix, items, popularity, config.choice.fit)
        self.choice_model.weights = weights
        self.choice_fit = weights.to_dict()
        self.choice_fit["response_penalty"] = self.response_penalty

    @torch.no_grad()
    def fit_response_penalty(self, users: np.ndarray, prefix: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> float:
        """Boredom penalty of the response fitted on validation events: minus the least-squares slope
        of (logged rating - predicted rating) on the item's fatigue, clipped at 0."""
        keep = np.isfinite(ratings)
        if keep.sum() < 2:
            return float(self.config.interest.boredom_penalty)
        u = torch.as_tensor(users[keep], dtype=torch.int64, device=self.device)
        state = self.start_from(u, torch_generator(0, self.device), prefix=torch.as_tensor(prefix[keep]))
        item = torch.as_tensor(items[keep], dtype=torch.int64, device=self.device).unsqueeze(1)
        fatigue = self.interest_model.fatigue(state.interest, item).squeeze(1).double().cpu()
        residual = torch.as_tensor(ratings[keep], dtype=torch.float64) - self.predicted_ratings(state.user, item).squeeze(1).double().cpu()
        centred = fatigue - fatigue.mean()
        variance = float((centred * centred).sum())
        if variance <= 0:
            return float(self.config.interest.boredom_penalty)
        slope = float((centred * (residual - residual.mean())).sum()) / variance
        return max(0.0, -slope)

    @torch.no_grad()
    def choice_features(
        self, users: np.ndarray, prefix: np.ndarray, real: np.ndarray, popularity: torch.Tensor, fit: UtilityFitConfig,
        chunk: int = 1024,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Features [N * S, k, 3] and labels [N * S] of the constructed slates (``recarena.simulators.choice``)
        for users at the first ``prefix`` events of their sequences whose next item was ``real``;
        events whose real item is already consumed (and so cannot be chosen) are skipped."""
        generator = torch_generator(fit.seed, self.device)
        start_generator = torch_generator(0, self.device)
        features, labels, widths, used = [], [], [], 0
        choice = self.choice_model
        for begin in range(0, len(users), chunk):
            u = torch.as_tensor(users[begin : begin + chunk], dtype=torch.int64, device=self.device)
            p = torch.as_tensor(prefix[begin : begin + chunk], dtype=torch.int64, device=self.device)
            r = torch.as_tensor(real[begin : begin + chunk], dtype=torch.int64, device=self.device)
            state = self.start_from(u, start_generator, prefix=p)
            keep = ~state.consumed.gather(1, r.unsqueeze(1)).squeeze(1)
            if not bool(keep.all()):
                rows = torch.nonzero(keep).squeeze(1)
                state = _select_rows(state, rows)
                r = r.index_select(0, rows)
            if r.numel() == 0:
                continue
            slates, chosen, row = choice_slates(r, state.consumed, popularity, fit, generator)
            if row.numel() == 0:
                continue
            used += int(torch.unique(row).numel())
            log_p = choice.log_probabilities(state.choice_state, state.consumed)
            predicted = self.predicted_ratings(state.user.index_select(0, row), slates)
            fatigue = self.interest_model.fatigue(state.interest.index_select(0, row), slates)
            features.append(choice.features(log_p.index_select(0, row), slates, predicted, fatigue).cpu())
            labels.append(chosen.cpu())
            widths.append(slates.shape[1])
        if not features:
            raise ConfigError(
                "no validation event to fit the choice utility on (each user's next item after the training "
                "events is already consumed): pass a split whose validation events follow its training events, "
                "or choice.model='rating'"
            )
        width = max(f.shape[1] for f in features)  # chunks of a tiny catalogue may draw fewer items
        features = [F.pad(f, (0, 0, 0, width - f.shape[1]), value=float("nan")) for f in features]
        labels = [torch.where(c == f_k, torch.full_like(c, width), c) for c, f_k in zip(labels, widths, strict=True)]
        return torch.cat(features), torch.cat(labels), used

    def fit_choice_utility(
        self, users: np.ndarray, prefix: np.ndarray, real: np.ndarray, popularity: torch.Tensor, fit: UtilityFitConfig
    ) -> UtilityWeights:
        """Maximum-likelihood utility weights and no-choice level on the constructed slates."""
        features, chosen, used = self.choice_features(users, prefix, real, popularity, fit)
        available = torch.ones(features.shape[:2], dtype=torch.bool)
        (w_choice, w_rating, w_boredom), no_choice, info = fit_mnl(
            features, available, chosen, use=(True, self.uses_ratings, True), max_iter=fit.max_iter
        )
        info.update(n_events=used, config=to_dict(fit))
        return UtilityWeights(w_choice, w_rating, w_boredom, no_choice, info)

    def _wants_table(self, n_users: int) -> bool:
        if self.preference_model is None:
            return False
        if self.config.rating_table == "never" or not hasattr(self.preference_model, "predict_all"):
            if self.config.rating_table == "always":
                raise ConfigError("rating_table='always' needs a preference model with predict_all(user)")
            return False
        return self.config.rating_table == "always" or n_users * self.n_items <= RATING_TABLE_LIMIT

    @torch.no_grad()
    def _rating_table(self, n_users: int, chunk: int = 1024) -> torch.Tensor:
        """Float32 [n_users, n_items]: the preference model's rating of every item by every user."""
        table = torch.empty((n_users, self.n_items), dtype=torch.float32, device=self.device)
        for start in range(0, n_users, chunk):
            users = torch.arange(start, min(start + chunk, n_users), device=self.device)
            table[start : start + len(users)] = self.preference_model.predict_all(users).to(self.device, torch.float32)
        return table

    @staticmethod
    def _encode_items(log: InteractionLog, config: LoggedConfig) -> torch.Tensor:
        from recarena.llm.encoder import EncoderConfig, encode_items

        return encode_items(log.items, from_dict(EncoderConfig, config.encoder, prefix="encoder."), config.cache_dir)

    def predicted_ratings(self, user: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """The preference model's rating float [B, k] of each item (``MAX_RATING`` without a model)."""
        model = self.preference_model
        if model is None:
            return torch.full(slate.shape, MAX_RATING, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            if self.rating_table is not None:
                predicted = torch.take(self.rating_table, user.unsqueeze(1) * self.n_items + slate)
            elif isinstance(model, PreferenceModel) and not model.training:
                predicted = model.predict(user, slate, check=False)  # the caller validated the indices
            else:
                predicted = model.predict(user, slate)
        return predicted.to(device=self.device, dtype=torch.float32)

    def rate_with_prediction(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        predicted = self.predicted_ratings(state.user, slate)
        if self.config.mode == "model-only":
            return self.model_answers(state.user, slate, predicted), torch.zeros_like(slate, dtype=torch.bool), predicted
        found, position, logged = self.lookup(state.user, slate)
        from_log = found & (position >= state.prefix_length.unsqueeze(1))
        if self.preference_model is None:  # implicit feedback: every response is the top of the scale
            return predicted, from_log, predicted
        return torch.where(from_log, logged, self.model_answers(state.user, slate, predicted)), from_log, predicted

    def rate(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ratings, from_log, _ = self.rate_with_prediction(state, slate)
        return ratings, from_log


def _select_rows(state: UserState, rows: torch.Tensor) -> UserState:
    """The rows ``rows`` of a state (a new state)."""
    return UserState(**{f.name: getattr(state, f.name).index_select(0, rows) for f in fields(state)})


@register("logged-v2")
class V2LoggedUserSimulator(LoggedUserSimulator):
    """The logged simulator of the ``-v2`` env ids: users leave by the patience rules alone
    (``leave.model: patience``), not by the hazard of the logged sessions."""

    config_class = V2LoggedConfig
    version = "logged-v2"


@register("logged-v1")
class V1LoggedUserSimulator(LoggedUserSimulator):
    """The logged simulator of the ``-v1`` env ids: answers with the mean prediction where the log does
    not answer (``answers: mean``) and likes at a response >= 4 (``like_rounding: False``)."""

    config_class = V1LoggedConfig
    version = "logged-v1"


@register("logged-rating")
class RatingLoggedUserSimulator(LoggedUserSimulator):
    """The logged simulator whose choice defaults to the rating-only logit (``choice.model: rating``):
    the users of the ``-v0`` env ids, kept for comparison."""

    config_class = RatingLoggedConfig
    version = "logged-rating"
