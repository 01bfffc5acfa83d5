"""``recarena fidelity``: how well the preference model and the simulator reproduce held-out users.

The report itself is :mod:`recarena.evaluation.fidelity`; this module is its command line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from recarena.cli.help import HelpFormatter
from recarena.core.config import parse_override
from recarena.core.errors import ConfigError, RecarenaError
from recarena.core.io import atomic_write_json, atomic_write_text
from recarena.core.seeding import configure_torch_threads, resolve_device, seed_everything
from recarena.data.spec import DataSpec, data_argument, data_spec
from recarena.evaluation.fidelity import (
    COLD_THRESHOLD,
    MIN_USER_RATINGS,
    SESSION_GAP_SECONDS,
    VARIANTS,
    format_tables,
    llm_judgements,
    make_split,
    preference_config,
    run_report,
)
from recarena.llm import EncoderConfig, encode_items, encode_texts, user_profile_texts


def build_parser(prog: str = "recarena fidelity") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--data", required=True, metavar="SPEC",
        help="the logs: a bundled name (ml-100k, ml-1m), a log file or folder, a YAML/JSON data spec file or an "
             "inline mapping '{path: ..., columns: {...}}' (as train.py --data); they need ratings",
    )
    parser.add_argument("--out", required=True, help="output directory for report.json and report.md")
    parser.add_argument("--split", default="user-last", choices=["user-last", "leave-last-out", "temporal"])
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of id,text,combined"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default: PreferenceConfig's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold-threshold", type=int, default=COLD_THRESHOLD)
    parser.add_argument("--min-user-ratings", type=int, default=MIN_USER_RATINGS)
    parser.add_argument(
        "--encoder", default="minilm", help="text encoder model (name, local path or cached HF id)"
    )
    parser.add_argument(
        "--user-text",
        action="store_true",
        help="also encode each user's written profile (llm.user_profile_texts)",
    )
    parser.add_argument(
        "--judge-pairs", type=int, default=0, help="LLM-judged (user, item) pairs to distil (0 = off)"
    )
    parser.add_argument("--judge-model", default="smollm2")
    parser.add_argument("--distill-weight", type=float, default=0.5)
    parser.add_argument("--no-simulation", action="store_true", help="skip the simulated-session comparison")
    parser.add_argument("--session-gap", type=int, default=SESSION_GAP_SECONDS, metavar="SECONDS",
                        help="logged events of a user more than this far apart start a new session")
    parser.add_argument(
        "--panel", metavar="EVALUATE_OUT_DIR", default=None,
        help="add the policy-ranking agreement (simulated return vs held-out NDCG@K, HR@K and replay over the "
             "policies of an evaluate.py report, with bootstrap intervals, and agreement.png) from that report's "
             "report.json and per_user.npz",
    )
    parser.add_argument(
        "--no-choice", action="store_true",
        help="skip the choice section (learned vs rating-only simulated users, SASRec, most-popular; leave-last-out)",
    )
    parser.add_argument("--choice-users", type=int, default=1024, help="held-out users simulated in the choice section")
    parser.add_argument("--sasrec-epochs", type=int, default=None, help="SASRec baseline epochs (default: its config's)")
    parser.add_argument(
        "--choice-text-ablation", action="store_true",
        help="also fit (and cache) the next-item model without LLM text encodings and rank it (cold items too)",
    )
    parser.add_argument(
        "--choice-cold", action="store_true",
        help="add the cold-items section: on the temporal split's held-out events whose item has <= 5 training "
             "events (and 0), HR@10/NDCG@10 of the next-item model with and without LLM text (both fitted once on "
             "the temporal training part and cached), most-popular and SASRec, and the paired difference",
    )
    parser.add_argument("--cache-dir", default=None, help="embedding/judgement cache (default $RECARENA_CACHE)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra PreferenceConfig option"
    )
    return parser


def _load(data: str, prog: str) -> tuple[DataSpec, Any]:
    """The data spec and its log; a bad spec, a bad file or a log without ratings is a one-line error (exit 2)."""
    try:
        spec = data_spec(data_argument(data))
        log = spec.load()
        if not log.has_ratings:
            raise ConfigError(
                f"{spec.path}: the log has no ratings (implicit feedback); the fidelity report compares "
                "rating predictions and rating-based users with held-out ratings, so it needs a log with ratings "
                "(evaluate.py scores policies on implicit logs)"
            )
    except RecarenaError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return spec, log


def _panel(directory: str, log: Any, prog: str) -> dict[str, Any]:
    """The agreement section of an evaluate.py report directory on the same data; a one-line error (exit 2) otherwise."""
    import json

    from recarena.evaluation.panel import agreement_from_report_dir

    try:
        report_path = Path(directory) / "report.json"
        if report_path.is_file():
            fingerprint = json.loads(report_path.read_text()).get("config", {}).get("data_fingerprint")
            if fingerprint is not None and fingerprint != log.fingerprint():
                raise ConfigError(f"{report_path}: the evaluate.py report is of other data than --data "
                                  f"(data fingerprint {fingerprint} vs {log.fingerprint()})")
        return agreement_from_report_dir(directory)
    except RecarenaError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None, prog: str = "recarena fidelity") -> dict[str, Any]:
    args = build_parser(prog).parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = configure_torch_threads(args.threads)
    seed_everything(args.seed)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    for variant in variants:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant '{variant}'; choose from {list(VARIANTS)}")
    base: dict[str, Any] = {
        "device": str(resolve_device(args.device)),
        "seed": args.seed,
        "encoder": args.encoder,
    }
    if args.epochs is not None:
        base["epochs"] = args.epochs
    for text in args.set:
        path, value = parse_override(text)
        base[".".join(path)] = value
    if args.judge_pairs:
        base.update(distill_weight=args.distill_weight, distill_pairs=args.judge_pairs)
    preference_config(base)  # validate before the slow parts

    if args.session_gap < 0:
        raise SystemExit(f"{prog}: error: --session-gap must be >= 0 seconds, got {args.session_gap}")
    started = time.perf_counter()
    spec, log = _load(args.data, prog)
    agreement = _panel(args.panel, log, prog) if args.panel else None  # before the slow parts: a bad panel fails fast
    encoder = EncoderConfig(model=args.encoder, device=base["device"], progress=True)
    item_embeddings = encode_items(log.items, encoder, args.cache_dir)
    split_train = make_split(log, args.split).train
    user_text = None
    if args.user_text:
        user_text = encode_texts(user_profile_texts(split_train), encoder, args.cache_dir)
    judgements = None
    if args.judge_pairs:
        judgements = llm_judgements(split_train, args.judge_pairs, args.seed, args.cache_dir, args.judge_model)
    report = run_report(
        log,
        item_embeddings,
        split_protocol=args.split,
        base_config=base,
        variants=variants,
        cold_threshold=args.cold_threshold,
        min_user_ratings=args.min_user_ratings,
        judgements=judgements,
        user_text_embeddings=user_text,
        simulate=not args.no_simulation,
        session_gap=args.session_gap,
    )
    sasrec = {"device": base["device"], "seed": args.seed}  # the SASRec both choice sections fit
    if args.sasrec_epochs is not None:
        sasrec["epochs"] = args.sasrec_epochs
    if not args.no_choice:
        from recarena.evaluation.choice_fidelity import choice_report_for_source

        report["choice"] = choice_report_for_source(
            spec.to_value(), Path(args.out), device=base["device"], seed=args.seed, sasrec_config=sasrec,
            n_sim_users=args.choice_users, text_ablation=args.choice_text_ablation,
        )
    if args.choice_cold:
        from recarena.evaluation.cold_choice import cold_report_for_source

        report["choice_cold"] = cold_report_for_source(spec.to_value(), device=base["device"], seed=args.seed,
                                                       sasrec_config=sasrec)
    if agreement is not None:
        from recarena.evaluation.agreement import plot_agreement

        report["agreement"] = agreement
        plot_agreement(agreement, Path(args.out) / "agreement.png", f"Simulated return vs held-out measures on {report['dataset']}")
    report["command"] = prog + " " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "device": base["device"],
        "torch": torch.__version__,
    }
    report["encoder"] = args.encoder
    report["user_text"] = bool(args.user_text)
    report["judge_pairs"] = args.judge_pairs
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    tables = format_tables(report)
    if "choice" in report:
        from recarena.evaluation.choice_fidelity import format_choice_tables

        tables += "\n" + format_choice_tables(report["choice"])
    if "choice_cold" in report:
        from recarena.evaluation.cold_choice import format_cold_tables

        tables += "\n" + format_cold_tables(report["choice_cold"])
    if agreement is not None:
        from recarena.evaluation.agreement import agreement_markdown

        tables += "\n" + agreement_markdown(agreement, "agreement.png") + (
            f"\nPanel: `{agreement['source']['report']}`, written by `{agreement['source']['command']}`.\n")
    header = (
        f"# Fidelity report: {report['dataset']}\n\n`{report['command']}`\n\n{report['date']}, "
        f"{report['machine']['platform']}, {threads} torch thread(s), device {base['device']}, "
        f"split {args.split}, {report['total_seconds']} s in all\n\n"
    )
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", header + tables)
    print(header + tables)
    return report


if __name__ == "__main__":
    main()
