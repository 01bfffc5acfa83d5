"""Calibrated answers: the rating a simulated user gives a film the log does not answer.

The preference model predicts a *mean* rating; real ratings scatter around it, and a mean reaches 4
for far fewer films than users like. A calibrated answer is a draw from an ordered probit over the
integer scale 1..5 around a recalibrated mean::

    mu   = a * predicted + b
    P(r) = Phi((r + 0.5 - mu) / sd) - Phi((r - 0.5 - mu) / sd)      r = 1..5, open ends at 1 and 5

i.e. ``r = clamp(round(mu + sd * z), 1, 5)`` with ``z`` standard normal. ``(a, b, sd)`` are fitted by
maximum likelihood (:func:`fit_answer_calibration`) on real ratings of validation events.

Each (user, item) has one fixed ``z`` per simulator (:func:`answer_noise`): a user's opinion of a film
does not change when it is shown again. ``z`` comes from a counter-based hash of (seed, user, item)
-> a uniform in (0, 1) -> ``torch.special.ndtri``: batched, the same on every device and batch
layout, and needs no table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from recarena.data.interactions import MAX_RATING, MIN_RATING

LEVELS = tuple(range(int(MIN_RATING), int(MAX_RATING) + 1))
"""The integer rating scale 1..5 the answers are drawn on."""

_MASK32 = 0xFFFFFFFF


@dataclass
class AnswerCalibration:
    """``mu = a * predicted + b`` and the spread ``sd`` of the ordered probit, with how they were fitted."""

    a: float = 1.0
    b: float = 0.0
    sd: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``(x * constant) mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow (16-bit halves)."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser ("lowbias32", C. Wellons) on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _seed_word(seed: int) -> int:
    """The seed (any int in [0, 2**63)) folded to a 32-bit word."""
    high = int(_mix32(torch.tensor([(seed >> 32) & _MASK32]))[0])
    return int(_mix32(torch.tensor([(seed & _MASK32) ^ high]))[0])


def answer_uniform(seed: int, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Float64 uniforms in (0, 1), one per (user, item) pair (broadcast), fixed by ``seed``."""
    user, item = torch.broadcast_tensors(user.to(torch.int64), item.to(torch.int64))
    word = _mix32(((user + 0x9E3779B9) & _MASK32) ^ _seed_word(seed))
    word = _mix32(((word + (item & _MASK32) + 0x7F4A7C15) & _MASK32) ^ 0x85EBCA6B)
    return (word.to(torch.float64) + 0.5) / 2.0**32


def answer_noise(seed: int, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Float64 standard-normal ``z(user, item)`` (broadcast), fixed by ``seed``."""
    return torch.special.ndtri(answer_uniform(seed, user, item))


def calibrated_answers(predicted: torch.Tensor, noise: torch.Tensor, calibration: AnswerCalibration) -> torch.Tensor:
    """Integer answers 1..5 (float32): ``clamp(round(a * predicted + b + sd * z), 1, 5)``, halves rounding up."""
    mu = calibration.a * predicted.to(torch.float64) + calibration.b
    answer = torch.floor(mu + calibration.sd * noise.to(mu.device) + 0.5)
    return answer.clamp(MIN_RATING, MAX_RATING).to(torch.float32)


def answer_probabilities(predicted: torch.Tensor, calibration: AnswerCalibration) -> torch.Tensor:
    """Float64 ``[..., 5]``: the probability of each answer 1..5 given the predicted ratings ``[...]``."""
    mu = calibration.a * predicted.to(torch.float64) + calibration.b
    cuts = torch.tensor([level + 0.5 for level in LEVELS[:-1]], dtype=torch.float64, device=mu.device)
    cdf = torch.special.ndtr((cuts - mu.unsqueeze(-1)) / calibration.sd)  # P(answer <= r), r = 1..4
    ones = torch.ones_like(cdf[..., :1])
    upper = torch.cat([cdf, ones], dim=-1)
    lower = torch.cat([torch.zeros_like(ones), cdf], dim=-1)
    return upper - lower


def _log_likelihood(params: torch.Tensor, predicted: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    a, b, log_sd = params[0], params[1], params[2]
    mu = a * predicted + b
    sd = torch.exp(log_sd)
    upper = torch.where(level >= LEVELS[-1], torch.full_like(mu, math.inf), (level + 0.5 - mu) / sd)
    lower = torch.where(level <= LEVELS[0], torch.full_like(mu, -math.inf), (level - 0.5 - mu) / sd)
    # log(Phi(upper) - Phi(lower)), stably: on the upper tail use the mirrored difference.
    flip = lower > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return (log_hi + torch.log1p(-torch.exp(log_lo - log_hi))).mean()


def fit_answer_calibration(predicted: Any, ratings: Any, max_iter: int = 200) -> AnswerCalibration:
    """Maximum-likelihood ``(a, b, sd)`` of the ordered probit from predicted ratings and real ratings.

    ``ratings`` are rounded to the integer scale and clamped to 1..5 (half stars round up); pairs with
    a missing rating are dropped. Full-batch L-BFGS in float64 on the CPU (deterministic), from
    ``a = 1, b = 0`` and ``sd`` = the residual standard deviation. Needs at least 3 rated pairs.
    """
    predicted = torch.as_tensor(np.asarray(predicted, dtype=np.float64))
    ratings = torch.as_tensor(np.asarray(ratings, dtype=np.float64))
    if predicted.shape != ratings.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and ratings {tuple(ratings.shape)} differ in shape")
    keep = torch.isfinite(ratings) & torch.isfinite(predicted)
    predicted, ratings = predicted[keep], ratings[keep]
    if predicted.numel() < 3:
        raise ValueError(f"the answer calibration needs at least 3 rated events, got {predicted.numel()}")
    level = torch.floor(ratings + 0.5).clamp(MIN_RATING, MAX_RATING)
    residual_sd = float((level - predicted).std().clamp(min=0.1))
    params = torch.tensor([1.0, 0.0, math.log(residual_sd)], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():  # callers may hold no_grad
            loss = -_log_likelihood(params, predicted, level)
            loss.backward()
        return loss

    start = float(closure().detach())
    optimizer.step(closure)
    with torch.no_grad():
        final = float(-_log_likelihood(params, predicted, level))
    a, b, log_sd = (float(v) for v in params.detach())
    calibration = AnswerCalibration(a, b, math.exp(log_sd))
    like = float((level >= 4).to(torch.float64).mean())
    predicted_like = float(answer_probabilities(predicted, calibration)[:, 3:].sum(-1).mean())
    calibration.info = {
        "n_events": int(predicted.numel()),
        "log_loss_start": start,
        "log_loss": final,
        "real_like_rate": like,
        "mean_prediction_like_rate": float((predicted >= 4).to(torch.float64).mean()),
        "calibrated_like_rate": predicted_like,
    }
    return calibration


__all__ = [
    "LEVELS",
    "AnswerCalibration",
    "answer_noise",
    "answer_probabilities",
    "answer_uniform",
    "calibrated_answers",
    "fit_answer_calibration",
]
