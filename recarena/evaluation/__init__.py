"""Offline evaluation of recommendation policies: one policy object, many protocols.

* :mod:`recarena.evaluation.histories` - held-out events with the user's real history (the queries);
* :mod:`recarena.evaluation.metrics` - HR@K, NDCG@K, MRR, coverage, intra-list diversity, novelty, bootstrap;
* :mod:`recarena.evaluation.ranking` - full-ranking evaluation under leave-last-out and the temporal split;
* :mod:`recarena.evaluation.replay` - replay (Li et al. 2011) with bootstrap intervals;
* :mod:`recarena.evaluation.ope` - IPS, SNIPS, DM, DR behind one ``estimate(logged_data, policy)`` interface;
* :mod:`recarena.evaluation.ope_logs` / :mod:`recarena.evaluation.ope_validation` - the estimators on real logs and
  on simulated logs with known truth;
* :mod:`recarena.evaluation.simulated` - simulated return on held-out users;
* :mod:`recarena.evaluation.sources` - data, baselines and run directories for ``evaluate.py``;
* :mod:`recarena.evaluation.report` - terminal table, report.json, report.md with plots, TensorBoard write-back.

Submodules are imported on use (``from evaluation.ranking import evaluate_ranking``) so importing
this package stays cheap.
"""
