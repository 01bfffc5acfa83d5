"""The learned slate choice: which item (if any) a simulated user picks from a slate.

A user shown a slate picks at most one item by a multinomial logit over the slate plus a
no-choice option, with utilities (:class:`LearnedChoice`)::

    u_i    = w_choice * log P(next = i | history)    # the next-item model: would they pick it
           + w_rating * (rating_i - 3)               # the preference model: would they like it
           + w_boredom * fatigue_i                   # mean fatigue over the item's topics
    u_none = no_choice

``P(next = i | history)`` comes from :mod:`recarena.simulators.sequence` (a GRU over the history
whose state the simulator keeps per user); ``rating_i`` is the preference model's predicted rating
(what the user expects, before consuming it; the response after consuming it is still the logged
rating where the log has one); ``fatigue_i`` the interest model's per-topic fatigue. A temperature
would multiply every utility: it is folded into the weights.

**Fitting (:func:`fit_utility_weights`).** The weights and the no-choice level are fitted by
maximum likelihood on *validation* events (never test events). Logs show no exposures, so the
likelihood is constructed (:func:`choice_slates`): for each validation event (the user at their
training history, the item they really picked next), ``slates_per_event`` slates of ``slate_size``
items are drawn; with probability ``include_probability`` a slate holds the real next item and
``slate_size - 1`` distractors, otherwise ``slate_size`` distractors; distractors are drawn without
replacement from the items the user has not consumed, in proportion to training popularity (with
probability ``popularity_share``) or uniformly. **Identifying assumption**: a user shown a slate
that holds the item they really picked next picks that item; shown a slate without it, they pick
nothing. Under it the label of a slate is "the real item" or "nothing", and the MNL likelihood of
the labels is maximised with L-BFGS (float64, full batch: small, fast and deterministic).
``include_probability`` sets the prior share of slates that contain what the user wanted, so it
scales the fitted no-choice level: it is part of the stated assumption (0.5: no preference).

**Re-consumption** follows the logs: when the training log has no repeated (user, item) pair
(MovieLens: nobody re-rates a film), an already consumed item has zero choice probability;
otherwise the next-item model, which saw the repeats, scores it as the data does.

**Implicit logs** (no ratings): the rating term is dropped (``use_rating = False``); the user is
the next-item model (and boredom) alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field

from recarena.core.config import config_dataclass
from recarena.simulators.sequence import NextItemModel

NEG_INF = float("-inf")
FEATURES = ("choice", "rating", "boredom")


@config_dataclass
class UtilityFitConfig:
    """How the likelihood of the utility weights is constructed from validation events."""

    slate_size: Annotated[int, Field(ge=2)] = 10
    slates_per_event: Annotated[int, Field(ge=1)] = 4
    include_probability: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """Probability that a constructed slate holds the user's real next item."""
    popularity_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Probability that a slate's distractors are drawn by training popularity (else uniformly)."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    max_iter: Annotated[int, Field(ge=1)] = 200
    """L-BFGS iterations."""


@dataclass
class UtilityWeights:
    """Fitted utility weights and the no-choice level, with how they were fitted."""

    choice: float = 1.0
    rating: float = 0.0
    boredom: float = 0.0
    no_choice: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def vector(self) -> list[float]:
        return [self.choice, self.rating, self.boredom]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mnl_log_likelihood(
    weights: torch.Tensor, no_choice: torch.Tensor, features: torch.Tensor, available: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """Mean log-likelihood of ``chosen`` (slot in [0, k], k = nothing) under the MNL with utilities
    ``features [N, k, F] @ weights`` (unavailable slots excluded) and ``no_choice`` for nothing."""
    utility = (features * weights).sum(-1).masked_fill(~available, NEG_INF)
    logits = torch.cat([utility, no_choice.expand(utility.shape[0], 1)], dim=1)
    return torch.log_softmax(logits, dim=1).gather(1, chosen.unsqueeze(1)).mean()


def fit_mnl(
    features: torch.Tensor,
    available: torch.Tensor,
    chosen: torch.Tensor,
    use: tuple[bool, ...] | None = None,
    max_iter: int = 200,
) -> tuple[list[float], float, dict[str, Any]]:
    """Maximum-likelihood MNL weights (one per feature) and no-choice utility, by full-batch L-BFGS.

    ``features`` float [N, k, F]; ``available`` bool [N, k]; ``chosen`` int64 [N] (k = nothing).
    Features with ``use[f] = False`` keep weight 0. Deterministic (float64 on the CPU).
    """
    features = features.detach().to("cpu", torch.float64)
    available = available.detach().cpu() & torch.isfinite(features).all(-1)  # e.g. a consumed item: -inf
    features = torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    chosen = chosen.detach().cpu().to(torch.int64)
    n_features = features.shape[-1]
    mask = torch.tensor(use if use is not None else (True,) * n_features, dtype=torch.float64)
    features = features * mask
    weights = torch.zeros(n_features, dtype=torch.float64, requires_grad=True)
    no_choice = torch.zeros((), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        weights[0] = 1.0
    optimizer = torch.optim.LBFGS(
        [weights, no_choice], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():  # callers may hold no_grad
            loss = -mnl_log_likelihood(weights * mask, no_choice, features, available, chosen)
            loss.backward()
        return loss

    start = float(closure().detach())
    optimizer.step(closure)
    with torch.no_grad():
        final = float(-mnl_log_likelihood(weights * mask, no_choice, features, available, chosen))
    info = {"n_slates": int(len(chosen)), "log_loss_start": start, "log_loss": final}
    return (weights * mask).detach().tolist(), float(no_choice.detach()), info


def choice_slates(
    real: torch.Tensor,
    consumed: torch.Tensor,
    popularity: torch.Tensor,
    config: UtilityFitConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constructed slates for the likelihood (see the module docstring).

    ``real`` int64 [N] (the real next items), ``consumed`` bool [N, n_items], ``popularity`` float
    [n_items] (> 0). Returns (slates int64 [M, k], chosen int64 [M], event int64 [M]): ``S`` slates
    per event (``event`` says whose), ``chosen`` 0 (the real item, placed first) or k (nothing).
    Events with no unconsumed item besides the real one are skipped; on a catalogue too small for
    ``slate_size`` distractors, ``k`` is the most every event can draw.
    """
    device = consumed.device
    allowed_events = ~consumed
    allowed_events[torch.arange(real.shape[0], device=device), real] = False
    counts = allowed_events.sum(1)
    events = torch.nonzero(counts > 0).squeeze(1)
    s = config.slates_per_event
    row_event = events.repeat_interleave(s)
    m = row_event.numel()
    include = torch.rand(m, generator=generator, device=device) < config.include_probability
    by_popularity = torch.rand(m, generator=generator, device=device) < config.popularity_share
    popularity = popularity.to(device)
    weights = torch.where(by_popularity.unsqueeze(1), popularity.unsqueeze(0), torch.ones_like(popularity).unsqueeze(0))
    weights = weights * allowed_events.index_select(0, row_event)
    k = min(config.slate_size, int(counts.index_select(0, events).min())) if m else config.slate_size
    distractors = torch.multinomial(weights, k, replacement=False, generator=generator) if m else torch.zeros(0, k, dtype=torch.int64, device=device)
    real_first = torch.cat([real.index_select(0, row_event).unsqueeze(1), distractors[:, : k - 1]], dim=1)
    slates = torch.where(include.unsqueeze(1), real_first, distractors)
    chosen = torch.where(include, torch.zeros_like(row_event), torch.full_like(row_event, k))
    return slates, chosen, row_event


class LearnedChoice:
    """The simulated user's slate choice from the learned utilities (see the module docstring).

    The per-user state is the next-item GRU's state (``UserState.choice_state``, [B, dim]): read once
    from the history at reset, advanced with the chosen item each step, so a step costs the same
    whatever the history length. The interest (fatigue) is warm-started from the history at reset
    (``warm_interest``), as it was when the weights were fitted.
    """

    warm_interest = True

    def __init__(self, model: NextItemModel, weights: UtilityWeights, use_rating: bool = True) -> None:
        self.model = model
        self.weights = weights
        self.use_rating = use_rating
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def state_size(self) -> int:
        return self.model.network.dim

    @property
    def window(self) -> int:
        return self.model.config.window

    def to(self, device: torch.device | str) -> LearnedChoice:
        self.model.to(device)
        self._table = None
        return self

    def table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's item vectors and biases, computed once (the model is frozen)."""
        if self._table is None or self._table[0].device != self.model.device:
            with torch.no_grad():
                self.model.network.eval()
                self._table = tuple(t.detach() for t in self.model.network.item_table())  # type: ignore[assignment]
        return self._table  # type: ignore[return-value]

    @torch.no_grad()
    def initial_state(self, history: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return self.model.network.encode(history, responses, self.table()[0])

    @torch.no_grad()
    def advance(self, choice_state: torch.Tensor, item: torch.Tensor, response: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
        return self.model.network.advance(choice_state, item, response, clicked, self.table()[0])

    @torch.no_grad()
    def log_probabilities(self, choice_state: torch.Tensor, consumed: torch.Tensor) -> torch.Tensor:
        """log P(next = i | state) [B, n_items] (consumed items -inf where the logs have no repeats)."""
        logits = self.model.network.logits(choice_state, self.table())
        if self.model.exclude_consumed:
            logits = logits.masked_fill(consumed, NEG_INF)
        return torch.log_softmax(logits, dim=1)

    @torch.no_grad()
    def normaliser(self, choice_state: torch.Tensor, consumed: torch.Tensor) -> torch.Tensor:
        """Float32 [B, 2]: (shift, log_sum) of the catalogue's logits over the items each user may still
        choose, so that ``log P(next = i | state) = (logit_i - shift) - log_sum`` (shift: the largest
        allowed logit; both 0 when none is allowed). It changes only with the state or the consumed
        mask (a click or a reset): a caller that keeps it per user scores a slate with k logits
        instead of the whole catalogue (``utilities(..., normaliser=)``)."""
        logits = self.model.network.logits(choice_state, self.table())
        if self.model.exclude_consumed:
            logits = logits.masked_fill(consumed, NEG_INF)
        shift = logits.max(dim=1).values
        none = torch.isneginf(shift)
        shift = shift.masked_fill(none, 0.0)
        log_sum = (logits - shift.unsqueeze(1)).exp_().sum(dim=1).log_().masked_fill_(none, 0.0)
        return torch.stack([shift, log_sum], dim=1)

    def features(
        self, log_p: torch.Tensor, slate: torch.Tensor, predicted: torch.Tensor, fatigue: torch.Tensor
    ) -> torch.Tensor:
        """Utility features [B, k, 3] (choice, rating, boredom) of the slate items."""
        rating = (predicted - 3.0) if self.use_rating else torch.zeros_like(predicted)
        return torch.stack([log_p.gather(1, slate), rating, fatigue], dim=-1)

    @torch.no_grad()
    def utilities(
        self,
        choice_state: torch.Tensor,
        consumed: torch.Tensor,
        slate: torch.Tensor,
        predicted: torch.Tensor,
        fatigue: torch.Tensor,
        response: torch.Tensor | None = None,
        normaliser: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(utility [B, k] of each slate item, no-choice utility [B, 1]); ``response`` is unused.

        With ``normaliser`` (:meth:`normaliser` of the current state and consumed mask) only the
        slate's k logits are computed; without it the whole catalogue's log-probabilities are. The
        two agree to float32 rounding."""
        if normaliser is None:
            log_p = self.log_probabilities(choice_state, consumed).gather(1, slate)
        else:  # a consumed slate item gets a finite log_p here: it is set to -inf below, as before
            logits = self.model.network.item_logits(choice_state, slate, self.table())
            log_p = (logits - normaliser[:, :1]) - normaliser[:, 1:]
        w = self.weights
        utility = w.choice * log_p + w.boredom * fatigue
        if self.use_rating:
            utility = utility + w.rating * (predicted - 3.0)
        utility = torch.nan_to_num(utility, nan=NEG_INF)  # 0 * -inf for an excluded item
        if self.model.exclude_consumed:
            utility = utility.masked_fill(consumed.gather(1, slate), NEG_INF)
        return utility, torch.full_like(utility[:, :1], w.no_choice)


__all__ = [
    "FEATURES",
    "LearnedChoice",
    "UtilityFitConfig",
    "UtilityWeights",
    "choice_slates",
    "fit_mnl",
    "mnl_log_likelihood",
]
