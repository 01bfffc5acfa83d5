"""Offline evaluation of recommendation policies: one policy object, many protocols.

* :mod:`evaluation.histories` - held-out events with the user's real history (the queries);
* :mod:`evaluation.metrics` - HR@K, NDCG@K, MRR, coverage, intra-list diversity, novelty, bootstrap;
* :mod:`evaluation.ranking` - full-ranking evaluation under leave-last-out and the temporal split;
* :mod:`evaluation.replay` - replay (Li et al. 2011) with bootstrap intervals;
* :mod:`evaluation.ope` - IPS, SNIPS, DM, DR behind one ``estimate(logged_data, policy)`` interface;
* :mod:`evaluation.ope_logs` / :mod:`evaluation.ope_validation` - the estimators on real logs and
  on simulated logs with known truth;
* :mod:`evaluation.simulated` - simulated return on held-out users;
* :mod:`evaluation.sources` - data, baselines and run directories for ``evaluate.py``;
* :mod:`evaluation.report` - terminal table, report.json, report.md with plots, TensorBoard write-back.

Submodules are imported on use (``from evaluation.ranking import evaluate_ranking``) so importing
this package stays cheap.
"""
