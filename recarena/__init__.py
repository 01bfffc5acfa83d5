"""recarena: reinforcement-learning recommendation on simulated users built from real logs.

One import package, in layers that import only downwards (checked by ``lint-imports``)::

    core <- data <- llm <- simulators <- envs <- agents <- training <- evaluation <- cli

* :mod:`recarena.core` - errors, seeding, typed configs, atomic files and checkpoints;
* :mod:`recarena.data` - logged interactions: types, loaders, splits;
* :mod:`recarena.llm` - item/user texts, the cached text encoder, the LLM judge;
* :mod:`recarena.simulators` - preference model (and its on-disk store), user simulators, registry;
* :mod:`recarena.envs` - Gymnasium envs and the SB3 adapter;
* :mod:`recarena.agents` - DQN, PPO, Q-learning and baselines behind one ``Agent`` interface;
* :mod:`recarena.training` - run config, run directory, TensorBoard;
* :mod:`recarena.evaluation` - replay, ranking metrics, off-policy estimators, reports;
* :mod:`recarena.cli` - the ``recarena`` command (``train``, ``evaluate``, ``fidelity``).

Importing ``recarena`` registers the Gymnasium ids (``recarena/ML100K-v3``, ``recarena/ML1M-v3`` and
their ``-v2``/``-v1``/``-v0``, ``recarena/Synthetic-v0``) without importing torch; the envs themselves load on ``gymnasium.make``.
"""

from recarena.envs.registration import register_envs

__version__ = "0.1.0"

register_envs()
