"""Held-out users/s of full-ranking evaluation on ML-1M leave-last-out (CPU, and CUDA when present).

    python bench/evaluate_speed.py [--data ml-1m] [--max-users N] [--batch-size 1024]

Scores every one of the 3,706 items for each held-out user with (a) the most-popular baseline and
(b) a model-based scorer (an untrained SASRec-style sequence model: the same forward cost as a
trained one), ranks the target among unconsumed items and computes HR@10/NDCG@10/MRR. Prints
users/s per scorer and device and the ratio against most-popular on CPU measured in the same run.
Item encodings are L2-normalised genres (the encoder is not what is timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from recarena import data  # noqa: E402
from recarena.agents.registry import make_agent  # noqa: E402
from recarena.core.seeding import configure_torch_threads  # noqa: E402
from recarena.evaluation.histories import build_queries  # noqa: E402
from recarena.evaluation.ranking import evaluate_ranking  # noqa: E402
from recarena.evaluation.sources import item_embeddings_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ml-1m")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_torch_threads(args.threads)

    started = time.perf_counter()
    log = data.load_logs(args.data)
    split = data.leave_last_out(log)
    queries = build_queries(split, args.max_users)
    embeddings = item_embeddings_for(log, "genres")
    print(f"data {args.data}: {log.n_users} users, {log.n_items} items, {log.n_events} events; "
          f"{len(queries)} held-out users; setup {time.perf_counter() - started:.1f} s; torch threads {args.threads}")

    popular = make_agent("most_popular", log.n_items).fit(split.train)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    baseline = None
    for device in devices:
        sasrec = make_agent("sasrec", log.n_items, {"device": device})
        for label, agent in (("most_popular", popular), ("sasrec (untrained)", sasrec)):
            evaluate_ranking(agent, queries.subset(range(min(256, len(queries)))), embeddings, (10,), 50,
                             args.batch_size, device, n_bootstrap=1)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            result = evaluate_ranking(agent, queries, embeddings, (10,), 50, args.batch_size, device, n_bootstrap=1)
            rate = len(queries) / result.seconds
            baseline = baseline or rate
            print(f"{device:5s} {label:20s} {len(queries)} users in {result.seconds:6.2f} s = {rate:9.0f} users/s "
                  f"(x{rate / baseline:.2f} vs most_popular cpu)  HR@10 {result.metrics['HR@10']:.4f} "
                  f"NDCG@10 {result.metrics['NDCG@10']:.4f}")


if __name__ == "__main__":
    main()
