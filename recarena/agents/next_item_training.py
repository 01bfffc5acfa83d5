"""Supervised next-item training of a :class:`recarena.agents.sequence_encoder.SequenceEncoder`.

One routine for everything that fits the encoder on logged sequences: the SASRec and GRU4Rec
baselines (on a training :class:`~recarena.data.interactions.InteractionLog`) and the pretraining of
the native RL agents' sequence state (on the env's ``logged_sequences``), so "supervised alone" and
"RL on top" start from the same objective.

* :func:`sequence_windows` - each user's newest ``max_length + 1`` events as (inputs, responses,
  targets) windows, targets shifted by one.
* :func:`pca_initialisation` - item id embeddings started at the items' principal-component
  coordinates of their LLM encodings.
* :func:`fit_next_item` - the training loop: length-sorted batches in shuffled order, full or sampled
  softmax, AdamW; deterministic on CPU (forked, seeded torch RNG and an explicit generator).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from recarena.agents.sequence_encoder import SequenceEncoder, next_item_loss
from recarena.core.seeding import torch_generator

Windows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def sequence_windows(offsets: Any, item: Any, rating: Any, max_length: int) -> Windows:
    """(inputs, responses, targets) [n, max_length] windows of the sequences ``item[offsets[u]:offsets[u+1]]``
    (``rating`` beside them): each user's newest ``max_length + 1`` events, inputs (int64 items,
    ``-1`` = padding, left-padded) and their responses (float32 ratings, NaN where there are none) =
    all but the last, targets = all but the first. Users with fewer than 2 events are skipped. Rows
    are sorted by the number of real positions (ascending)."""
    offsets, item, rating = (np.asarray(torch.as_tensor(x).cpu()) for x in (offsets, item, rating))
    lengths = np.diff(offsets)
    users = np.nonzero(lengths >= 2)[0]
    n_real = np.minimum(lengths[users] - 1, max_length)
    order = np.argsort(n_real, kind="stable")
    users, n_real = users[order], n_real[order]
    inputs = np.full((len(users), max_length), -1, dtype=np.int64)
    targets = np.full((len(users), max_length), -1, dtype=np.int64)
    responses = np.zeros((len(users), max_length), dtype=np.float32)
    for row, (user, count) in enumerate(zip(users, n_real, strict=True)):
        span = slice(offsets[user + 1] - count - 1, offsets[user + 1])
        items, ratings = item[span], rating[span]
        inputs[row, max_length - count :] = items[:-1]
        responses[row, max_length - count :] = ratings[:-1]
        targets[row, max_length - count :] = items[1:]
    return torch.from_numpy(inputs), torch.from_numpy(responses), torch.from_numpy(targets)


def pca_initialisation(item_embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """[n_items, dim]: the items' coordinates on the top principal components of their LLM encodings,
    scaled to the default embedding scale (std ``dim ** -0.5``)."""
    centred = item_embeddings.to(torch.float64) - item_embeddings.to(torch.float64).mean(dim=0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    coords = (u[:, :dim] * s[:dim]).to(torch.float32)
    if coords.shape[1] < dim:  # fewer components than dims: pad with zeros
        coords = torch.cat([coords, torch.zeros(coords.shape[0], dim - coords.shape[1])], dim=1)
    return coords / coords.std().clamp(min=1e-12) * dim**-0.5


def fit_next_item(
    model: SequenceEncoder,
    windows: Windows,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax",
    n_negatives: int = 512,
    seed: int = 0,
    logger: Any = None,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Train ``model`` in place on next-item prediction over every position of ``windows``
    (:func:`sequence_windows`); returns one record per epoch (mean loss, wall and CPU seconds). The
    model is left in eval mode. Raises ValueError when there are no windows."""
    inputs, responses, targets = windows
    if len(inputs) == 0:
        raise ValueError("no sequence has at least 2 events")
    device = model.item_text.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch_generator(seed)
    started, started_cpu, history = time.perf_counter(), time.process_time(), []
    step = 0
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        model.train()
        for epoch in range(1, epochs + 1):
            # Rows are sorted by length, so consecutive batches need little padding; shuffle the
            # batch order, and shift the batch boundaries each epoch.
            shift = int(torch.randint(batch_size, (1,), generator=generator))
            bounds = [0] + list(range(shift or batch_size, len(inputs), batch_size)) + [len(inputs)]
            bounds = sorted(set(bounds))
            batches = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
            total_loss, total_positions = 0.0, 0
            for index in torch.randperm(len(batches), generator=generator).tolist():
                start, end = batches[index]
                width = int((inputs[start:end] >= 0).sum(dim=1).max())
                items, ratings, next_items = (part[start:end, -width:].to(device) for part in windows)
                vectors = model.item_vectors()
                hidden = model(items, ratings, vectors)
                real = next_items >= 0
                batch_loss = next_item_loss(hidden[real], next_items[real], vectors, loss, n_negatives, generator)
                positions = int(real.sum())
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                total_loss += float(batch_loss.detach()) * positions
                total_positions += positions
                step += 1
            record = {"epoch": epoch, "loss": total_loss / max(total_positions, 1),
                      "seconds": round(time.perf_counter() - started, 2),
                      "cpu_seconds": round(time.process_time() - started_cpu, 2)}
            history.append(record)
            if logger is not None:
                logger.log_scalar("losses/next_item_ce", record["loss"], step)
            if progress:
                print(f"epoch {epoch}/{epochs}  loss {record['loss']:.4f}  {record['seconds']:.1f}s "
                      f"({record['cpu_seconds']:.1f}s CPU)", flush=True)
    model.eval()
    return history

