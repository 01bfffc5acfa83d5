"""Simulated return: roll a policy out in a user simulator, starting from held-out users.

Each simulated user starts from a real user's history (``users``: the held-out users, starting
from their whole training history) or, when the simulator cannot be pointed at given users, from
the simulator's own user sampler. Sessions run until the user leaves (terminated) or
``max_steps`` (truncated); the policy proposes a slate of ``k`` unconsumed items each step.

Reported: episodic return (sum of rewards per session), CTR (clicks / steps), session length,
coverage of the recommended items, intra-list diversity and novelty of the slates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.envs.observation import build_observation
from recarena.evaluation import metrics
from recarena.simulators.base import Simulator, UserState


@dataclass
class SimulatedResult:
    n_sessions: int
    k: int
    max_steps: int
    users: str
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    session_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    """The user each session started from: the units of :attr:`per_session`."""
    per_session: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    """Per session, (return, 1), (length, 1) and (clicks, steps): what the intervals resample."""
    chosen: list[np.ndarray] = field(default_factory=list, repr=False)
    """Per session, the items the user chose, in order (for session statistics against a log's)."""
    liked: list[np.ndarray] = field(default_factory=list, repr=False)
    """Per session, whether each chosen item (of :attr:`chosen`, in order) was liked."""
    repeats: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    """Per session, how many chosen items the user had consumed before (history or earlier steps)."""

    @property
    def likes(self) -> np.ndarray:
        """Per session, how many chosen items were liked (from :attr:`liked`)."""
        return np.asarray([int(flags.sum()) for flags in self.liked], dtype=np.int64)

    def to_dict(self) -> dict:
        return {
            "n_sessions": self.n_sessions,
            "k": self.k,
            "max_steps": self.max_steps,
            "users": self.users,
            "metrics": self.metrics,
            "intervals": {name: list(ci) for name, ci in self.intervals.items()},
        }


def _start_from_users(simulator: Simulator, users: torch.Tensor, generator: torch.Generator) -> tuple[UserState, str]:
    """Sessions starting from ``users``' whole logged (training) histories, where the simulator can;
    else ``len(users)`` sessions its own sampler draws."""
    try:
        return simulator.start_from(users, generator), "held-out users from their full training history"
    except NotImplementedError:
        state = simulator.init_state(len(users))
        simulator.reset(state, torch.ones(len(users), dtype=torch.bool, device=state.device), generator)
        return state, "sampled by the simulator"


@torch.no_grad()
def evaluate_simulated(
    agent: Agent,
    simulator: Simulator,
    users: np.ndarray | None = None,
    n_sessions: int = 1000,
    k: int = 10,
    max_steps: int = 50,
    self_information: torch.Tensor | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
) -> SimulatedResult:
    """Roll ``agent`` out for one session per user (``users``) or ``n_sessions`` sampled sessions."""
    if agent.n_items != simulator.n_items:
        raise ValueError(f"agent scores {agent.n_items} items but the simulator has {simulator.n_items}")
    if not 1 <= k <= simulator.n_items or max_steps < 1:
        raise ValueError(f"need 1 <= k <= {simulator.n_items} and max_steps >= 1")
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    if users is not None:
        state, origin = _start_from_users(simulator, torch.as_tensor(users, dtype=torch.int64), generator)
    else:
        state = simulator.init_state(n_sessions)
        simulator.reset(state, torch.ones(n_sessions, dtype=torch.bool, device=state.device), generator)
        origin = "sampled by the simulator"
    b = state.batch_size
    device = state.device
    active = torch.ones(b, dtype=torch.bool, device=device)
    episode_return = torch.zeros(b, dtype=torch.float64, device=device)
    clicks = torch.zeros(b, dtype=torch.float64, device=device)
    length = torch.zeros(b, dtype=torch.float64, device=device)
    slates, ild, novel, chosen, liked = [], [], [], [], []
    repeats = torch.zeros(b, dtype=torch.int64, device=device)
    embeddings = simulator.item_embeddings
    if self_information is not None:
        self_information = self_information.to(device)
    for _ in range(max_steps):
        if not bool(active.any()):
            break
        observation = build_observation(state.history, state.history_response, embeddings)
        observation["user"] = state.user  # the logged user each session starts from (greedy uses it)
        slate = agent.act(observation, k, action_mask=~state.consumed).to(device)
        consumed_before = state.consumed.gather(1, slate)  # [B, k]: a repeat if the chosen one was
        outcome = simulator.step(state, slate, generator)
        took = active & outcome.clicked
        chosen.append(torch.where(took, outcome.item, torch.full_like(outcome.item, -1)).cpu())
        liked.append((took & outcome.liked).cpu())
        slot = outcome.chosen_slot.clamp(min=0).unsqueeze(1)
        repeats += (took & consumed_before.gather(1, slot).squeeze(1)).to(torch.int64)
        on = active.to(torch.float64)
        episode_return += on * outcome.reward.to(torch.float64)
        clicks += on * outcome.clicked.to(torch.float64)
        length += on
        shown = slate[active]
        slates.append(shown.cpu())
        if k >= 2:
            ild.append(metrics.intra_list_diversity(shown, embeddings).cpu())
        if self_information is not None:
            novel.append(metrics.novelty(shown, self_information).cpu())
        active &= ~outcome.left  # a user who left stays out (the batch keeps stepping: masked)

    per_session = {
        "episodic_return": episode_return.cpu().numpy(),
        "session_length": length.cpu().numpy(),
    }
    results = {name: float(values.mean()) for name, values in per_session.items()}
    intervals = {
        name: metrics.bootstrap_mean(values, n_bootstrap, alpha, seed + i) for i, (name, values) in enumerate(per_session.items())
    }
    click_total, step_total = clicks.cpu().numpy(), length.cpu().numpy()
    results["ctr"] = float(click_total.sum() / step_total.sum())
    intervals["ctr"] = metrics.bootstrap_ratio(click_total, step_total, n_bootstrap, alpha, seed + 7)
    results[f"coverage@{k}"] = metrics.coverage(torch.cat(slates), simulator.n_items)
    if ild:
        results[f"ILD@{k}"] = float(torch.cat(ild).mean())
    if novel:
        results[f"novelty@{k}"] = float(torch.cat(novel).mean())
    ones = np.ones(b)
    sessions = {"episodic_return": (per_session["episodic_return"], ones), "session_length": (per_session["session_length"], ones),
                "ctr": (click_total, step_total)}
    steps = torch.stack(chosen, dim=1).numpy() if chosen else np.full((b, 0), -1)
    liked_steps = torch.stack(liked, dim=1).numpy() if liked else np.zeros((b, 0), dtype=bool)
    return SimulatedResult(b, k, max_steps, origin, results, intervals, state.user.cpu().numpy(), sessions,
                           chosen=[row[row >= 0] for row in steps],
                           liked=[flags[row >= 0] for row, flags in zip(steps, liked_steps, strict=True)],
                           repeats=repeats.cpu().numpy())
