"""A two-level (hierarchical) softmax policy head for native PPO over a large catalogue.

The full policy head scores every item, ``softmax(s . e_a + b_a)`` over ``n_items``: each PPO
update sample then pays an ``[D] x [D, n_items]`` product forward and backward, ``n_epochs``
times. This head partitions the items into ``C ~ ceil(sqrt(n_items))`` clusters of near-equal size
``M ~ n_items / C`` and factorises the policy::

    pi(a | s) = pi(c(a) | s) * pi(a | c(a), s)
    pi(c | s)     = softmax_c(s . u_c + b_c)                 over the C clusters
    pi(a | c, s)  = softmax_a(s . e_a + b_a), a in members(c)  over the M members of cluster c

so scoring one sample's action costs ``O((C + M) D) = O(sqrt(n_items) D)``. ``e_a, b_a`` are the
shared item head's representations and biases (``recarena.agents.item_scorer.ItemScorer``); a cluster's
vector ``u_c`` is the mean of its members' representations plus a learned residual (zero at first),
so the top level starts from, and keeps following, what its items say.

**Clusters** (:func:`balanced_clusters`) come from the frozen LLM item encodings: a seeded
randomised PCA to 16 dimensions, then recursive splits of each group at the quantile of its own
principal direction that gives the two halves the right number of items, down to C groups whose
sizes differ by at most one. Deterministic for a seed; about a second for 1e5 items. The padded
``[C, M]`` member table (``-1`` pads) and the item -> (cluster, slot) maps are buffers of the
module, so saved agents and checkpoints carry the exact partition.

**Masks.** A blocked item gets ``MASKED_SCORE`` within its cluster; a cluster with no allowed
member gets it at the top level, so it is never sampled. Masks come from an allowed-items mask
(``allowed``, bool [B, n_items], e.g. the env's) or from the observation's history window
(``history``: computed from the ``H`` history entries alone, never an ``n_items``-wide tensor). A
row that would block everything blocks nothing, as in the full head. What a PPO update needs of a
mask is only the per-sample cluster mask [C] and the taken cluster's member mask [M].

**Entropy.** The exact entropy ``H(c) + sum_c pi(c) H(a | c)`` needs every cluster's members,
i.e. the full catalogue. The update uses ``H(c) + H(a | c_taken)`` with ``c_taken`` the cluster
of the rollout's action: an estimate of the second term sampled under the rollout policy (exact in
expectation at the start of an update), whose gradient ignores how ``pi(c)`` weights it.

**Full log-probabilities** (:meth:`HierarchicalHead.log_probs`, for ranking and greedy acting)
take one full ``[B, D] x [D, n_items]`` matmul: ``log pi(c(a)) + log_softmax`` within ``c(a)``,
unmasked (a caller's mask then removes items from the ranking without renormalising clusters).

**Cost.** Per update sample: a [C] and an [M] softmax and the gather of the taken cluster's
[M, D] representations (:class:`MemberScores`, a reused buffer and hand-written gradients). Per
minibatch, independent of its size: projecting the catalogue's text encodings and regrouping them
by cluster (``O(n_items D)``), as the full head does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from recarena.agents.categorical_head import Workspace, categorical_entropy, sample_categorical
from recarena.agents.item_scorer import MASKED_SCORE


def principal_components(points: torch.Tensor, components: int, seed: int) -> torch.Tensor:
    """[n, q] coordinates of centred ``points`` [n, d] on their top ``q <= components`` principal
    directions, by a seeded randomised range finder (one power iteration): a few ``n x d x 24``
    products instead of a ``d x d`` covariance or a full SVD."""
    n, dim = points.shape
    if dim <= components:
        return points
    q = min(components, n)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn(dim, min(q + 8, dim), generator=generator)
    basis = torch.linalg.qr(points @ probe).Q
    basis = torch.linalg.qr(points @ (points.T @ basis)).Q
    directions = torch.linalg.svd(basis.T @ points, full_matrices=False).Vh[:q]
    return points @ directions.T


def balanced_clusters(item_embeddings: torch.Tensor, n_clusters: int | None = None, seed: int = 0) -> torch.Tensor:
    """Int64 [C, M] member table partitioning ``range(n_items)`` into ``n_clusters`` (default
    ``ceil(sqrt(n_items))``) groups of similar items whose sizes differ by at most one; each row
    lists its members in increasing order, padded with -1 to ``M = ceil(n_items / C)``.

    Recursive balanced splits along each group's principal direction in a 16-d PCA of the
    encodings (see the module docstring); ties keep item order, so the result depends only on the
    encodings and ``seed``.
    """
    n_items = item_embeddings.shape[0]
    n_clusters = n_clusters or math.ceil(math.sqrt(n_items))
    if not 1 <= n_clusters <= n_items:
        raise ValueError(f"n_clusters must be in [1, {n_items}], got {n_clusters}")
    points = item_embeddings.detach().to("cpu", torch.float32)
    points = principal_components(points - points.mean(0), 16, seed)
    base, extra = divmod(n_items, n_clusters)
    sizes = [base + (cluster < extra) for cluster in range(n_clusters)]
    assignment = torch.empty(n_items, dtype=torch.int64)
    groups = [(torch.arange(n_items), 0, n_clusters)]  # (items, clusters [lo, hi) they must fill)
    while groups:
        items, lo, hi = groups.pop()
        if hi - lo == 1:
            assignment[items] = lo
            continue
        middle = (lo + hi) // 2
        centred = points[items] - points[items].mean(0)
        direction = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]
        order = torch.argsort(centred @ direction, stable=True)
        n_left = sum(sizes[lo:middle])
        groups += [(items[order[:n_left]], lo, middle), (items[order[n_left:]], middle, hi)]
    by_cluster = torch.argsort(assignment, stable=True)  # items grouped by cluster, increasing within
    starts = torch.tensor([0, *sizes[:-1]]).cumsum(0)
    slots = torch.arange(n_items) - starts[assignment[by_cluster]]
    members = torch.full((n_clusters, max(sizes)), -1, dtype=torch.int64)
    members[assignment[by_cluster], slots] = by_cluster
    return members


class MemberScores(torch.autograd.Function):
    """``z[b, m] = member_items[cluster[b], m] . state[b]`` [B, M] with hand-written gradients.

    Autograd's own ``bmm`` over the gathered [B, M, D] items runs as B tiny matrix-vector products
    and allocates fresh [B, M, D] tensors for its gradients; here the gather lives in one reused
    buffer, every product is a row vector times a matrix, and the items' gradient is the outer
    products ``grad_z[b] x state[b]`` (built in the same buffer) summed per cluster. Computed in
    float32 (the tensors are small); gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx: Any, member_items: torch.Tensor, state: torch.Tensor, cluster: torch.Tensor,
                workspace: Workspace | None):
        workspace = workspace or Workspace()
        table, vectors = member_items.float(), state.float()
        gathered = workspace.buffer("member_items", (state.shape[0], *table.shape[1:]), table)
        torch.index_select(table, 0, cluster, out=gathered)
        scores = torch.bmm(vectors.unsqueeze(1), gathered.transpose(1, 2)).squeeze(1)
        workspace.generation += 1
        ctx.workspace, ctx.generation = workspace, workspace.generation
        ctx.save_for_backward(vectors, cluster)
        ctx.dtypes, ctx.n_clusters = (member_items.dtype, state.dtype), table.shape[0]
        return scores

    @staticmethod
    def backward(ctx: Any, grad_scores: torch.Tensor):
        if ctx.workspace.generation != ctx.generation:
            raise RuntimeError("MemberScores: the workspace was reused by another forward before this backward")
        vectors, cluster = ctx.saved_tensors
        gathered = ctx.workspace.buffer("member_items", (vectors.shape[0], grad_scores.shape[1], vectors.shape[1]),
                                        vectors)
        grad_scores = grad_scores.float()
        items_dtype, state_dtype = ctx.dtypes
        grad_items = grad_state = None
        if ctx.needs_input_grad[1]:
            grad_state = torch.bmm(grad_scores.unsqueeze(1), gathered).squeeze(1).to(state_dtype)
        if ctx.needs_input_grad[0]:
            torch.mul(grad_scores.unsqueeze(2), vectors.unsqueeze(1), out=gathered)  # the gather is no longer needed
            grad_items = torch.zeros((ctx.n_clusters, *gathered.shape[1:]), device=vectors.device)
            grad_items = grad_items.index_add_(0, cluster, gathered).to(items_dtype)
        return grad_items, grad_state, None, None


class Tables(NamedTuple):
    """The item head's parameters regrouped by cluster (computed once per forward)."""

    member_items: torch.Tensor  # [C, M, D] representations of each cluster's members (pads: item 0's)
    member_bias: torch.Tensor  # [C, M]
    cluster_items: torch.Tensor  # [C, D] u_c
    cluster_bias: torch.Tensor  # [C] b_c


class HierarchicalHead(nn.Module):
    """The cluster structure and top-level parameters of a two-level softmax over the catalogue
    (see the module docstring). Item representations and biases come from the caller's item head.

    Blocked masks are bool, True where an entry may not be picked; ``allowed`` masks are bool
    [B, n_items], True where an item may be picked (a row allowing nothing allows everything).
    """

    def __init__(self, item_embeddings: torch.Tensor, hidden_dim: int, seed: int = 0) -> None:
        super().__init__()
        members = balanced_clusters(item_embeddings, seed=seed)
        n_items = item_embeddings.shape[0]
        real = members >= 0
        cluster_of = torch.empty(n_items, dtype=torch.int64)
        slot_of = torch.empty(n_items, dtype=torch.int64)
        cluster_of[members[real]] = torch.nonzero(real)[:, 0]
        slot_of[members[real]] = torch.nonzero(real)[:, 1]
        self.register_buffer("members", members)
        self.register_buffer("cluster_of", cluster_of)
        self.register_buffer("slot_of", slot_of)
        self.cluster_residual = nn.Parameter(torch.zeros(members.shape[0], hidden_dim))
        self.cluster_bias = nn.Parameter(torch.zeros(members.shape[0]))

    @property
    def n_clusters(self) -> int:
        return self.members.shape[0]

    def _safe_members(self) -> torch.Tensor:
        return self.members.clamp(min=0)

    def _padding(self) -> torch.Tensor:
        return self.members < 0

    # ----------------------------------------------------------------------------- masks

    def blocked_clusters(self, allowed: torch.Tensor | None = None, history: torch.Tensor | None = None,
                         workspace: Workspace | None = None) -> torch.Tensor | None:
        """Bool [B, C]: clusters none of whose members may be picked (None: no mask given).
        ``workspace`` keeps the float copy of ``allowed`` between calls."""
        if allowed is not None:  # count each cluster's allowed members
            counts = torch.zeros(allowed.shape[0], self.n_clusters, device=allowed.device)
            weights = (workspace or Workspace()).buffer("allowed", tuple(allowed.shape), allowed).copy_(allowed)
            blocked = counts.index_add_(1, self.cluster_of, weights) == 0
            return blocked & ~blocked.all(-1, keepdim=True)  # nothing allowed: block nothing
        if history is None:
            return None
        history = history.long()
        earlier = torch.ones(history.shape[1], history.shape[1], dtype=torch.bool, device=history.device).tril_(-1)
        repeated = ((history.unsqueeze(2) == history.unsqueeze(1)) & earlier).any(-1)
        distinct = ((history >= 0) & ~repeated).to(torch.float32)  # each consumed item counted once
        consumed = torch.zeros(history.shape[0], self.n_clusters, device=history.device)
        consumed.scatter_add_(1, self.cluster_of[history.clamp(min=0)], distinct)
        blocked = consumed >= (~self._padding()).sum(1).to(torch.float32)
        return blocked & ~blocked.all(-1, keepdim=True)  # the history covers everything: block nothing

    def blocked_members(self, cluster: torch.Tensor, allowed: torch.Tensor | None = None,
                        history: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [B, M]: the padding and blocked members of each row's ``cluster`` [B]. A cluster
        all of whose members are blocked (only picked when the whole row was unblocked) blocks
        nothing but its padding."""
        padding = self._padding()[cluster]
        members = self._safe_members()[cluster]
        if allowed is not None:
            blocked = ~allowed.to(torch.bool).gather(1, members)
        elif history is not None:
            blocked = (members.unsqueeze(2) == history.long().unsqueeze(1)).any(-1)
        else:
            return padding
        blocked = blocked | padding
        return padding | (blocked & ~blocked.all(-1, keepdim=True))

    def masks_for(self, item: torch.Tensor, allowed: torch.Tensor | None = None,
                  history: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(blocked clusters [B, C] or None, blocked members [B, M] of ``item``'s cluster)."""
        return (self.blocked_clusters(allowed, history),
                self.blocked_members(self.cluster_of[item], allowed, history))

    # ----------------------------------------------------------------------------- distributions

    def tables(self, items: torch.Tensor, item_bias: torch.Tensor) -> Tables:
        """Regroup item representations [n_items, D] and biases [n_items] by cluster."""
        safe, real = self._safe_members(), (~self._padding()).to(items.dtype)
        member_items = items[safe]
        sizes = real.sum(1, keepdim=True)
        cluster_items = (member_items * real.unsqueeze(2)).sum(1) / sizes + self.cluster_residual.to(items.dtype)
        return Tables(member_items, item_bias[safe], cluster_items, self.cluster_bias)

    def cluster_log_probs(self, state: torch.Tensor, tables: Tables,
                          blocked: torch.Tensor | None) -> torch.Tensor:
        """Float [B, C] log pi(c | s)."""
        logits = torch.addmm(tables.cluster_bias.to(state.dtype), state, tables.cluster_items.to(state.dtype).T).float()
        if blocked is not None:
            logits = logits.masked_fill(blocked, MASKED_SCORE)
        return torch.log_softmax(logits, dim=1)

    def member_log_probs(self, state: torch.Tensor, tables: Tables, cluster: torch.Tensor,
                         blocked: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """Float [B, M] log pi(slot | cluster, s) for each row's ``cluster`` [B]."""
        logits = MemberScores.apply(tables.member_items, state, cluster, workspace)
        logits = logits + tables.member_bias.index_select(0, cluster).float()
        return torch.log_softmax(logits.masked_fill(blocked, MASKED_SCORE), dim=1)

    def sample(self, state: torch.Tensor, tables: Tables, uniform: torch.Tensor,
               allowed: torch.Tensor | None = None, history: torch.Tensor | None = None,
               workspace: Workspace | None = None):
        """Draw one item per row: a cluster from pi(c | s), then a member from pi(a | c, s).

        ``uniform`` [B, 2] in [0, 1) drives the two inverse-CDF draws (``workspace``: as in
        :meth:`log_prob_and_entropy`). Returns (item [B], log pi(item) [B], blocked clusters
        [B, C] or None, blocked members [B, M] of the drawn cluster): the masks a PPO update needs
        to re-score the item.
        """
        blocked_clusters = self.blocked_clusters(allowed, history, workspace)
        cluster_log_probs = self.cluster_log_probs(state, tables, blocked_clusters)
        cluster = sample_categorical(cluster_log_probs, uniform[:, 0])
        blocked_members = self.blocked_members(cluster, allowed, history)
        member_log_probs = self.member_log_probs(state, tables, cluster, blocked_members, workspace)
        slot = sample_categorical(member_log_probs, uniform[:, 1])
        log_prob = (cluster_log_probs.gather(1, cluster.unsqueeze(1)) + member_log_probs.gather(1, slot.unsqueeze(1)))
        return self.members[cluster, slot], log_prob.squeeze(1), blocked_clusters, blocked_members

    def log_prob_and_entropy(self, state: torch.Tensor, tables: Tables, item: torch.Tensor,
                             blocked_clusters: torch.Tensor | None, blocked_members: torch.Tensor,
                             workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(item) [B], entropy estimate H(c) + H(a | c(item)) [B]), differentiable, at
        ``O((C + M) D)`` per row. ``blocked_members`` are those of ``item``'s cluster;
        ``workspace`` (one per training loop) keeps the [B, M, D] gather buffer between calls, and
        each call's backward must come before the next call on it."""
        cluster, slot = self.cluster_of[item], self.slot_of[item]
        cluster_log_probs = self.cluster_log_probs(state, tables, blocked_clusters)
        member_log_probs = self.member_log_probs(state, tables, cluster, blocked_members, workspace)
        log_prob = cluster_log_probs.gather(1, cluster.unsqueeze(1)) + member_log_probs.gather(1, slot.unsqueeze(1))
        return log_prob.squeeze(1), categorical_entropy(cluster_log_probs) + categorical_entropy(member_log_probs)

    def next_item_loss(self, state: torch.Tensor, tables: Tables, history: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy ``-log pi(c(t)) - log pi(t | c(t))`` of ``target`` [B], the items of
        ``history`` [B, H] excluded (as ``recarena.agents.item_scorer.next_item_loss`` for the full head).
        Negative targets (an ignore index) are skipped; 0 if every target is."""
        valid = target >= 0
        target = torch.where(valid, target, 0)
        log_prob, _ = self.log_prob_and_entropy(state, tables, target, *self.masks_for(target, history=history))
        return -(log_prob * valid).sum() / valid.sum().clamp(min=1)

    def log_probs(self, state: torch.Tensor, items: torch.Tensor, item_bias: torch.Tensor) -> torch.Tensor:
        """Float [B, n_items] unmasked log pi(a | s) of every item (one full matmul: for ranking)."""
        tables = self.tables(items, item_bias)
        logits = torch.addmm(item_bias.to(state.dtype), state, items.to(state.dtype).T).float()
        within = logits[:, self._safe_members()].masked_fill_(self._padding(), MASKED_SCORE)  # [B, C, M]
        grouped = torch.log_softmax(within, dim=2) + self.cluster_log_probs(state, tables, None).unsqueeze(2)
        return grouped.flatten(1).index_select(1, self.cluster_of * self.members.shape[1] + self.slot_of)
