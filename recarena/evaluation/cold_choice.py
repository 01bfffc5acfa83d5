"""Cold items: does the next-item model rank rarely seen items better with the LLM text encodings?

Leave-last-out holds out almost no cold items (ML-100K: 16 of 943 test items have <= 5 training
events), so this section uses the **temporal split** (``recarena.data.splits.temporal_split``): every
held-out (test) event is a query, with the user's real history before it (training, validation and
earlier test events; ``recarena.evaluation.histories.build_queries``, evaluate.py's temporal protocol).
Queries are grouped by the training count of their item: all, cold (<= ``COLD_EVENTS``) and unseen (0).

Full-ranking HR@10 / NDCG@10 (``recarena.evaluation.ranking``, every unconsumed item, bootstrap over
users) of the next-item model with the text encodings, the same model without them
(``choice.sequence.use_text: false``), most-popular and SASRec; and the paired difference
(with - without) per query, bootstrapped over users (a user's queries resampled together).

Every model sees only the temporal split's training part: most-popular and SASRec are fitted on it,
the next-item models too (early-stopped on the split's validation part, which lies before every test
event), through the preference store's cache (``recarena.simulators.preference_store``: keyed by the
split's training log and the ``choice.sequence`` config), so they are the models a ``data.split:
temporal`` run's learned user reads and are fitted once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.agents.baselines import MostPopularAgent, SequenceModelAgent, SequenceModelConfig
from recarena.core.config import from_dict
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.data.spec import data_spec
from recarena.evaluation import metrics
from recarena.evaluation.choice_fidelity import COLD_EVENTS
from recarena.evaluation.formatting import format_interval, format_number
from recarena.evaluation.histories import EvalQueries, build_queries
from recarena.evaluation.ranking import evaluate_ranking
from recarena.llm.encoder import EncoderConfig, encode_items
from recarena.simulators.logged import LoggedConfig
from recarena.simulators.preference_store import ensure_choice_model
from recarena.simulators.sequence import NextItemModel

HISTORY_LENGTH = 50
N_BOOTSTRAP = 1000
NO_TEXT = {"choice": {"sequence": {"use_text": False}}}
"""The logged-simulator config of the next-item model without the LLM text encodings."""
GROUPS = ("all", "cold", "unseen")


class NextItemAgent(Agent):
    """A fitted next-item model as a ranker: its logits of every item after the history window."""

    name = "next_item_model"

    def __init__(self, model: NextItemModel) -> None:
        self.model = model
        self.n_items = model.n_items
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        network = self.model.network.eval()
        if self._table is None:
            self._table = tuple(t.detach() for t in network.item_table())  # type: ignore[assignment]
        window = network.config.window
        history = observation["history"][:, -window:].to(network.device)
        responses = observation["responses"][:, -window:].to(network.device)
        return network.logits(network.encode(history, responses, self._table[0]), self._table)

    def save(self, directory: str | Path) -> None:  # pragma: no cover - not a trainable agent
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> NextItemAgent:  # pragma: no cover
        raise NotImplementedError


def cold_groups(train: InteractionLog, queries: EvalQueries, threshold: int = COLD_EVENTS) -> dict[str, np.ndarray]:
    """Query indices per group: ``all``, ``cold`` (target item with <= ``threshold`` events in
    ``train``) and ``unseen`` (0 training events)."""
    counts = train.item_counts()[queries.target]
    return {
        "all": np.arange(len(queries)),
        "cold": np.flatnonzero(counts <= threshold),
        "unseen": np.flatnonzero(counts == 0),
    }


def _per_query(ranks: np.ndarray) -> dict[str, np.ndarray]:
    rank = torch.as_tensor(ranks)
    return {"hr10": metrics.hit_rate(rank, 10).numpy(), "ndcg10": metrics.ndcg(rank, 10).numpy(),
            "mrr": metrics.reciprocal_rank(rank).numpy()}


def paired_difference(
    users: np.ndarray, first: np.ndarray, second: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Mean of ``first - second`` (per-query ranks of two rankers on the same queries) for HR@10,
    NDCG@10 and MRR, with 95% percentile bootstrap intervals over users."""
    a, b = _per_query(first), _per_query(second)
    out: dict[str, Any] = {}
    for offset, name in enumerate(("hr10", "ndcg10", "mrr")):
        difference = a[name] - b[name]
        numerator, denominator = metrics.group_sums(users, difference, np.ones_like(difference))
        out[name] = float(difference.mean())
        out[f"{name}_interval"] = list(metrics.bootstrap_ratio(numerator, denominator, n_bootstrap, 0.05, seed + offset))
    return out


def run_cold_report(
    split: LogSplit,
    rankers: dict[str, Agent],
    item_embeddings: torch.Tensor,
    threshold: int = COLD_EVENTS,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    pair: tuple[str, str] = ("choice_model", "choice_model_no_text"),
) -> dict[str, Any]:
    """Rank every group of ``split``'s test events with each (already fitted) ranker; the paired
    difference ``pair[0] - pair[1]`` where both are ranked."""
    queries = build_queries(split)
    groups = cold_groups(split.train, queries, threshold)
    report: dict[str, Any] = {
        "protocol": f"{split.protocol} split: every test event, history = all of the user's earlier events",
        "threshold": threshold,
        "counts": {
            group: {"queries": int(len(index)), "users": int(len(np.unique(queries.user[index]))),
                    "items": int(len(np.unique(queries.target[index])))}
            for group, index in groups.items()
        },
        "ranking": {},
        "paired_difference": {},
    }
    ranks: dict[tuple[str, str], np.ndarray] = {}
    for name, agent in rankers.items():
        report["ranking"][name] = {}
        for group, index in groups.items():
            if len(index) == 0:
                report["ranking"][name][group] = None
                continue
            subset = queries.subset(index)
            result = evaluate_ranking(agent, subset, item_embeddings, history_length=HISTORY_LENGTH,
                                      n_bootstrap=n_bootstrap, seed=seed)
            ranks[name, group] = result.per_query_ranks
            report["ranking"][name][group] = {
                "hr10": result.metrics["HR@10"], "ndcg10": result.metrics["NDCG@10"],
                "hr10_interval": list(result.intervals["HR@10"]), "ndcg10_interval": list(result.intervals["NDCG@10"]),
                "mrr": result.metrics["MRR"], "mrr_interval": list(result.intervals["MRR"]),
                "median_rank": float(np.median(result.per_query_ranks)) + 1.0,  # 1 = ranked first
                "seconds": round(result.seconds, 1),
            }
    with_text, without_text = pair
    for group, index in groups.items():
        if (with_text, group) in ranks and (without_text, group) in ranks:
            report["paired_difference"][group] = paired_difference(
                queries.user[index], ranks[with_text, group], ranks[without_text, group], n_bootstrap, seed)
    return report


def _fit_info(model: NextItemModel, directory: Path) -> dict[str, Any]:
    return {"path": str(directory), **{k: v for k, v in model.fit_info.items() if k != "history"}}


def cold_report_for_source(
    data: Any,
    device: str = "cpu",
    seed: int = 0,
    sasrec_config: dict[str, Any] | None = None,
    threshold: int = COLD_EVENTS,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`run_cold_report` for a ``load_logs`` source on its temporal split: the next-item models
    with and without text from the cache (fitted there once, on the temporal training part),
    most-popular and SASRec fitted here on the same part."""
    spec = dataclasses.replace(data_spec(data), split="temporal")
    source, split = spec.to_value(), spec.load_split()
    train = split.train
    typed = from_dict(LoggedConfig, {})
    item_embeddings = encode_items(train.items, from_dict(EncoderConfig, typed.encoder, prefix="encoder."), typed.cache_dir)
    fits: dict[str, Any] = {}
    rankers: dict[str, Agent] = {}
    for name, config in (("choice_model", {}), ("choice_model_no_text", NO_TEXT)):
        directory = ensure_choice_model(source, config)
        model = NextItemModel.load(directory, map_location=device, log=train)
        fits[name] = _fit_info(model, directory)
        rankers[name] = NextItemAgent(model)
    rankers["most_popular"] = MostPopularAgent(train.n_items).fit(train)
    sasrec = SequenceModelAgent(train.n_items, SequenceModelConfig(**(sasrec_config or {})))
    started = time.perf_counter()
    sasrec.fit(train, item_embeddings, progress=progress)
    fits["sasrec"] = {"seconds": round(time.perf_counter() - started, 1), "config": sasrec_config or {}}
    rankers["sasrec"] = sasrec
    report = run_cold_report(split, rankers, item_embeddings, threshold=threshold, seed=seed)
    report["fits"] = fits
    report["split_sizes"] = {"train": train.n_events, "valid": split.valid.n_events, "test": split.test.n_events}
    return report


def format_cold_tables(report: dict[str, Any]) -> str:
    """Markdown tables of the cold-items section."""
    threshold, counts = report["threshold"], report["counts"]
    labels = {"all": "all test events", "cold": f"cold (<= {threshold} training events)", "unseen": "unseen (0 training events)"}
    lines = ["## Cold items (temporal split)", "", f"Queries: {report['protocol']}; models fitted on the training part only."]
    for name, fit in report.get("fits", {}).items():
        if "best_epoch" in fit:
            lines.append(f"- {name}: best epoch {fit['best_epoch']} of {fit['epochs_run']} (validation log-loss "
                         f"{format_number(fit.get('best_valid_log_loss'))}), fitted in {fit.get('seconds')} s, `{fit['path']}`")
        else:
            lines.append(f"- {name}: fitted in {fit.get('seconds')} s")
    lines += ["", "| queries | events | users | distinct items |", "|---|---|---|---|"]
    for group in GROUPS:
        c = counts[group]
        lines.append(f"| {labels[group]} | {c['queries']} | {c['users']} | {c['items']} |")
    lines += ["", "| ranker | queries | HR@10 | 95% interval | NDCG@10 | 95% interval | MRR | median rank |",
              "|---|---|---|---|---|---|---|---|"]
    for name, by_group in report["ranking"].items():
        for group in GROUPS:
            r = by_group.get(group)
            if r is None:
                lines.append(f"| {name} | {labels[group]} | n/a | | n/a | | n/a | n/a |")
                continue
            lines.append(f"| {name} | {labels[group]} | {format_number(r['hr10'])} | {format_interval(r['hr10_interval'])} | "
                         f"{format_number(r['ndcg10'])} | {format_interval(r['ndcg10_interval'])} | {format_number(r['mrr'])} | {format_number(r['median_rank'], 0)} |")
    if report["paired_difference"]:
        lines += ["", "Paired difference, next-item model with text - without (per query, bootstrap over users):", "",
                  "| queries | HR@10 difference | 95% interval | NDCG@10 difference | 95% interval | MRR difference | 95% interval |",
                  "|---|---|---|---|---|---|---|"]
        for group, d in report["paired_difference"].items():
            lines.append(f"| {labels[group]} | {format_number(d['hr10'])} | {format_interval(d['hr10_interval'])} | "
                         f"{format_number(d['ndcg10'])} | {format_interval(d['ndcg10_interval'])} | {format_number(d['mrr'])} | {format_interval(d['mrr_interval'])} |")
    lines.append("")
    return "\n".join(lines)
