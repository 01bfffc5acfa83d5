"""Write your own user simulator and plug it in (run: python examples/custom_simulator.py).

Subclass a simulator with a typed config, override a part of the user (here the response, ``rate``),
register it; ``recarena.simulators.make`` builds it with validated options. Packages register via pyproject:
    [project.entry-points."recarena.simulators"]
    picky = "my_package.picky:PickySimulator"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import recarena.simulators
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator


@dataclass
class PickyConfig(SyntheticConfig):
    penalty: float = 2.0  # rating points every user takes off even-numbered items


@recarena.simulators.register("picky")
class PickySimulator(SyntheticSimulator):
    config_class = PickyConfig

    def rate(self, state, slate):
        ratings, from_log = super().rate(state, slate)
        return (ratings - self.config.penalty * (slate % 2 == 0)).clamp(1.0, 5.0), from_log


def main(users: int = 256, steps: int = 20, seed: int = 0) -> dict[str, float]:
    sim = recarena.simulators.make("picky", penalty=3.0, n_users=100, n_items=50, reward="rating")
    g, state = torch.Generator().manual_seed(seed), sim.init_state(users)
    sim.reset(state, torch.ones(users, dtype=torch.bool), g)
    even_chosen = clicks = 0
    for _ in range(steps):
        out = sim.step(state, torch.randint(0, sim.n_items, (users, 4), generator=g), g)
        clicks += int(out.clicked.sum())
        even_chosen += int((out.clicked & (out.item % 2 == 0)).sum())
        sim.reset(state, out.left, g)  # users who left are replaced by new sessions
    result = {"click_rate": clicks / (users * steps), "even_share_of_clicks": even_chosen / max(clicks, 1)}
    print(recarena.simulators.available(), result)
    return result


if __name__ == "__main__":
    main()
