"""Fidelity report: how well the preference model and the simulator reproduce held-out logged users.

Run ``recarena fidelity --data ml-1m --out reports/fidelity-ml-1m``. For each model
variant (ID-only, text-only, combined; plus a global-mean baseline) it fits on the training split
and scores the held-out split:

* rating RMSE and MAE (predictions clamped to [1, 5]);
* like-vs-not AUC (like = rating >= 4), from the unclamped predicted rating;
* per-user Spearman between predicted and true held-out ratings (users with at least
  ``--min-user-ratings`` held-out ratings that are not all equal), averaged over users;
* NDCG@10 of each user's held-out items ranked by predicted rating (gain ``2^rating - 1``; users
  with at least 2 held-out items);
* full-catalogue HR@10 / NDCG@10: every item the user did not rate in training ranked, held-out
  liked items relevant (a retrieval metric a rating model is not fitted for; reported for context);

each overall and on cold items (at most ``--cold-threshold`` training ratings, default 10).

The default split, ``user-last``, holds out each user's last 20% of events in time order (the
10% before that is validation for early stopping), so every user has several "later ratings"
and per-user Spearman is defined. ``leave-last-out`` (one test rating per user: no per-user
Spearman) and the global ``temporal`` split are available too.

Session statistics compare logged sessions (a user's events split where consecutive events are more
than ``session_gap`` seconds apart, default 1 hour) with sessions of the ``logged`` simulator driven by
a popularity-sampling policy until the user leaves: items consumed per session (mean and quantiles;
the simulator's steps too), like rate, genre spread (distinct genres among a session's first 5
items) and genre entropy (bits, of the genres of those 5 items, an item's genres sharing its weight),
both over sessions with >= 5 items, and repeats (share of consumed items the user had consumed
before: earlier in the log or the session, or in the simulated user's starting history).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from recarena.core.seeding import torch_generator
from recarena.data.interactions import LIKE_THRESHOLD, InteractionLog, LogSplit
from recarena.evaluation import metrics
from recarena.evaluation.formatting import format_number
from recarena.simulators.preference import (
    Judgements,
    PreferenceModel,
    fit_preference_model,
    preference_config,
)
from recarena.simulators.sessions import POSITION_EDGES, SESSION_GAP_SECONDS, session_starts

COLD_THRESHOLD = 10
"""Items with at most this many training ratings count as cold."""
MIN_USER_RATINGS = 5
"""Per-user Spearman uses users with at least this many held-out ratings."""
GENRE_WINDOW = 5
"""Genre spread = distinct genres among the first this-many items of a session."""
VARIANTS = ("id", "text", "combined")


# -- splits ------------------------------------------------------------------------------------


def make_split(log: InteractionLog, protocol: str, test_fraction: float = 0.2) -> LogSplit:
    """The split named ``protocol``: ``user-last``, ``leave-last-out`` or ``temporal``."""
    from recarena.data.splits import leave_last_out, temporal_split, user_last_split

    if protocol == "user-last":
        return user_last_split(log, test_fraction)
    if protocol == "leave-last-out":
        return leave_last_out(log)
    if protocol == "temporal":
        return temporal_split(log, valid_fraction=0.1, test_fraction=test_fraction)
    raise ValueError(f"unknown split '{protocol}'; choose user-last, leave-last-out or temporal")


# -- metrics -----------------------------------------------------------------------------------


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(labels) == 0 or labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def _groups(users: np.ndarray) -> list[np.ndarray]:
    """Indices of each user's entries (``users`` need not be sorted)."""
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    return np.split(order, bounds) if len(order) else []


def per_user_spearman(
    users: np.ndarray, scores: np.ndarray, ratings: np.ndarray, min_ratings: int
) -> tuple[float | None, int]:
    """Mean over users (>= ``min_ratings`` held-out; ratings and scores not constant) of Spearman(score, rating)."""
    from scipy.stats import spearmanr

    values = []
    for index in _groups(users):
        if len(index) < min_ratings or np.ptp(ratings[index]) == 0 or np.ptp(scores[index]) == 0:
            continue
        rho = spearmanr(scores[index], ratings[index]).statistic
        if not np.isnan(rho):
            values.append(rho)
    return (float(np.mean(values)) if values else None), len(values)


def heldout_ndcg(
    users: np.ndarray, scores: np.ndarray, ratings: np.ndarray, k: int = 10, min_items: int = 2
) -> tuple[float | None, int]:
    """Mean NDCG@k of each user's held-out items ranked by score (gain 2^rating - 1)."""
    values = []
    for index in _groups(users):
        if len(index) < min_items:
            continue
        gains = 2.0 ** ratings[index] - 1.0
        ranked = gains[np.argsort(-scores[index], kind="stable")]
        ideal = np.sort(gains)[::-1]
        values.append(float(metrics.graded_ndcg(torch.as_tensor(ranked), torch.as_tensor(ideal.copy()), k)))
    return (float(np.mean(values)) if values else None), len(values)


def pointwise_metrics(
    users: np.ndarray, raw: np.ndarray, ratings: np.ndarray, min_user_ratings: int
) -> dict[str, Any]:
    """RMSE, MAE, AUC, per-user Spearman and held-out NDCG@10 of raw predicted ratings."""
    if len(ratings) == 0:
        return {"n": 0}
    clamped = np.clip(raw, 1.0, 5.0)
    spearman, spearman_users = per_user_spearman(users, raw, ratings, min_user_ratings)
    ndcg, ndcg_users = heldout_ndcg(users, raw, ratings)
    return {
        "n": int(len(ratings)),
        "rmse": float(np.sqrt(np.mean((clamped - ratings) ** 2))),
        "mae": float(np.mean(np.abs(clamped - ratings))),
        "auc": _auc(ratings >= LIKE_THRESHOLD, raw),
        "spearman": spearman,
        "spearman_users": spearman_users,
        "ndcg10": ndcg,
        "ndcg10_users": ndcg_users,
    }


@torch.no_grad()
def full_ranking(
    model: PreferenceModel, seen: InteractionLog, test: InteractionLog, k: int = 10, chunk: int = 512
) -> dict[str, Any]:
    """HR@k and NDCG@k over the whole catalogue (items seen in ``seen`` excluded; liked test items relevant)."""
    liked = test.rating >= LIKE_THRESHOLD
    users = np.unique(test.user[liked])
    hits, ndcgs = [], []
    for start in range(0, len(users), chunk):
        block = torch.as_tensor(users[start : start + chunk], device=model.device)
        scores = model.raw_scores_all(block).float()
        row_of = {int(u): r for r, u in enumerate(block.tolist())}
        in_block = np.isin(seen.user, users[start : start + chunk])
        rows = torch.as_tensor([row_of[int(u)] for u in seen.user[in_block]], dtype=torch.int64)
        scores[rows.to(scores.device), torch.as_tensor(seen.item[in_block], device=scores.device)] = -math.inf
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        in_test = np.isin(test.user, users[start : start + chunk]) & liked
        t_rows = torch.as_tensor([row_of[int(u)] for u in test.user[in_test]], dtype=torch.int64)
        relevant[t_rows.to(scores.device), torch.as_tensor(test.item[in_test], device=scores.device)] = True
        top = scores.topk(k, dim=1).indices
        gain = relevant.gather(1, top).float().cpu()
        ideal = (torch.arange(k) < relevant.sum(1, keepdim=True).cpu()).float()
        hits.append((gain.sum(1) > 0).float())
        ndcgs.append(metrics.graded_ndcg(gain, ideal, k).float())
    if not hits:
        return {"users": 0}
    return {
        "users": int(len(users)),
        f"hr{k}": float(torch.cat(hits).mean()),
        f"ndcg{k}": float(torch.cat(ndcgs).mean()),
    }


@torch.no_grad()
def raw_predictions(model: PreferenceModel, log: InteractionLog, batch_size: int = 65536) -> np.ndarray:
    """Unclamped predicted ratings of every event of ``log``."""
    model.eval()
    out = []
    for start in range(0, log.n_events, batch_size):
        user = torch.as_tensor(log.user[start : start + batch_size], device=model.device)
        item = torch.as_tensor(log.item[start : start + batch_size], device=model.device)
        out.append(model.raw_scores(user, item.unsqueeze(1)).squeeze(1).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def score_variant(
    raw: np.ndarray, test: InteractionLog, cold_items: np.ndarray, min_user_ratings: int
) -> dict[str, Any]:
    """Overall and cold-item pointwise metrics of predictions ``raw`` for ``test``."""
    ratings = test.rating.astype(np.float64)
    cold = cold_items[test.item]
    return {
        "overall": pointwise_metrics(test.user, raw, ratings, min_user_ratings),
        "cold": pointwise_metrics(test.user[cold], raw[cold], ratings[cold], min(min_user_ratings, 3)),
    }


# -- session statistics ------------------------------------------------------------------------


LENGTH_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def genre_entropy(items: np.ndarray | list[int], genres: list[tuple[str, ...]]) -> float:
    """Shannon entropy (bits) of the genres of ``items``, each item's genres sharing a weight of 1
    (items without genres are left out; 0 when none has any)."""
    weights: dict[str, float] = {}
    for item in items:
        for genre in genres[int(item)]:
            weights[genre] = weights.get(genre, 0.0) + 1.0 / len(genres[int(item)])
    if not weights:
        return 0.0
    p = np.asarray(list(weights.values())) / sum(weights.values())
    return float(-(p * np.log2(p)).sum())


LIKE_POSITION_EDGES = tuple(edge for edge in POSITION_EDGES if edge <= 50)
"""Position buckets (0-based, in the session) of the like rate by position: [0], [1, 5), [5, 20),
[20, 50) - the leave hazard's, up to the simulated sessions' default cap of 50 steps."""


def like_rate_by_position(liked: list[np.ndarray], edges: tuple[int, ...] = LIKE_POSITION_EDGES) -> dict[str, float | None]:
    """Likes per consumed item at each position bucket of the sessions (``liked``: per session, a
    bool per consumed item, in order); None for a bucket no session reaches. Keys "0", "1-4", ...,
    the last bucket "{edges[-2]}-{edges[-1] - 1}" (positions from ``edges[-1]`` on are left out)."""
    lows = (0, *edges[:-1])
    flags = [np.asarray(f, dtype=bool)[: edges[-1]] for f in liked]
    position = np.concatenate([np.arange(len(f)) for f in flags]) if flags else np.zeros(0, dtype=np.int64)
    bucket = np.searchsorted(np.asarray(edges), position, side="right")
    likes = np.bincount(bucket, weights=np.concatenate(flags) if flags else None, minlength=len(edges))
    items = np.bincount(bucket, minlength=len(edges))
    names = [f"{low}" if high - 1 == low else f"{low}-{high - 1}" for low, high in zip(lows, edges, strict=True)]
    return {name: (float(likes[b] / items[b]) if items[b] else None) for b, name in enumerate(names)}


def session_summary(sessions: list[np.ndarray], liked: list[np.ndarray], repeats: list[int],
                    genres: list[tuple[str, ...]]) -> dict[str, Any]:
    """Length distribution, like rate (overall and by position), genre spread and entropy, and repeat
    share of sessions given as their consumed items in order (``liked``: per session, whether each
    consumed item was liked; ``repeats``: already-consumed items per session)."""
    lengths = np.asarray([len(s) for s in sessions], dtype=np.float64)
    windows = [s[:GENRE_WINDOW] for s in sessions if len(s) >= GENRE_WINDOW]
    total = max(float(lengths.sum()), 1.0)
    return {"like_rate_by_position": like_rate_by_position(liked)} | {
        "sessions": len(sessions),
        "mean_items": float(lengths.mean()) if len(lengths) else None,
        "median_items": float(np.median(lengths)) if len(lengths) else None,
        "length_quantiles": ({f"p{round(100 * q)}": float(v) for q, v in zip(LENGTH_QUANTILES, np.quantile(lengths, LENGTH_QUANTILES),
                                                                            strict=True)} if len(lengths) else None),
        "share_single_item": float((lengths == 1).mean()) if len(lengths) else None,
        "share_at_most_one": float((lengths <= 1).mean()) if len(lengths) else None,
        "like_rate": float(sum(int(np.sum(f)) for f in liked) / total),
        "genre_spread": float(np.mean([len({g for i in w for g in genres[int(i)]}) for w in windows])) if windows else None,
        "genre_entropy": float(np.mean([genre_entropy(w, genres) for w in windows])) if windows else None,
        "share_with_window": float(len(windows) / max(len(sessions), 1)),
        "repeat_share": float(np.sum(repeats) / total),
    }


def logged_session_statistics(log: InteractionLog, gap: int = SESSION_GAP_SECONDS) -> dict[str, Any]:
    """Sessions of the log (a user's events split where consecutive events are > ``gap`` s apart);
    an event is a repeat when its user consumed the item at an earlier event."""
    starts = np.flatnonzero(session_starts(log, gap))
    ends = np.append(starts[1:], log.n_events)
    repeated = np.ones(log.n_events, dtype=bool)  # events are in time order within a user
    repeated[np.unique(log.user.astype(np.int64) * log.n_items + log.item, return_index=True)[1]] = False
    liked = log.liked
    sessions = [log.item[start:end] for start, end in zip(starts, ends, strict=True)]
    flags = [liked[start:end] for start, end in zip(starts, ends, strict=True)]
    repeats = [int(repeated[start:end].sum()) for start, end in zip(starts, ends, strict=True)]
    return session_summary(sessions, flags, repeats, log.items.genres) | {"gap_seconds": gap}


@torch.no_grad()
def simulated_session_statistics(
    split: LogSplit,
    model: PreferenceModel,
    item_embeddings: torch.Tensor,
    n_sessions: int = 1024,
    max_steps: int = 200,
    slate_size: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Sessions of the ``logged`` simulator (default behaviour) under a popularity-sampling policy.

    Each step shows ``slate_size`` unconsumed items drawn without replacement with probability
    proportional to training popularity (a stand-in for how MovieLens users came across films).
    """
    import recarena.simulators as simulators

    simulator = simulators.make(
        "logged-rating",  # the users of env -v0 (mean answers); the learned choice has its own section
        split,
        device=model.device,
        components={"preference_model": model, "item_embeddings": item_embeddings},
    )
    generator = torch_generator(seed, model.device)
    state = simulator.init_state(n_sessions)
    simulator.reset(state, torch.ones(n_sessions, dtype=torch.bool, device=model.device), generator)
    popularity = torch.as_tensor(split.train.item_counts(), dtype=torch.float32, device=model.device) + 1.0
    genres = split.full.items.genres
    active = torch.ones(n_sessions, dtype=torch.bool, device=model.device)
    consumed: list[list[int]] = [[] for _ in range(n_sessions)]
    liked: list[list[bool]] = [[] for _ in range(n_sessions)]
    repeats = np.zeros(n_sessions, dtype=np.int64)
    steps = np.zeros(n_sessions, dtype=np.int64)
    from_log = 0
    for _ in range(max_steps):
        weights = popularity.expand(n_sessions, -1).masked_fill(state.consumed, 0.0)
        slate = torch.multinomial(weights, slate_size, replacement=False, generator=generator)
        before = state.consumed.clone()  # history + earlier steps: what counts as a repeat
        outcome = simulator.step(state, slate, generator)
        for row in torch.nonzero(active & outcome.clicked).squeeze(1).tolist():
            consumed[row].append(int(outcome.item[row]))
            liked[row].append(bool(outcome.liked[row]))
            repeats[row] += int(before[row, int(outcome.item[row])])
        from_log += int((active & outcome.from_log).sum())
        steps += active.cpu().numpy()
        active &= ~outcome.left
        if not bool(active.any()):
            break
    summary = session_summary([np.asarray(c, dtype=np.int64) for c in consumed], [np.asarray(f, dtype=bool) for f in liked],
                              repeats.tolist(), genres)
    return summary | {
        "users": "sampled by the simulator (a training user at a sampled point of their history)",
        "mean_steps": float(steps.mean()),
        "median_steps": float(np.median(steps)),
        "left_before_cap": float(1.0 - active.float().mean()),
        "chosen_from_log_share": float(from_log / max(sum(len(c) for c in consumed), 1)),
        "policy": f"popularity sampling, slate {slate_size}",
        "choice": "rating-only (env -v0 users)",
        "max_steps": max_steps,
    }


# -- the report --------------------------------------------------------------------------------


def llm_judgements(
    train: InteractionLog, n_pairs: int, seed: int, cache_dir: str | None, judge_model: str
) -> Judgements:
    """LLM judge probabilities for ``n_pairs`` random (user, item) pairs (cached by ``llm``)."""
    from recarena.llm import JudgeConfig, LLMJudge, item_texts, user_profile_texts

    rng = np.random.default_rng(seed)
    users = rng.integers(0, train.n_users, n_pairs)
    items = rng.integers(0, train.n_items, n_pairs)
    profiles, texts = user_profile_texts(train), item_texts(train.items)
    judge = LLMJudge(JudgeConfig(model=judge_model, device="cpu"), cache_dir=cache_dir)
    probability = judge.judge([profiles[u] for u in users], [texts[i] for i in items])
    return Judgements(torch.as_tensor(users), torch.as_tensor(items), probability)


def run_report(
    log: InteractionLog,
    item_embeddings: torch.Tensor,
    split_protocol: str = "user-last",
    base_config: dict[str, Any] | None = None,
    variants: tuple[str, ...] = VARIANTS,
    cold_threshold: int = COLD_THRESHOLD,
    min_user_ratings: int = MIN_USER_RATINGS,
    judgements: Judgements | None = None,
    user_text_embeddings: torch.Tensor | None = None,
    simulate: bool = True,
    progress: bool = True,
    session_gap: int = SESSION_GAP_SECONDS,
) -> dict[str, Any]:
    """Fit each variant on the training split and score it on held-out data; see the module docstring."""
    split = make_split(log, split_protocol)
    train, valid, test = split.train, split.valid, split.test
    counts = train.item_counts()
    cold_items = counts <= cold_threshold
    report: dict[str, Any] = {
        "dataset": log.name,
        "events": {"train": train.n_events, "valid": valid.n_events, "test": test.n_events},
        "split": split_protocol,
        "cold_threshold": cold_threshold,
        "cold_test_events": int(cold_items[test.item].sum()),
        "min_user_ratings": min_user_ratings,
        "models": {},
    }
    mean = float(train.rating.mean())
    report["models"]["mean"] = score_variant(np.full(test.n_events, mean), test, cold_items, min_user_ratings)
    seen = _merge(train, valid)  # items a user rated before the test period are not ranked
    fitted: dict[str, PreferenceModel] = {}
    for variant in variants:
        config = preference_config(base_config or {}, variant=variant)
        use_judge = judgements is not None and config.distill_weight > 0
        model = fit_preference_model(
            train,
            item_embeddings,
            config,
            valid=valid if valid.n_events else None,
            user_text_embeddings=user_text_embeddings,
            judgements=judgements if use_judge else None,
            progress=progress,
        )
        fitted[variant] = model
        scores = score_variant(raw_predictions(model, test), test, cold_items, min_user_ratings)
        scores["full_ranking"] = full_ranking(model, seen, test)
        info = {k: v for k, v in model.fit_info.items() if k != "history"}
        report["models"][variant] = {"fit": info, **scores}
    if simulate and "combined" in fitted:
        model = fitted["combined"]
        report["sessions"] = {
            "logged": logged_session_statistics(log, session_gap),
            "simulated": simulated_session_statistics(
                split, model, item_embeddings, seed=int(model.config.seed)
            ),
        }
    return report


def _merge(a: InteractionLog, b: InteractionLog) -> InteractionLog:
    """Events of two logs over one index space (only user/item are used: for masking seen items)."""
    if b.n_events == 0:
        return a
    user = np.concatenate([a.user, b.user])
    item = np.concatenate([a.item, b.item])
    order = np.argsort(user, kind="stable")
    offsets = np.zeros(a.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=a.n_users), out=offsets[1:])
    return InteractionLog(
        name=a.name,
        user_raw_ids=a.user_raw_ids,
        item_raw_ids=a.item_raw_ids,
        user=user[order],
        item=item[order],
        rating=np.concatenate([a.rating, b.rating])[order],
        timestamp=np.concatenate([a.timestamp, b.timestamp])[order],
        user_offsets=offsets,
        items=a.items,
    )


_fmt = partial(format_number, nan="nan")
"""The tables' number formatting (NaN printed as ``nan``, as these tables always have)."""


def format_tables(report: dict[str, Any]) -> str:
    """Markdown tables of a report (printed and written to report.md)."""
    lines = []
    for part in ("overall", "cold"):
        title = (
            "all held-out ratings"
            if part == "overall"
            else f"cold items (<= {report['cold_threshold']} training ratings)"
        )
        lines += [
            f"### {title}",
            "",
            "| model | n | RMSE | MAE | AUC | Spearman (users) | NDCG@10 held-out (users) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, result in report["models"].items():
            m = result[part]
            if not m.get("n"):
                lines.append(f"| {name} | 0 | | | | | |")
                continue
            lines.append(
                f"| {name} | {m['n']} | {_fmt(m['rmse'])} | {_fmt(m['mae'])} | {_fmt(m['auc'])} | "
                f"{_fmt(m['spearman'])} ({m['spearman_users']}) | {_fmt(m['ndcg10'])} ({m['ndcg10_users']}) |"
            )
        lines.append("")
    lines += [
        "### full-catalogue ranking (liked held-out items relevant)",
        "",
        "| model | users | HR@10 | NDCG@10 | fit seconds | epochs (best) |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in report["models"].items():
        if "full_ranking" in result:
            r, fit = result["full_ranking"], result["fit"]
            lines.append(
                f"| {name} | {r.get('users')} | {_fmt(r.get('hr10'))} | {_fmt(r.get('ndcg10'))} | "
                f"{_fmt(fit['seconds'], 1)} | {fit['epochs_run']} ({fit['best_epoch']}) |"
            )
    lines.append("")
    sessions = report.get("sessions")
    if sessions:
        lines += [
            "### sessions: logged vs simulated",
            "",
            f"| source | sessions | mean items | items p10 / p25 / median / p75 / p90 | single-item sessions | like rate "
            f"| genre spread (first {GENRE_WINDOW}) | genre entropy, bits (first {GENRE_WINDOW}) | repeat share |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for source in ("logged", "simulated"):
            s = sessions[source]
            q = s.get("length_quantiles") or {}
            quantiles = " / ".join(_fmt(q.get(f"p{p}"), 0) for p in (10, 25, 50, 75, 90)) if q else "n/a"
            lines.append(
                f"| {source} | {s['sessions']} | {_fmt(s['mean_items'], 2)} | {quantiles} | {_fmt(s.get('share_single_item'), 3)} | "
                f"{_fmt(s['like_rate'], 3)} | {_fmt(s['genre_spread'], 2)} | {_fmt(s.get('genre_entropy'), 2)} | "
                f"{_fmt(s.get('repeat_share'), 3)} |"
            )
        logged, simulated = sessions["logged"], sessions["simulated"]
        lines += [
            "",
            f"Logged sessions: a user's events split at gaps > {logged.get('gap_seconds')} s. Simulated: "
            f"{simulated['sessions']} users {simulated.get('users', 'sampled by the simulator')}, {simulated.get('policy')}, "
            f"{simulated.get('choice')}, until they leave (cap {simulated.get('max_steps')} steps; "
            f"{_fmt(simulated.get('left_before_cap'), 3)} left before it); items = items consumed (clicked), "
            f"{_fmt(simulated.get('mean_steps'), 1)} steps per session on average. Genre figures over sessions with "
            f">= {GENRE_WINDOW} items; repeats = consumed items the user had consumed before.",
            "",
        ]
    return "\n".join(lines)
