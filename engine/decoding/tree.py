"""A tree of drafts verified in one forward pass (after SpecInfer, Miao et al. 2024, and Medusa's
tree attention): several sources' guesses checked at once instead of one chosen beforehand.

Each source (the lookup match, the draft head's chain, ...) proposes a chain of tokens after the
last committed token t0. The chains are merged into a trie: chains that start alike share their
nodes, so

    lookup  a b c d          t0 ─ a ─ b ─ c ─ d
    head    a b x      ->              └─ x
    other   y                   └ y

Nodes are laid out in the order of the chains, the first chain's nodes first (indices 0..),
then each later chain's new nodes, so the first chain alone is exactly the plain chain of
drafts the decoder had before. One pass takes the pending inputs followed by the nodes:

    positions   a node sits one position after its parent (depth d -> pos0 + n_pending + d)
    attention   a node sees the context, the pending inputs, its ancestors and itself
                (tree_visibility), never a sibling branch, so its output row is the model's exact
                next-token distribution after t0 and its own path

Greedy verification (walk) starts at the row of the last pending input: while the argmax of
the current row is the token of one of the current node's children, that child is accepted
and the walk moves to its row; the first argmax without such a child is committed as the
bonus token. The accepted tokens plus the bonus are exactly what one-token-per-pass greedy
decoding gives, whichever branch they came from. The accepted nodes' keys/values are then
moved next to the pending ones (KVBuffer.keep), the rest are overwritten by the next pass.
A stop token is never accepted as a draft (the bonus takes it), as with a chain.

Pure functions over lists; shapes in the docstrings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch


@dataclass
class DraftTree:
    tokens: List[int] = field(default_factory=list)      # [N] a node's token
    parents: List[int] = field(default_factory=list)     # [N] its parent node, -1: the root (t0's row)
    depths: List[int] = field(default_factory=list)      # [N] 0 for the root's children
    chains: List[List[int]] = field(default_factory=list)  # per source chain, its nodes in order

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def merge(cls, chains: Sequence[Sequence[int]], limit: int = 0) -> "DraftTree":
        """The trie of `chains` (each a list of token ids after t0), first chain first; with
        `limit` > 0 no more than that many nodes (a later chain is cut where it would exceed
        it). An empty chain adds nothing and keeps its (empty) entry in `chains`."""
        tree = cls()
        children: Dict[Tuple[int, int], int] = {}        # (parent, token) -> node
        for chain in chains:
            nodes: List[int] = []
            parent = -1
            for tok in chain:
                node = children.get((parent, int(tok)))
                if node is None:
                    if limit and len(tree.tokens) >= limit:
                        break
                    node = len(tree.tokens)
                    tree.tokens.append(int(tok))
                    tree.parents.append(parent)
                    tree.depths.append(tree.depths[parent] + 1 if parent >= 0 else 0)
                    children[(parent, int(tok))] = node
                nodes.append(node)
                parent = node
            tree.chains.append(nodes)
        return tree

    def is_chain(self) -> bool:
        """True when every node's parent is the node before it (a plain chain of drafts)."""
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def path_to(self, node: int) -> List[int]:
        """The nodes from the root's child down to `node` (-1: none)."""
        path: List[int] = []
        while node >= 0:
            path.append(node)
            node = self.parents[node]
        return path[::-1]


def tree_visibility(tree: DraftTree, n_pending: int, past: int, device=None) -> torch.Tensor:
    """bool [T, past + T], T = n_pending + N: the pending inputs see the context and each other
    causally; node i sees the context, every pending input, its ancestors and itself."""
    n = len(tree)
    t = n_pending + n
    mask = torch.zeros(t, past + t, dtype=torch.bool, device=device)
    mask[:, :past + n_pending] = True
    mask[:n_pending, past:past + n_pending] = torch.ones(n_pending, n_pending, dtype=torch.bool,
                                                         device=device).tril()
    for i in range(n):
        j = i
        while j >= 0:
            mask[n_pending + i, past + n_pending + j] = True
            j = tree.parents[j]
    return mask


def tree_positions(tree: DraftTree, pos0: int, n_pending: int) -> List[int]:
    """[T] absolute positions: pending inputs pos0.., node i at pos0 + n_pending + depth_i."""
    return list(range(pos0, pos0 + n_pending)) + [pos0 + n_pending + d for d in tree.depths]


def walk(tree: DraftTree, greedy: Sequence[int], stop_ids=frozenset()) -> Tuple[List[int], List[int]]:
    """greedy [1 + N]: the argmax of t0's row (index 0) and of each node's row (1 + i) ->
    (the accepted nodes in path order, the committed tokens: their tokens and the bonus)."""
    kids: Dict[int, Dict[int, int]] = {}
    for i, (tok, parent) in enumerate(zip(tree.tokens, tree.parents)):
        kids.setdefault(parent, {}).setdefault(tok, i)
    path: List[int] = []
    node = -1
    while True:
        g = int(greedy[node + 1])
        child = kids.get(node, {}).get(g)
        if child is None or g in stop_ids:
            return path, [tree.tokens[i] for i in path] + [g]
        path.append(child)
        node = child


def accepted_per_chain(tree: DraftTree, path: Sequence[int]) -> List[int]:
    """How many leading nodes of each source chain the accepted path holds."""
    on_path = set(path)
    out = []
    for nodes in tree.chains:
        k = 0
        while k < len(nodes) and nodes[k] in on_path:
            k += 1
        out.append(k)
    return out
