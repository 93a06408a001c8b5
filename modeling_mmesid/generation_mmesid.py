# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Generative retrieval over semantic IDs: the ID each item is generated as, the prefix trie of the catalog's IDs and
constrained beam search under it.

An item's generated ID is the codes of `config.generative_modalities` followed by a collision suffix
(`generative_codes`); code `c` at position `d` is token `generative_position_token_ids(config)[d] + c`.
`SIDTrieLogitsProcessor` keeps, at each decoding step, only the codes that continue an existing item's ID, so every
finished beam is a catalog item and the per-step cost does not grow with the catalog beyond a logarithm
(docs/GENERATIVE.md).

Hub-side file: imports only `torch`, `transformers` and the sibling configuration file; it travels with saved models.
"""

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor
from transformers.modeling_outputs import BaseModelOutputWithPast

from .configuration_mmesid import MMESIDConfig, sid_token_id


# transformers >= 5.24 names the key/value cache `cache` (output field and forward argument; `past_key_values` is a
# deprecated alias until 5.40), 5.23 `past_key_values`: the name the installed version defines (modeling_mmesid.py)
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


@torch.no_grad()
def generative_codes(sids: torch.LongTensor, config: MMESIDConfig) -> torch.LongTensor:
    r"""
    The generated ID of every item (`config.generative_id`): the codes of `config.generative_modalities`, then the
    collision suffix, the item's rank by id among the items with the same codes (0 for an item whose codes are
    unique).

    Args:
        sids (`torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`):
            The model's semantic IDs (`model.model.sids`), modalities in `config.modalities` order.
        config ([`MMESIDConfig`]): gives the modalities, `codebook_size` and `generative_id`.

    Returns:
        `torch.LongTensor` of shape `(num_items + 1, config.generative_id_length)` on the CPU; row 0 (padding) is
        zeros.
    """
    size = config.codebook_size
    columns = [config.modalities.index(m) for m in config.generative_modalities]
    sids = sids.to("cpu")
    codes = sids[:, columns, :].reshape(sids.shape[0], -1)  # (num_items + 1, num_generated * num_levels)
    items = codes[1:]
    group = torch.zeros(items.shape[0], dtype=torch.long)
    for column in range(items.shape[1]):  # dense group id of the code tuple, one level at a time
        group = torch.unique(group * size + items[:, column], return_inverse=True)[1]
    order = torch.argsort(group, stable=True)  # items of one group next to each other, by item id
    counts = torch.bincount(group)
    starts = torch.cumsum(counts, 0) - counts
    suffix = torch.empty_like(group)
    suffix[order] = torch.arange(group.numel()) - starts[group[order]]
    if int(counts.max()) > size:
        raise ValueError(
            f"{int(counts.max())} items share one `generative_id={config.generative_id!r}` ID, more than the "
            f"collision suffix can tell apart (`codebook_size`={size}); use `generative_id='combined'`."
        )
    out = torch.zeros(sids.shape[0], config.generative_id_length, dtype=torch.long)
    out[1:, :-1] = items
    out[1:, -1] = suffix
    return out


def generative_position_token_ids(config: MMESIDConfig) -> torch.LongTensor:
    """Token id of code 0 at each position of the generated ID, `(generative_id_length,)`: position
    `j * num_levels + l` uses `<sid_{generative_modalities[j]}_{l}_*>`, the suffix `<sid_{generative_modalities[0]}_0_*>`."""
    ids = [
        sid_token_id(config.sid_token_offset, config.num_levels, config.codebook_size, config.modalities.index(m),
                     level, 0)
        for m in config.generative_modalities
        for level in range(config.num_levels)
    ]
    ids.append(ids[0])
    return torch.tensor(ids, dtype=torch.long)


def generative_token_table(sids: torch.LongTensor, config: MMESIDConfig) -> torch.LongTensor:
    """Token ids of every item's generated ID, `(num_items + 1, generative_id_length)` on the device of `sids`
    (row 0, padding, holds the tokens of code 0)."""
    return (generative_position_token_ids(config) + generative_codes(sids, config)).to(sids.device)


class SIDTrie:
    r"""
    Prefix trie of a catalog's generative IDs, as flat sorted arrays per level (built once per catalog).

    Nodes at depth `d + 1` (after `d + 1` codes) are numbered `0..n_{d+1} - 1` in the order of their sorted keys
    `keys[d] = parent * codebook_size + code`, where `parent` is the node's parent at depth `d` (the root is node 0
    of depth 0). So the children of a node are one contiguous range of `keys[d]`, given by the CSR pointers
    `child_ptr[d]`, and each step of a lookup is one `searchsorted` (`O(log n)`): the per-step cost of constrained
    decoding does not grow with the catalog beyond that logarithm. `counts[d]` is the number of items under each
    node (for excluding a user's history items), `leaf_items` the item of each leaf.

    Memory: about `num_items * id_length * 16` bytes (int64 keys, int32 pointers and counts; ~80 MB for 1,000,000
    items and 5-token IDs).

    Args:
        codes (`torch.LongTensor` of shape `(num_items, id_length)`):
            The ID of items `1..num_items` (row `i` is item `i + 1`), codes in `0..codebook_size - 1`. IDs must be
            unique (the collision suffix makes them so).
        codebook_size (`int`):
            Codes per position.
    """

    def __init__(self, codes: torch.LongTensor, codebook_size: int):
        if codes.dim() != 2 or codes.shape[0] < 1:
            raise ValueError(f"`codes` must have shape (num_items, id_length), got {tuple(codes.shape)}.")
        codes = codes.to("cpu", torch.long)
        if int(codes.min()) < 0 or int(codes.max()) >= codebook_size:
            raise ValueError(f"`codes` must lie in 0..{codebook_size - 1}, got {int(codes.min())}..{int(codes.max())}.")
        self.codebook_size = int(codebook_size)
        self.id_length = int(codes.shape[1])
        self.num_items = int(codes.shape[0])
        self.keys, self.child_ptr, self.counts = [], [], []
        parent = torch.zeros(self.num_items, dtype=torch.long)
        num_parents = 1
        for depth in range(self.id_length):
            key = parent * self.codebook_size + codes[:, depth]
            keys, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
            bounds = torch.arange(num_parents + 1, dtype=torch.long) * self.codebook_size
            self.keys.append(keys)
            self.child_ptr.append(torch.searchsorted(keys, bounds).to(torch.int32))
            self.counts.append(counts.to(torch.int32))
            parent, num_parents = inverse, keys.numel()
        if num_parents != self.num_items:
            raise ValueError(
                f"{self.num_items - num_parents} items share their ID with another item; generative IDs must be unique "
                "(add the collision suffix)."
            )
        self.leaf_items = torch.empty(self.num_items, dtype=torch.int32)
        self.leaf_items[parent] = torch.arange(1, self.num_items + 1, dtype=torch.int32)

    @property
    def nbytes(self) -> int:
        """Memory held by the trie's arrays, in bytes."""
        arrays = [*self.keys, *self.child_ptr, *self.counts, self.leaf_items]
        return sum(a.numel() * a.element_size() for a in arrays)

    def walk(self, codes: torch.LongTensor) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """Node reached by each prefix `codes` `(rows, depth)`: `(node index at that depth, prefix exists)`; the
        root (depth 0) is node 0."""
        rows, depth = codes.shape
        node = torch.zeros(rows, dtype=torch.long, device=codes.device)
        found = torch.ones(rows, dtype=torch.bool, device=codes.device)
        for d in range(depth):
            keys = self.keys[d]
            key = node * self.codebook_size + codes[:, d]
            position = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)
            found &= keys[position] == key
            node = torch.where(found, position, torch.zeros_like(position))
        return node, found

    def children(self, depth: int, nodes: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor, torch.BoolTensor]:
        """Children of `nodes` (at `depth`): `(child node indices, their codes, valid)`, each `(rows, width)` with
        `width <= codebook_size` the most children any of them has."""
        ptr, keys = self.child_ptr[depth], self.keys[depth]
        start, end = ptr[nodes].long(), ptr[nodes + 1].long()
        width = max(int((end - start).max()), 1)
        index = start[:, None] + torch.arange(width, device=nodes.device)[None]  # (rows, width)
        valid = index < end[:, None]
        index = index.clamp(max=keys.numel() - 1)
        return index, keys[index] % self.codebook_size, valid

    def items(self, codes: torch.LongTensor) -> torch.LongTensor:
        """Item of each full ID `codes` `(rows, id_length)`; 0 where the ID is not in the catalog."""
        node, found = self.walk(codes)
        return torch.where(found, self.leaf_items[node].long(), torch.zeros_like(node))

    def paths(self, codes: torch.LongTensor) -> torch.LongTensor:
        """Node of each ID `codes` `(rows, id_length)` at every depth `1..id_length`: `(rows, id_length)`."""
        out = torch.empty_like(codes)
        node = torch.zeros(codes.shape[0], dtype=torch.long)
        for d in range(self.id_length):
            node = torch.searchsorted(self.keys[d], node * self.codebook_size + codes[:, d])
            out[:, d] = node
        return out


class SIDTrieLogitsProcessor(LogitsProcessor):
    r"""
    Constrained decoding of generative IDs: at each step only the codes that continue an existing item's ID (the
    trie's children of the beam's prefix) keep their score, so every finished beam is a catalog item and `num_beams`
    beams are `num_beams` distinct items. Optionally excludes each user's history items: a child whose items are all
    in the history is removed, so no beam can end on one (or dead-end).

    The kept scores are the model's own log-probabilities (a log-softmax over the full vocabulary, which the
    generative head restricts to its SID tokens; the log-softmax `generate`'s beam search already applied is left
    unchanged), with every other code at `-inf` and no renormalization, as in transformers'
    `PrefixConstrainedLogitsProcessor`. So a finished beam's score is `log p(item)` under the model, and excluding
    history items removes their probability instead of handing it to their trie siblings. `renormalize=True`
    renormalizes over the allowed codes at each step instead (a distribution over the remaining catalog that ranks
    items differently: a prefix with one allowed child gets `log 1` whatever the model thought of it).

    Args:
        trie ([`SIDTrie`]): the catalog's IDs.
        position_token_ids (`torch.LongTensor` of shape `(id_length,)`):
            Token id of code 0 at each position of the ID (code `c` is token `position_token_ids[d] + c`).
        prompt_length (`int`, *optional*, defaults to 0):
            Columns of `input_ids` before the generated tokens (0 when `generate` gets `inputs_embeds`).
        num_beams (`int`, *optional*, defaults to 1):
            Rows per user (`generate` puts the beams of a user next to each other).
        excluded_items (`list[list[int]]`, *optional*):
            Items never to generate, per user (the history).
        renormalize (`bool`, *optional*, defaults to `False`):
            Log-softmax over the allowed codes at each step instead of over the full vocabulary (not the model's
            probabilities; kept as an opt-in).
    """

    def __init__(
        self,
        trie: SIDTrie,
        position_token_ids: torch.LongTensor,
        prompt_length: int = 0,
        num_beams: int = 1,
        excluded_items: Sequence[Sequence[int]] | None = None,
        item_codes: torch.LongTensor | None = None,
        renormalize: bool = False,
    ):
        if num_beams < 1:
            raise ValueError(f"`num_beams` must be at least 1, got {num_beams}.")
        self.trie = trie
        self.position_token_ids = position_token_ids.to("cpu", torch.long)
        self.prompt_length = int(prompt_length)
        self.num_beams = int(num_beams)
        self.renormalize = renormalize
        self.excluded_paths = None  # (users, max_excluded, id_length) node per depth, -1 = none
        if excluded_items is not None:
            if item_codes is None:
                raise ValueError("`excluded_items` needs `item_codes` (the ID of every item, row 0 = padding).")
            rows = [sorted({int(i) for i in items if int(i) > 0}) for items in excluded_items]
            width = max([len(r) for r in rows] + [1])
            paths = torch.full((len(rows), width, trie.id_length), -1, dtype=torch.long)
            for user, items in enumerate(rows):
                if items:
                    paths[user, : len(items)] = trie.paths(item_codes[torch.tensor(items)].to("cpu", torch.long))
            self.excluded_paths = paths

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :].cpu()
        depth = generated.shape[1]
        if depth >= self.trie.id_length:
            return scores
        offsets = self.position_token_ids
        parents, found = self.trie.walk(generated - offsets[:depth])
        index, codes, valid = self.trie.children(depth, parents)  # (rows, width)
        valid &= found[:, None]
        if self.excluded_paths is not None:
            users = torch.arange(generated.shape[0]) // self.num_beams
            excluded = self.excluded_paths[users, :, depth]  # (rows, max_excluded)
            hits = (index[:, :, None] == excluded[:, None, :]).sum(-1)  # history items under each child
            valid &= self.trie.counts[depth][index] - hits > 0
        tokens = (offsets[depth] + codes).to(scores.device)
        valid = valid.to(scores.device)
        # the model's log-probabilities: idempotent on the log-softmax that beam search passes in, and the same for
        # raw logits (greedy search, hand-made scores)
        log_probs = scores.log_softmax(dim=-1)
        log_probs = log_probs.masked_fill(torch.isnan(log_probs), float("-inf"))  # a row with no finite score
        picked = log_probs.gather(1, tokens).masked_fill(~valid, float("-inf"))
        if self.renormalize:
            total = torch.logsumexp(picked, dim=-1, keepdim=True)
            picked = torch.where(torch.isfinite(total), picked - total, picked)
        out = torch.full_like(scores, float("-inf"))
        # `amax`: invalid slots may repeat a valid slot's token (clamped index); they carry -inf and never win
        return out.scatter_reduce_(1, tokens, picked, reduce="amax", include_self=True)


def _compact_beams(
    found: torch.LongTensor, beam_scores: torch.FloatTensor
) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """Ranked lists from `generate`'s beams `(users, k)` (item per beam, 0 = no item, and score), best first: a beam
    that is no item, has a non-finite score or repeats an earlier beam's item is dropped, and the kept beams move to
    the front in their order, so padding (item 0, score `-inf`) is only ever at the end of a row and a later item
    keeps its true position."""
    # With fewer candidates than beams, `generate`'s placeholder beams (started at a score of -1e9) repeat a real
    # beam's item: keep each item's first (best) beam only.
    repeated = (found[:, :, None] == found[:, None, :]).tril(diagonal=-1).any(-1)
    valid = (found > 0) & torch.isfinite(beam_scores) & ~repeated
    order = (~valid).to(torch.uint8).argsort(dim=1, stable=True)  # kept beams first, in their order
    items = torch.where(valid, found, torch.zeros_like(found)).gather(1, order)
    scores = torch.where(valid, beam_scores, torch.full_like(beam_scores, float("-inf"))).gather(1, order)
    return items, scores


__all__ = [
    "CACHE_NAME",
    "SIDTrie",
    "SIDTrieLogitsProcessor",
    "generative_codes",
    "generative_position_token_ids",
    "generative_token_table",
]
