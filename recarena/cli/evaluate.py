"""Score trained policies and baselines offline, by several protocols, in one report.

    python evaluate.py RUN_DIR [RUN_DIR ...] [--data NAME_OR_PATH] [--out DIR]
    python evaluate.py --baseline most_popular --baseline sasrec --data ml-1m --out reports/ml1m
    python evaluate.py SWEEP_DIR --baseline most_popular      # a recarena sweep's best configuration, every seed

Protocols (``--protocols``, comma-separated): ``ranking`` (HR@K, NDCG@K, MRR with full ranking
under leave-last-out and the temporal split), ``replay`` (Li et al. 2011 on the temporal split's
held-out events), ``ope`` (IPS, SNIPS, DM, DR on held-out events, plus the estimators' validation
on simulated logs with known truth), ``simulated`` (return in the logged-user simulator from
held-out users; a run is evaluated on the simulator its config.yaml records, baselines next to it on
the same one). Held out means held out: every model that scores a split (baselines, preference
model, simulator) is fitted on that split's training part only, and a trained run is scored only on
the held-out events of the split it trained on (``data.split``), "n/a" elsewhere. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

PROTOCOLS = ("ranking", "replay", "ope", "simulated")
SPLITS = ("leave-last-out", "temporal", "validation")
DEFAULT_SPLITS = ["leave-last-out", "temporal"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _choices(valid: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose a comma-separated subset of {list(valid)}")
        return list(dict.fromkeys(names))

    return parse


def build_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    from recarena.cli.help import HelpFormatter

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR",
                        help="train.py run directories to evaluate; a recarena sweep directory stands for the runs "
                             "of its best configuration (one per seed)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME",
                        help="a baseline to evaluate (repeatable): random, most_popular, greedy, sasrec, gru4rec")
    parser.add_argument("--data", metavar="SPEC",
                        help="the logs to evaluate on: a bundled name (ml-100k, ml-1m), a log file or folder, a YAML/JSON "
                             "data spec file or an inline mapping '{path: ..., columns: {...}}' (as train.py --data); "
                             "default: the runs' data")
    parser.add_argument("--out", default="eval_report", help="output directory for report.json, report.md and plots")
    parser.add_argument("--k", type=_positive_int, default=10, help="cut-off K of HR@K/NDCG@K and the slate size")
    parser.add_argument("--protocols", type=_choices(PROTOCOLS), default=list(PROTOCOLS),
                        help=f"comma-separated subset of {','.join(PROTOCOLS)}")
    parser.add_argument("--splits", type=_choices(SPLITS), default=DEFAULT_SPLITS,
                        help="ranking splits: leave-last-out,temporal (default) and validation (each user's "
                             "second-last event, scored without the test event: for choosing configurations)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (subsets, bootstraps, baselines)")
    parser.add_argument("--max-users", type=_positive_int, default=None, help="evaluate a random subset of N held-out users (default: all)")
    parser.add_argument("--batch-size", type=_positive_int, default=1024, help="queries scored per batch")
    parser.add_argument("--history-length", type=_positive_int, default=50,
                        help="observation history H for baselines (runs use their own config)")
    parser.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("--item-encoder", choices=("minilm", "genres"), default="minilm",
                        help="item encodings for the LLM state: cached MiniLM (default) or genres (no model; tests)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="baseline/preference options, e.g. sasrec.epochs=5 or preference.epochs=10")
    parser.add_argument("--ope-clip", type=float, default=100.0, help="importance-weight clip (<= 0: none)")
    parser.add_argument("--ope-max-events", type=_positive_int, default=6000, help="held-out events used by ope")
    parser.add_argument("--ope-validation-events", type=int, default=100_000,
                        help="logged events of the synthetic validation of the estimators (0: skip)")
    parser.add_argument("--sim-users", type=_positive_int, default=1000, help="held-out users simulated")
    parser.add_argument("--sim-steps", type=_positive_int, default=None,
                        help="session cap in simulated return (default: the runs' env.max_steps, else 50)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write eval/ scalars back to the runs")
    return parser


def _log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    import recarena.data as data
    import recarena.simulators as simulators
    from recarena.core.errors import ConfigError
    from recarena.core.seeding import configure_torch_threads, resolve_device, seed_everything
    from recarena.data.spec import data_argument, data_spec
    from recarena.evaluation import histories, metrics, panel, report, sources
    from recarena.evaluation.ope_logs import evaluate_ope
    from recarena.evaluation.ope_validation import validate_estimators
    from recarena.evaluation.ranking import evaluate_ranking
    from recarena.evaluation.replay import evaluate_replay
    from recarena.evaluation.simulated import evaluate_simulated
    from recarena.evaluation.split_fits import SplitFits
    from recarena.simulators.registry import LOGGED_USERS

    if not args.runs and not args.baseline:
        raise ConfigError("nothing to evaluate: give RUN_DIR(s) and/or --baseline NAME")
    args.runs = _expand_sweeps(args.runs)
    if args.baseline and not args.data and not args.runs:
        raise ConfigError("--baseline without a run directory needs --data NAME_OR_PATH (the data to fit it on)")
    unknown = [name for name in args.baseline if name not in sources.BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; choose from {sorted(sources.BASELINES)}")
    options = sources.baseline_options(args.set)
    seed_everything(args.seed)
    configure_torch_threads()
    device = resolve_device(args.device)

    # Runs first, so bad run directories fail before any expensive work.
    runs = [sources.load_run(run_dir, device=str(device)) for run_dir in args.runs]
    spec = data_spec(data_argument(args.data)) if args.data else data_spec(runs[0].run.data_source)
    if spec.path is None:
        raise ConfigError(f"{runs[0].run.path}: its config.yaml names no data (data.path); pass --data")
    data_source = spec.to_value()
    _log(f"loading {spec.path}" + ("" if isinstance(data_source, str) else f" ({', '.join(list(data_source)[1:])} given)"))
    log = spec.load()
    splits = {"leave-last-out": data.leave_last_out(log), "temporal": data.temporal_split(log)}
    splits["validation"] = data.validation_split(splits["leave-last-out"])
    # The simulated users come from the training part of the split the runs trained on (leave-last-out without runs).
    sim_split = sources.common_split({c.label: c.run.split for c in runs}) if "simulated" in args.protocols else None
    _check_held_out(spec.path, log, splits, args, sim_split)
    for candidate in runs:
        sources.check_run_matches(candidate.run, log, splits[candidate.run.split])
    item_embeddings = sources.item_embeddings_for(log, args.item_encoder)
    self_information = {name: metrics.item_self_information(part.train.item, part.train.user, log.n_items, log.n_users)
                        for name, part in splits.items()}  # novelty: item popularity in each split's training part

    candidates: list[sources.Candidate] = []
    # Simulated return runs on the simulator the runs were trained on (their config.yaml), when they record one.
    greedy = "greedy" in [sources.BASELINES[b] for b in args.baseline]
    if greedy and not log.has_ratings:
        raise ConfigError(f"--baseline greedy ranks items by the preference model's predicted rating, which needs "
                          f"ratings; {spec.path} has none (implicit feedback)")
    need_simulator = greedy or "simulated" in args.protocols
    run_specs = {str(c.run.path): c.run.simulator for c in runs} if need_simulator else {}
    sim_spec = sources.common_simulator_spec(run_specs)
    sim_steps = _session_cap(args.sim_steps, list(run_specs.values()))
    if need_simulator and sim_spec is not None and sim_spec.name not in LOGGED_USERS:
        raise ConfigError(f"the runs were trained on the '{sim_spec.name}' simulator; simulated return and the "
                          f"greedy baseline need the 'logged' one (or an earlier version: {', '.join(LOGGED_USERS[1:])}) "
                          f"(drop 'simulated' from --protocols)")

    def source_on(split: str) -> Any:  # the data spec whose ``split`` is ``split`` (the preference store's cache key)
        return dataclasses.replace(spec, split=split).to_value()

    def preference_for(split_name: str, split: Any) -> Any:
        """A split's preference model, fitted on its training part: the one the runs' simulator config fits
        and caches for that split, else a fresh fit (the validation split: without early stopping)."""
        if sim_spec is not None and split_name in data.TRAINING_SPLITS:
            return sources.simulator_preference_model(sim_spec, source_on(split_name), split, item_embeddings,
                                                      args.item_encoder, options.get("preference"))
        preference = sim_spec.options.get("preference") if sim_spec is not None else None
        overrides = {**(preference if isinstance(preference, dict) else {}), **options.get("preference", {})}
        return sources.fit_preference(split, item_embeddings, overrides)

    # Every model that scores a split is fitted on that split's training part, once, when first needed.
    fits = SplitFits(splits, item_embeddings, preference_for, args.seed, options, _log)
    candidates += [sources.Candidate(name, None, args.history_length) for name in dict.fromkeys(args.baseline)]
    candidates.extend(runs)

    def agent_on(candidate: sources.Candidate, split: str) -> Any:
        """The agent that scores ``split``'s held-out events: a baseline fitted on its training part; a
        trained run only on the split it trained on (None: not scored)."""
        if candidate.run is None:
            return fits.baseline(candidate.label, split)
        return candidate.agent if sources.scores_split(candidate.run.split, split) else None

    def not_scored(candidate: sources.Candidate) -> dict[str, str]:
        return {"not_scored": f"n/a: trained on {candidate.run.split}"}  # type: ignore[union-attr]

    needed = set(args.splits) if "ranking" in args.protocols else set()
    needed |= {"temporal"} if {"replay", "ope"} & set(args.protocols) else set()
    needed |= {sim_split} if sim_split is not None else set()
    queries = {split: histories.build_queries(splits[split], args.max_users, args.seed) for split in needed}
    simulator = None
    if sim_split is not None:
        sim_options = sim_spec.options if sim_spec is not None else {}
        if sim_spec is not None:  # the next-item model the runs' simulator fitted and cached, where it did
            sim_options = sources.with_cached_choice_model(sim_options, source_on(sim_split), args.item_encoder)
        uses_ratings = sources.simulator_uses_ratings(sim_options, log)  # implicit logs: no preference model
        sim_name = sim_spec.name if sim_spec is not None else "logged"  # logged-v2 / -v1: the -v2 / -v1 users
        simulator = simulators.make(sim_name, splits[sim_split], device=device, **sim_options,
                                    components={"preference_model": fits.preference(sim_split) if uses_ratings else None,
                                                "item_embeddings": item_embeddings})
    common = {"batch_size": args.batch_size, "device": device}
    # What every candidate is scored on, chosen once.
    ope_queries = reward_queries = None
    if "ope" in args.protocols:
        ope_queries = queries["temporal"].subset(sources.subsample(len(queries["temporal"]), args.ope_max_events, args.seed))
        # DM/DR's reward model: fitted on the temporal split's validation events (before the test period), not on test events.
        reward_queries = histories.build_queries(data.validation_split(splits["temporal"]))
        reward_queries = reward_queries.subset(sources.subsample(len(reward_queries), args.ope_max_events, args.seed))
    sim_users = np.zeros(0, dtype=np.int64)
    if sim_split is not None:  # held-out users with a training history to start from
        sim_users = np.unique(queries[sim_split].user)
        sim_users = sim_users[splits[sim_split].train.sequence_lengths()[sim_users] > 0]
        if len(sim_users) == 0:
            raise ConfigError(f"{spec.path}: no held-out user of the {sim_split} split has a training history to start a "
                              f"simulated session from; use more data, or --protocols without simulated")
        sim_users = sim_users[sources.subsample(len(sim_users), args.sim_users, args.seed)]
    results: dict[str, Any] = {"candidates": {}}
    per_user: dict[str, dict[str, Any]] = {}  # the values behind the intervals, per candidate: per_user.npz
    for candidate in candidates:
        entry: dict[str, Any] = {"source": str(candidate.run.path) if candidate.run else f"baseline {candidate.label}"}
        units = per_user.setdefault(candidate.label, {})
        h = candidate.history_length
        if "ranking" in args.protocols:
            entry["ranking"] = {}
            for split in args.splits:
                if (agent := agent_on(candidate, split)) is None:
                    entry["ranking"][split] = not_scored(candidate)
                    continue
                _log(f"{candidate.label}: ranking ({split})")
                result = evaluate_ranking(agent, queries[split], item_embeddings, (args.k,), h,
                                          self_information=self_information[split], n_bootstrap=args.bootstrap,
                                          seed=args.seed, **common)
                entry["ranking"][split] = result.to_dict()
                units.update(panel.from_ranking(result, split))
        temporal_agent = agent_on(candidate, "temporal") if {"replay", "ope"} & set(args.protocols) else None
        if "replay" in args.protocols and temporal_agent is None:
            entry["replay"] = not_scored(candidate)
        elif "replay" in args.protocols:
            _log(f"{candidate.label}: replay")
            replayed = evaluate_replay(temporal_agent, queries["temporal"], item_embeddings, args.k, "like", h,
                                       n_bootstrap=args.bootstrap, seed=args.seed, **common)
            entry["replay"] = replayed.to_dict()
            units.update(panel.from_replay(replayed))
        if "ope" in args.protocols and temporal_agent is None:
            entry["ope"] = not_scored(candidate)
        elif "ope" in args.protocols:
            _log(f"{candidate.label}: off-policy estimators")
            entry["ope"] = evaluate_ope(temporal_agent, ope_queries, splits["temporal"].train, item_embeddings, h,
                                        clip=args.ope_clip if args.ope_clip > 0 else None, n_bootstrap=args.bootstrap,
                                        seed=args.seed, reward_queries=reward_queries, **common)
        sim_agent = agent_on(candidate, sim_split) if simulator is not None else None
        if simulator is not None and sim_agent is None:
            entry["simulated"] = not_scored(candidate)
        elif simulator is not None:
            _log(f"{candidate.label}: simulated return")
            simulated = evaluate_simulated(sim_agent, simulator, sim_users, k=args.k, max_steps=sim_steps,
                                           self_information=self_information[sim_split], seed=args.seed, n_bootstrap=args.bootstrap)
            entry["simulated"] = simulated.to_dict()
            units.update(panel.from_simulated(simulated))
        results["candidates"][candidate.label] = entry
    agreement = panel.agreement_section(results, per_user, args.k, args.bootstrap, args.seed)
    if agreement is not None:  # >= 4 candidates with the simulated return and a leave-last-out ranking
        results["agreement"] = agreement

    if "ope" in args.protocols and args.ope_validation_events > 0:
        _log(f"validating the estimators on {args.ope_validation_events} simulated events")
        synthetic = simulators.make("synthetic", seed=args.seed)
        from recarena.evaluation.ope_validation import ContentSimilarityAgent

        results["ope_validation"] = validate_estimators(
            synthetic, ContentSimilarityAgent(synthetic.item_embeddings), n_events=args.ope_validation_events,
            n_true=max(4 * args.ope_validation_events, 100_000), n_bootstrap=min(args.bootstrap, 200), seed=args.seed,
        )
    results["config"] = {
        "data": spec.path, "data_spec": data_source, "n_users": log.n_users, "n_items": log.n_items,
        "item_set_fingerprint": log.item_set_fingerprint(), "data_fingerprint": log.fingerprint(),
        "protocols": args.protocols, "splits": args.splits, "k": args.k, "seed": args.seed,
        "max_users": args.max_users, "item_encoder": args.item_encoder, "device": str(device),
        "fitted_on": _fitted_on(splits, args, sim_split), "runs_trained_on": {c.label: c.run.split for c in runs},
        "simulator": {"source": "the runs' config" if sim_spec is not None else "default logged simulator",
                      "options": sim_spec.options if sim_spec is not None else {}, "max_steps": sim_steps},
        "command": "python evaluate.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    report.write_report(results, args.out, args.k, {c.label: c.run for c in runs})
    panel.write_per_user(Path(args.out) / panel.PER_USER_FILE, per_user)
    if not args.no_tensorboard:
        for candidate in runs:
            scalars = report.eval_scalars(results["candidates"][candidate.label], args.k)
            report.write_back_to_tensorboard(candidate.run.path, scalars, candidate.run.final_step,
                                             report.eval_descriptions(results["candidates"][candidate.label], args.k))
    return results


def _expand_sweeps(paths: list[str]) -> list[str]:
    """Each recarena sweep directory among ``paths`` replaced by its best configuration's run directories."""
    from recarena.evaluation.sweep_report import best_runs, is_sweep_dir

    expanded = []
    for path in paths:
        if is_sweep_dir(path):
            runs = [str(run) for run in best_runs(path)]
            _log(f"{path}: a sweep; scoring its best configuration's runs {[Path(run).name for run in runs]}")
            expanded += runs
        else:
            expanded.append(path)
    return expanded


def _fitted_on(splits: dict[str, Any], args: argparse.Namespace, sim_split: str | None) -> dict[str, str]:
    """What the models scoring each protocol were fitted on (report.json ``config.fitted_on``)."""
    def part(name: str) -> str:
        train = splits[name].train
        return f"the {name} split's training part ({train.n_events} events)"

    fitted = {f"ranking/{name}": part(name) for name in args.splits} if "ranking" in args.protocols else {}
    if "replay" in args.protocols:
        fitted["replay"] = part("temporal")
    if "ope" in args.protocols:
        fitted["ope"] = part("temporal") + "; the DM/DR reward model on its validation events"
    if sim_split is not None:
        fitted["simulated"] = part(sim_split)
    return fitted


def _check_held_out(data_source: str, log: Any, splits: dict[str, Any], args: argparse.Namespace,
                    sim_split: str | None = None) -> None:
    """Refuse, in one line, data whose splits hold out no event for the protocols asked for."""
    from recarena.core.errors import ConfigError

    needed = list(args.splits) if "ranking" in args.protocols else []
    if "replay" in args.protocols or "ope" in args.protocols:
        needed.append("temporal")
    if sim_split is not None:
        needed.append(sim_split)
    empty = [name for name in dict.fromkeys(needed) if splits[name].test.n_events == 0]
    if "ope" in args.protocols and splits["temporal"].valid.n_events == 0:
        raise ConfigError(f"{data_source}: the temporal split's validation part, which the off-policy reward model "
                          f"is fitted on, holds no events; use more data, or --protocols without ope")
    if empty:
        plural = "s hold" if len(empty) > 1 else " holds"
        raise ConfigError(
            f"{data_source}: the {' and '.join(empty)} split{plural} out no events to evaluate on "
            f"({log.n_events} events of {log.n_users} users: too little data); use more data, or other --splits/--protocols"
        )


def _session_cap(requested: int | None, specs: list[Any]) -> int:
    """``--sim-steps``, else the runs' ``env.max_steps`` (they must agree), else 50."""
    from recarena.core.errors import ConfigError

    if requested is not None:
        return requested
    caps = sorted({spec.max_steps for spec in specs})
    if len(caps) > 1:
        raise ConfigError(f"the runs were trained with different session caps {caps}; pass --sim-steps")
    return caps[0] if caps else 50


def main(argv: list[str] | None = None, prog: str = "evaluate.py") -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser(prog).parse_args(argv)
    from recarena.core.errors import RecarenaError, describe_os_error

    started = time.perf_counter()
    try:
        results = run(args)
    except RecarenaError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only --out...: files are written atomically, the old ones stay
        print(f"{prog}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    from recarena.evaluation.report import table

    print(table(results, args.k))
    print(f"\nreport: {Path(args.out) / 'report.md'} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
