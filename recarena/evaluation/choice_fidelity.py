"""Choice fidelity: do simulated users pick what real users picked next? (the ``choice`` part of the fidelity report)

Protocol: the leave-last-out split of the data (each user's last event is test, the one before it
validation, the rest training; the simulators, SASRec and most-popular are fitted on the training
part only, the choice utility on the validation events). Every query is a test event: the user at
their real history (training + validation events), the item they really picked next.

* **Full ranking** (HR@10, NDCG@10 over every unconsumed item, ``recarena.evaluation.ranking``) of the
  learned choice model's ``P(next = i | history)``, most-popular, the SASRec baseline, greedy on the
  rating-only simulator (the preference model's rating) and greedy on the learned simulator (each
  item's expected one-step reward, ``ComposedSimulator.expected_reward``).
* **Slate choice**: a slate of the real next item + 9 distractors drawn from the unconsumed items
  by popularity (without replacement, in proportion to training counts), from the 50 most popular
  items, or uniformly; the probability that the simulated user picks the real item (rating-only
  and learned users; the no-choice option is part of their denominator, so ``P(real | a click)`` is
  given too), against SASRec's softmax over the same 10 items and chance (0.1).
* **Calibration** on the popularity slates: log-loss ``-log P(real)`` and a reliability plot
  (``reliability.png``): every slate item's predicted choice probability, binned, against how often
  it was the real item.
* **Simulated sessions** from held-out users (their whole training history), slates of 10, at most
  50 steps: the click rate and return of the random policy against SASRec's; and, with slates of 1,
  the return of the best constant-item policy (the same item every step, never masked; the best of
  the 20 most popular and the 20 best-rated items) against most-popular's (masked to unconsumed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.agents.baselines import (
    GreedyAgent,
    MostPopularAgent,
    RandomAgent,
    RandomConfig,
    SequenceModelAgent,
    SequenceModelConfig,
)
from recarena.data.interactions import LogSplit
from recarena.evaluation.fidelity import logged_session_statistics, session_summary
from recarena.evaluation.formatting import format_interval, format_number
from recarena.evaluation.histories import EvalQueries, batches, build_queries, query_batch
from recarena.evaluation.ranking import evaluate_ranking
from recarena.evaluation.simulated import evaluate_simulated
from recarena.simulators.composed import ComposedSimulator
from recarena.simulators.sessions import SESSION_GAP_SECONDS

SLATE_SIZE = 10
DISTRACTORS = ("popularity", "top50", "uniform")
HISTORY_LENGTH = 50
RELIABILITY_BINS = 10
COLD_EVENTS = 5
"""Held-out items with at most this many training events count as cold."""


class ChoiceModelAgent(Agent):
    """The learned simulator's next-item model as a ranker: ``log P(next = i | history)``."""

    name = "choice_model"

    def __init__(self, simulator: ComposedSimulator) -> None:
        self.simulator = simulator
        self.n_items = simulator.n_items

    @torch.no_grad()
    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        choice = self.simulator.choice_model
        history = observation["history"].to(self.simulator.device)
        responses = observation["responses"].to(self.simulator.device)
        state = choice.initial_state(history[:, -choice.window :], responses[:, -choice.window :])
        return choice.model.network.logits(state, choice.table())

    def save(self, directory: str | Path) -> None:  # pragma: no cover - not a trainable agent
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> ChoiceModelAgent:  # pragma: no cover
        raise NotImplementedError


class SimulatorGreedyAgent(Agent):
    """Greedy on a simulator: each item's expected reward if shown alone to the simulated user now."""

    name = "simulator_greedy"

    def __init__(self, simulator: ComposedSimulator, chunk: int = 256, reward: str | None = None) -> None:
        self.simulator = simulator
        self.n_items = simulator.n_items
        self.chunk = chunk
        self.reward = reward  # None: the simulator's own reward

    @torch.no_grad()
    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        sim = self.simulator
        out = []
        for rows in batches(observation["history"].shape[0], self.chunk):
            rows_t = torch.as_tensor(rows)
            state = sim.state_from_history(
                observation["user"][rows_t], observation["history"][rows_t], observation["responses"][rows_t]
            )
            items = torch.arange(sim.n_items, device=sim.device).expand(len(rows), -1)
            value = sim.expected_reward(state, items, reward=self.reward)
            # break ties between items of equal value (e.g. reward 0) by the click probability
            out.append(value + 1e-6 * sim.expected_reward(state, items, reward="click"))
        return torch.cat(out)

    def save(self, directory: str | Path) -> None:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> SimulatorGreedyAgent:  # pragma: no cover
        raise NotImplementedError


def draw_distractors(
    kind: str,
    consumed: torch.Tensor,
    target: torch.Tensor,
    popularity: torch.Tensor,
    n: int,
    generator: torch.Generator,
    top: int = 50,
) -> torch.Tensor:
    """Int64 [B, n] distinct distractors per row among unconsumed items other than ``target``."""
    allowed = ~consumed.clone()
    allowed[torch.arange(len(target)), target] = False
    if kind == "popularity":
        weights = popularity.unsqueeze(0) * allowed
    elif kind == "top50":
        top_items = torch.argsort(-popularity, stable=True)[:top]
        in_top = torch.zeros_like(popularity, dtype=torch.bool)
        in_top[top_items] = True
        weights = (allowed & in_top).to(torch.float32)
        short = weights.sum(1) < n  # users who consumed most of the top: widen to the next most popular
        if bool(short.any()):
            ranked = torch.argsort(-popularity, stable=True)
            wider = torch.zeros_like(popularity, dtype=torch.bool)
            wider[ranked[: top * 4]] = True
            weights[short] = (allowed[short] & wider).to(torch.float32)
    elif kind == "uniform":
        weights = allowed.to(torch.float32)
    else:
        raise ValueError(f"unknown distractor kind {kind!r}; choose from {DISTRACTORS}")
    return torch.multinomial(weights, n, replacement=False, generator=generator)


@torch.no_grad()
def slate_choice(
    queries: EvalQueries,
    item_embeddings: torch.Tensor,
    popularity: torch.Tensor,
    simulators: dict[str, ComposedSimulator],
    sasrec: SequenceModelAgent,
    seed: int = 0,
    batch_size: int = 512,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """P(real next item) on slates of the real item + 9 distractors of each kind; and, for the
    popularity slates, every slate item's probability and whether it was the real item."""
    results: dict[str, Any] = {}
    reliability: dict[str, dict[str, list[np.ndarray]]] = {}
    for kind_index, kind in enumerate(DISTRACTORS):
        generator = torch.Generator().manual_seed(seed + kind_index)
        sums: dict[str, list[np.ndarray]] = {}
        for index in batches(len(queries), batch_size):
            batch = query_batch(queries, index, HISTORY_LENGTH, item_embeddings)
            distractors = draw_distractors(kind, batch.consumed, batch.target, popularity, SLATE_SIZE - 1, generator)
            slate = torch.cat([batch.target.unsqueeze(1), distractors], dim=1)
            real = torch.zeros_like(slate, dtype=torch.bool)
            real[:, 0] = True
            probabilities: dict[str, torch.Tensor] = {}
            for name, sim in simulators.items():
                state = sim.state_from_history(
                    batch.observation["user"], batch.observation["history"], batch.observation["responses"],
                    consumed=batch.consumed,
                )
                p = sim.choice_probabilities(state, slate.to(sim.device)).cpu()
                probabilities[name] = p
            scores = sasrec.scores(batch.observation).cpu().gather(1, slate)
            probabilities["sasrec"] = torch.cat([torch.softmax(scores, dim=1), torch.zeros(len(index), 1)], dim=1)
            for name, p in probabilities.items():
                sums.setdefault(f"{name}:real", []).append(p[:, 0].numpy())
                sums.setdefault(f"{name}:none", []).append(p[:, -1].numpy())
                if kind == "popularity":
                    reliability.setdefault(name, {"p": [], "real": []})
                    reliability[name]["p"].append(p[:, :-1].reshape(-1).numpy())
                    reliability[name]["real"].append(real.reshape(-1).numpy())
        table: dict[str, Any] = {"chance": 1.0 / SLATE_SIZE}
        for key in sums:
            name, what = key.split(":")
            values = np.concatenate(sums[key])
            entry = table.setdefault(name, {})
            entry[f"p_{what}"] = float(values.mean())
        for name in table:
            if name == "chance":
                continue
            real_p = np.concatenate(sums[f"{name}:real"])
            none_p = np.concatenate(sums[f"{name}:none"])
            table[name]["p_real_given_click"] = float(np.mean(real_p / np.clip(1.0 - none_p, 1e-12, None)))
            if kind == "popularity":
                table[name]["log_loss"] = float(np.mean(-np.log(np.clip(real_p, 1e-12, None))))
        results[kind] = table
    curves = {
        name: {"p": np.concatenate(v["p"]), "real": np.concatenate(v["real"])} for name, v in reliability.items()
    }
    return results, curves


def reliability_table(p: np.ndarray, real: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, float]]:
    """Equal-width probability bins: mean predicted probability, observed frequency, count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"bin": b, "mean_p": float(p[mask].mean()), "observed": float(real[mask].mean()), "n": int(mask.sum())})
    return rows


def expected_calibration_error(rows: list[dict[str, float]]) -> float:
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["mean_p"] - r["observed"]) for r in rows) / max(total, 1))


def plot_reliability(curves: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    from recarena.evaluation.report import _pyplot, _save

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5.0))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, rows in curves.items():
        axis.plot([r["mean_p"] for r in rows], [r["observed"] for r in rows], marker="o", label=name)
    axis.set_xlabel("predicted probability of choosing the slate item")
    axis.set_ylabel("share that were the real next item")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="upper left")
    _save(figure, path)


@torch.no_grad()
def constant_item_return(
    simulator: ComposedSimulator, users: np.ndarray, item: int, max_steps: int = 50, seed: int = 0
) -> dict[str, float]:
    """Mean return and click rate of showing ``item`` alone every step (never masked) to sessions
    starting from ``users``' whole training histories, until they leave or ``max_steps``."""
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    state = simulator.start_from(torch.as_tensor(users, dtype=torch.int64), generator)
    active = torch.ones(state.batch_size, dtype=torch.bool, device=state.device)
    total = torch.zeros(state.batch_size, dtype=torch.float64, device=state.device)
    clicks = steps = 0.0
    slate = torch.full((state.batch_size, 1), item, dtype=torch.int64, device=state.device)
    for _ in range(max_steps):
        if not bool(active.any()):
            break
        outcome = simulator.step(state, slate, generator)
        total += active * outcome.reward.to(torch.float64)
        clicks += float((active & outcome.clicked).sum())
        steps += float(active.sum())
        active &= ~outcome.left
    return {"return": float(total.mean()), "ctr": clicks / max(steps, 1.0)}


def run_choice_report(
    split: LogSplit,
    simulators: dict[str, ComposedSimulator],
    item_embeddings: torch.Tensor,
    sasrec_config: dict[str, Any] | None = None,
    n_sim_users: int = 1024,
    max_steps: int = 50,
    n_constant_candidates: int = 20,
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
    extra_choice_models: dict[str, ComposedSimulator] | None = None,
) -> dict[str, Any]:
    """The choice section of the fidelity report; ``simulators``: ``{"rating": ..., "learned": ...}``
    built on ``split`` (its training log); ``extra_choice_models``: more learned simulators whose
    next-item models are ranked too (e.g. ``{"choice_model_no_text": ...}``). Writes
    ``reliability.png`` under ``out``."""
    started = time.perf_counter()
    train = split.train
    n_items = train.n_items
    learned, rating = simulators["learned"], simulators["rating"]
    popularity = torch.as_tensor(train.item_counts(), dtype=torch.float32)
    queries = build_queries(split)
    report: dict[str, Any] = {
        "protocol": "leave-last-out; queries: each user's last event, history = training + validation events",
        "queries": len(queries),
        "choice_utility": learned.choice_fit,
        "choice_model_fit": {k: v for k, v in learned.next_item_model.fit_info.items() if k != "history"},
    }

    most_popular = MostPopularAgent(n_items).fit(train)
    sasrec = SequenceModelAgent(n_items, SequenceModelConfig(**(sasrec_config or {})))
    t = time.perf_counter()
    sasrec.fit(train, item_embeddings, progress=progress)
    report["sasrec_fit"] = {"seconds": round(time.perf_counter() - t, 1), "config": sasrec_config or {}}

    rankers: dict[str, Agent] = {
        "most_popular": most_popular,
        "sasrec": sasrec,
        "choice_model": ChoiceModelAgent(learned),
        "greedy_rating_simulator": GreedyAgent(n_items, preference_model=rating.preference_model),
        "greedy_learned_simulator": SimulatorGreedyAgent(learned),
        "greedy_learned_simulator_click_reward": SimulatorGreedyAgent(learned, reward="click"),
    }
    for name, sim in (extra_choice_models or {}).items():
        rankers[name] = ChoiceModelAgent(sim)
    ranking = {}
    cold = train.item_counts()[queries.target] <= COLD_EVENTS  # held-out items with few training events
    report["cold_queries"] = int(cold.sum())
    for name, agent in rankers.items():
        result = evaluate_ranking(agent, queries, item_embeddings, history_length=HISTORY_LENGTH, n_bootstrap=200, seed=seed)
        ranks = result.per_query_ranks[cold]
        ranking[name] = {"hr10": result.metrics["HR@10"], "ndcg10": result.metrics["NDCG@10"],
                         "hr10_interval": list(result.intervals["HR@10"]), "seconds": round(result.seconds, 1),
                         "hr10_cold": float((ranks < 10).mean()) if len(ranks) else None,
                         "ndcg10_cold": float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else None}
    report["ranking"] = ranking

    slates, curves = slate_choice(queries, item_embeddings, popularity, {"rating": rating, "learned": learned}, sasrec, seed)
    report["slate_choice"] = slates
    calibration = {}
    for name, curve in curves.items():
        rows = reliability_table(curve["p"], curve["real"])
        calibration[name] = {"log_loss": slates["popularity"][name]["log_loss"], "ece": expected_calibration_error(rows), "bins": rows}
    report["calibration"] = calibration
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_reliability(
            {f"{name} (log-loss {c['log_loss']:.3f})": c["bins"] for name, c in calibration.items()},
            out / "reliability.png",
            f"{split.full.name}: real next item + 9 popularity distractors ({len(queries)} users)",
        )
        report["calibration_plot"] = "reliability.png"

    rng = np.random.default_rng(seed)
    report["logged_sessions"] = logged_session_statistics(train, SESSION_GAP_SECONDS) | {"log": "training part"}
    eligible = np.unique(queries.user)  # the held-out users
    users = np.sort(rng.choice(eligible, size=min(n_sim_users, len(eligible)), replace=False))
    sessions: dict[str, Any] = {}
    for sim_name, sim in simulators.items():
        for agent_name, agent in (("random", RandomAgent(n_items, RandomConfig(seed=seed))), ("sasrec", sasrec), ("most_popular", most_popular)):
            result = evaluate_simulated(agent, sim, users=users, k=SLATE_SIZE, max_steps=max_steps, seed=seed, n_bootstrap=200)
            sessions[f"{sim_name}:{agent_name}"] = {
                "ctr": result.metrics["ctr"], "return": result.metrics["episodic_return"],
                "session_length": result.metrics["session_length"], "ctr_interval": list(result.intervals["ctr"]),
                "items": session_summary(result.chosen, result.liked, result.repeats.tolist(), train.items.genres),
            }
    report["sessions_slate10"] = sessions

    ranked_popular = torch.argsort(-popularity, stable=True)[:n_constant_candidates].tolist()
    population = GreedyAgent(n_items, preference_model=rating.preference_model).population_scores()
    ranked_rating = torch.argsort(-population, stable=True)[:n_constant_candidates].tolist()
    candidates = list(dict.fromkeys(ranked_popular + ranked_rating))
    constant: dict[str, Any] = {}
    for sim_name, sim in simulators.items():
        returns = {item: constant_item_return(sim, users, item, max_steps, seed) for item in candidates}
        best = max(returns, key=lambda item: returns[item]["return"])
        popular = evaluate_simulated(most_popular, sim, users=users, k=1, max_steps=max_steps, seed=seed, n_bootstrap=200)
        constant[sim_name] = {
            "best_constant_item": int(best),
            "best_constant_title": train.items.title[best],
            "best_constant_return": returns[best]["return"],
            "best_constant_ctr": returns[best]["ctr"],
            "most_popular_return": popular.metrics["episodic_return"],
            "most_popular_ctr": popular.metrics["ctr"],
            "candidates": len(candidates),
        }
    report["constant_item_slate1"] = constant
    report["sim_users"] = int(len(users))
    report["max_steps"] = max_steps
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def format_choice_tables(report: dict[str, Any]) -> str:
    """Markdown tables of the choice section."""
    lines = ["## Choice (leave-last-out: each user's held-out last item)", ""]
    weights = report.get("choice_utility") or {}
    if weights:
        info = weights.get("info", {})
        lines += [
            f"Fitted utility (validation events: {info.get('n_events')}, {info.get('n_slates')} constructed slates, "
            f"log-loss {format_number(info.get('log_loss_start'))} -> {format_number(info.get('log_loss'))}): w_choice {format_number(weights['choice'])}, "
            f"w_rating {format_number(weights['rating'])}, w_boredom {format_number(weights['boredom'])}, no-choice {format_number(weights['no_choice'])}; "
            f"fitted response boredom penalty {format_number(weights.get('response_penalty'))}",
            "",
        ]
    answers = weights.get("answers")
    if answers:
        info = answers.get("info", {})
        lines += [
            f"Calibrated answers (ordered probit, {info.get('n_events')} {info.get('events')} events): mu = "
            f"{format_number(answers['a'])} * predicted + {format_number(answers['b'])}, sd {format_number(answers['sd'])}; like rate of the "
            f"validation picks: real {format_number(info.get('real_like_rate'), 3)}, calibrated {format_number(info.get('calibrated_like_rate'), 3)} "
            f"(drawn {format_number(info.get('drawn_like_rate'), 3)}), mean prediction >= 4 {format_number(info.get('mean_prediction_like_rate'), 3)}",
            "",
        ]
    leave = weights.get("leave")
    if leave:
        edges = leave["position_edges"]
        buckets = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip([0, *edges], edges, strict=False)] + [f"{edges[-1]}+"]
        lines += [f"Leave hazard after a chosen item (sessions of the training log split at gaps > {leave['gap_seconds']} s: "
                  f"{leave['sessions']} sessions, {leave['events']} events), by position in the session:", "",
                  "| position | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets),
                  "| liked | " + " | ".join(format_number(v, 3) for v in leave["hazard_liked"]) + " |",
                  "| not liked | " + " | ".join(format_number(v, 3) for v in leave["hazard_not_liked"]) + " |", ""]
    lines += ["### full ranking", "", f"| ranker | HR@10 | NDCG@10 | HR@10 95% interval | cold HR@10 ({report.get('cold_queries')} queries, <= {COLD_EVENTS} training events) |",
              "|---|---|---|---|---|"]
    for name, r in report["ranking"].items():
        lo, hi = r["hr10_interval"]
        lines.append(f"| {name} | {format_number(r['hr10'])} | {format_number(r['ndcg10'])} | {format_interval((lo, hi))} | {format_number(r.get('hr10_cold'))} |")
    lines += ["", "### slate choice: P(real next item) on slates of the real item + 9 distractors", "",
              "| distractors | chance | rating-only user | (given a click) | learned user | (given a click) | learned P(none) | SASRec softmax |",
              "|---|---|---|---|---|---|---|---|"]
    for kind, t in report["slate_choice"].items():
        lines.append(
            f"| {kind} | {format_number(t['chance'], 3)} | {format_number(t['rating']['p_real'], 3)} | {format_number(t['rating']['p_real_given_click'], 3)} | "
            f"{format_number(t['learned']['p_real'], 3)} | {format_number(t['learned']['p_real_given_click'], 3)} | {format_number(t['learned']['p_none'], 3)} | "
            f"{format_number(t['sasrec']['p_real'], 3)} |"
        )
    lines += ["", "### calibration (popularity slates)", "", "| model | log-loss | ECE |", "|---|---|---|"]
    for name, c in report["calibration"].items():
        lines.append(f"| {name} | {format_number(c['log_loss'])} | {format_number(c['ece'])} |")
    lines += ["", f"### simulated sessions ({report['sim_users']} held-out users, slates of 10, <= {report['max_steps']} steps)", "",
              "| simulator | policy | click rate | return | session length |", "|---|---|---|---|---|"]
    for key, s in report["sessions_slate10"].items():
        sim_name, agent = key.split(":")
        lines.append(f"| {sim_name} | {agent} | {format_number(s['ctr'], 3)} | {format_number(s['return'], 2)} | {format_number(s['session_length'], 1)} |")
    logged = report.get("logged_sessions")
    if logged:
        lines += ["", f"### items chosen per session: simulated (<= {report['max_steps']} steps) vs the training log's sessions "
                      f"(split at gaps > {logged['gap_seconds']} s)", "",
                  "| sessions of | sessions | mean | p10 / p25 / median / p75 / p90 | <= 1 item | like rate | genre spread (first 5) "
                  "| genre entropy, bits | repeat share |", "|---|---|---|---|---|---|---|---|---|"]
        rows = [("logged", logged)] + [(key.replace(":", ", "), s["items"]) for key, s in report["sessions_slate10"].items() if "items" in s]
        for name, summary in rows:
            quantiles = " / ".join(format_number(v, 0) for v in (summary["length_quantiles"] or {}).values())
            lines.append(f"| {name} | {summary['sessions']} | {format_number(summary['mean_items'], 1)} | {quantiles} | "
                         f"{format_number(summary['share_at_most_one'], 3)} | {format_number(summary['like_rate'], 3)} | "
                         f"{format_number(summary['genre_spread'], 2)} | {format_number(summary['genre_entropy'], 2)} | "
                         f"{format_number(summary['repeat_share'], 3)} |")
        by_position = [(name, summary["like_rate_by_position"]) for name, summary in rows if summary.get("like_rate_by_position")]
        if by_position:
            buckets = list(by_position[0][1])
            lines += ["", "like rate (likes per chosen item) by position in the session:", "",
                      "| sessions of | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
            lines += [f"| {name} | " + " | ".join(format_number(rates[b], 3) for b in buckets) + " |" for name, rates in by_position]
    lines += ["", "### constant item vs most-popular (slates of 1)", "",
              "| simulator | best constant item | its return | most-popular return |", "|---|---|---|---|"]
    for sim_name, c in report["constant_item_slate1"].items():
        lines.append(
            f"| {sim_name} | {c['best_constant_item']} ({c['best_constant_title']}) | {format_number(c['best_constant_return'], 2)} | "
            f"{format_number(c['most_popular_return'], 2)} |"
        )
    lines.append("")
    return "\n".join(lines)


def choice_report_for_source(
    data: str,
    out: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    sasrec_config: dict[str, Any] | None = None,
    n_sim_users: int = 1024,
    progress: bool = True,
    text_ablation: bool = False,
) -> dict[str, Any]:
    """:func:`run_choice_report` for a ``load_logs`` source: the env ids' own simulators (``logged``,
    learned choice, and ``logged-rating``) on its leave-last-out split, with the preference and
    next-item models from the on-disk cache (fitted there once, on the training part). With
    ``text_ablation``, a next-item model without the LLM text encodings is fitted (and cached) too
    and ranked as ``choice_model_no_text``."""
    import recarena.simulators as simulators
    from recarena.simulators.preference_store import logged_simulator_arguments

    split, learned_config = logged_simulator_arguments(data, {})
    _, rating_config = logged_simulator_arguments(data, {"choice": {"model": "rating"}})
    built = {
        "rating": simulators.make("logged-rating", split, device=device, **rating_config),
        "learned": simulators.make("logged", split, device=device, **learned_config),
    }
    extra = {}
    if text_ablation:
        no_text = {"choice": {"sequence": {"use_text": False}}}
        _, no_text_config = logged_simulator_arguments(data, no_text)
        extra["choice_model_no_text"] = simulators.make("logged", split, device=device, **no_text_config)
    report = run_choice_report(
        split, built, built["learned"].item_embeddings.cpu(), sasrec_config=sasrec_config,
        n_sim_users=n_sim_users, seed=seed, out=out, progress=progress, extra_choice_models=extra,
    )
    report["models"] = {"preference_path": learned_config.get("preference_path"), "choice_path": learned_config.get("choice_path")}
    return report
