# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Prefix-tree packing for Stage 2 training: all training samples of one user in one sequence.

The paper's samples of a user with training prefix `items` are `(items[:t], items[t])` for the last
`L = min(len(items), 50)` positions `t` (docs/METHOD.md): every history is a prefix of the next one, so the per-sample
formulation re-encodes the same prompt and the same history prefix for every target. Here the prompts of one user
are inserted into a trie (keyed by token id and, for `<item>` placeholders, by item id), and the trie is laid out
as one row:

    prompt · x0 · [response] · x1 · [response] · x2 · [response] ...      (+ the empty-history prompt's branch)

where each `[response]` copy (the tokens after the placeholders, `<|im_end|>\\n<|im_start|>assistant` in ChatML) ends
one sample. A 4D attention mask lets each token see exactly its ancestors in the trie, and the position ids are
trie depths, so every copy sees exactly its own history at the positions it has in its own prompt: the hidden state
at the last token of each copy equals the per-sample one (tests/test_equivalence.py). The trie is built from the
processor's own renderings, so any chat template works, including an empty-history prompt that renders differently
(it becomes its own branch).

The prompt every row starts with ([`MMESIDProcessor.shared_prompt_ids`]) is left out of the rows and passed once
per batch as `shared_prompt_ids`: the model computes it once and shares its keys/values.

Not Hub-side: the model only sees standard tensors (`attention_mask` 4D, `position_ids`, `readout_positions`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .evaluation import pad_histories


@dataclass
class PackedUser:
    """One user's samples as a prefix tree laid out in insertion (depth-first) order.

    Attributes:
        input_ids: token id per node.
        parents: index of each node's parent, `-1` for the roots (children of the shared prompt, or of nothing).
        depths: distance from the start of the prompt (the position id), counting the shared prompt.
        item_ids: item of each `<item>` node, in node order.
        readouts: node index of each sample's final prompt token.
        targets: target item of each sample, aligned with `readouts`.
    """

    input_ids: list[int]
    parents: list[int]
    depths: list[int]
    item_ids: list[int]
    readouts: list[int]
    targets: list[int]


def user_samples(items: Sequence[int], start: int) -> list[tuple[list[int], int]]:
    """The samples `(items[:t], items[t])` for `t` in `start..len(items) - 1`."""
    return [(list(items[:t]), int(items[t])) for t in range(start, len(items))]


def pack_user(processor, items: Sequence[int], start: int, num_shared: int = 0) -> PackedUser:
    r"""
    Build the prefix tree of one user's samples `(items[:t], items[t])`, `t = start..len(items) - 1`.

    Args:
        processor ([`MMESIDProcessor`]):
            Renders each sample's prompt (`prompt_token_ids`).
        items (`list[int]`):
            The user's training prefix (the last one is a target only).
        start (`int`):
            First target position (0 includes the empty-history sample).
        num_shared (`int`, *optional*, defaults to 0):
            Leading prompt tokens left out of the tree (the shared prompt); depths still count them.
    """
    item_token_id = processor.item_token_id
    children: dict[tuple[int, int, int], int] = {}
    tree = PackedUser([], [], [], [], [], [])
    for t in range(start, len(items)):
        ids = processor.prompt_token_ids(t)[num_shared:]
        node, depth, k = -1, num_shared, 0
        for token in ids:
            item = 0
            if token == item_token_id:
                item = int(items[k])
                k += 1
            key = (node, token, item)
            child = children.get(key)
            if child is None:
                child = len(tree.input_ids)
                children[key] = child
                tree.input_ids.append(token)
                tree.parents.append(node)
                tree.depths.append(depth)
                if item:
                    tree.item_ids.append(item)
            node, depth = child, depth + 1
        tree.readouts.append(node)
        tree.targets.append(int(items[t]))
    return tree


def concatenate_trees(trees: Sequence[PackedUser]) -> PackedUser:
    """Several users' trees laid out one after the other as one tree with several roots: each node keeps exactly its
    own ancestors (a user's roots have none), so the users of one row never see each other."""
    merged = PackedUser([], [], [], [], [], [])
    for tree in trees:
        offset = len(merged.input_ids)
        merged.input_ids.extend(tree.input_ids)
        merged.parents.extend(p + offset if p >= 0 else -1 for p in tree.parents)
        merged.depths.extend(tree.depths)
        merged.item_ids.extend(tree.item_ids)
        merged.readouts.extend(r + offset for r in tree.readouts)
        merged.targets.extend(tree.targets)
    return merged


def tree_attention_mask(parents: Sequence[int], size: int | None = None) -> torch.Tensor:
    """Boolean `(size, size)` mask, True where query node `i` may attend to key node `j` (`j` is `i` or one of its
    ancestors). Nodes come after their parents. Rows past `len(parents)` (padding) attend only to themselves."""
    n = len(parents)
    size = n if size is None else size
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i, parent in enumerate(parents):
        if parent >= 0:
            mask[i, :i] = mask[parent, :i]
        mask[i, i] = True
    for i in range(n, size):
        mask[i, i] = True
    return mask


class MMESIDPackedCollator:
    r"""
    Rows `{items, start}` (one per user: `data.load_train_users`, which reads them from `train_sequences.parquet`, or
    [`group_samples_by_user`] of a per-sample split) -> the users' prefix trees in one packed row (`one_row`, the
    default) or in one row per user.

    Returns `input_ids` `(rows, nodes)`, a boolean `attention_mask` `(rows, 1, nodes, nodes)`,
    `position_ids`, `item_ids`, `readout_positions` `(num_samples, 2)`, `labels` `(num_samples,)` and, with
    `share_prompt=True`, `shared_prompt_ids` `(1, prompt_length)`. The loss is then the mean cross-entropy over every
    sample of the batch: the per-sample loss over the same samples.

    Rows `{history, target}` (evaluation splits) go to `per_sample_collator`.

    Args:
        processor ([`MMESIDProcessor`]): renders the prompts.
        share_prompt (`bool`, *optional*, defaults to `True`): leave the shared prompt out of the rows and have the
            model compute it once per batch.
        per_sample_collator (`callable`, *optional*): collator for per-sample rows (validation/test).
        with_history (`bool`, *optional*, defaults to `False`): also return `history` `(num_samples, max_len)`, each
            sample's history right-padded with 0 (not a model input: [`MMESIDTrainer`] pops it, e.g. for the
            distillation teacher).
        one_row (`bool`, *optional*, defaults to `True`): lay the batch's users out one after the other in a single
            row ([`concatenate_trees`]; the mask keeps them apart) instead of one row per user padded to the longest:
            no padding tokens, and the same outputs (tests/test_equivalence.py).
    """

    def __init__(
        self,
        processor,
        share_prompt: bool = True,
        per_sample_collator=None,
        with_history: bool = False,
        one_row: bool = True,
    ):
        self.processor = processor
        self.share_prompt = share_prompt
        self.one_row = one_row
        self.per_sample_collator = per_sample_collator
        self.with_history = with_history
        self.shared_prompt_ids = processor.shared_prompt_ids() if share_prompt else []

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if rows and "items" not in rows[0]:
            if self.per_sample_collator is None:
                raise ValueError(
                    "`MMESIDPackedCollator` got per-sample rows (no `items` column) and has no `per_sample_collator`; "
                    "group training samples with `group_samples_by_user`."
                )
            return self.per_sample_collator(rows)
        num_shared = len(self.shared_prompt_ids)
        trees = [pack_user(self.processor, list(r["items"]), int(r["start"]), num_shared) for r in rows]
        if self.one_row:
            trees = [concatenate_trees(trees)]
        width = max(len(t.input_ids) for t in trees)
        input_ids = torch.full((len(trees), width), self.processor.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(len(trees), width, dtype=torch.long)
        attention_mask = torch.zeros(len(trees), 1, width, width, dtype=torch.bool)
        readouts, labels, item_ids = [], [], []
        for row, tree in enumerate(trees):
            n = len(tree.input_ids)
            input_ids[row, :n] = torch.tensor(tree.input_ids, dtype=torch.long)
            position_ids[row, :n] = torch.tensor(tree.depths, dtype=torch.long)
            attention_mask[row, 0] = tree_attention_mask(tree.parents, width)
            readouts.extend([row, node] for node in tree.readouts)
            labels.extend(tree.targets)
            item_ids.extend(tree.item_ids)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "item_ids": torch.tensor(item_ids, dtype=torch.long),
            "readout_positions": torch.tensor(readouts, dtype=torch.long).view(-1, 2),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if self.share_prompt:
            batch["shared_prompt_ids"] = torch.tensor([self.shared_prompt_ids], dtype=torch.long)
        if self.with_history:  # the samples in `labels` order: t = start..len(items) - 1 per user
            histories = [list(r["items"][:t]) for r in rows for t in range(int(r["start"]), len(r["items"]))]
            batch["history"] = pad_histories(histories)[0]
        return batch


def group_samples_by_user(split):
    r"""
    Group a per-sample training split (`user_id, history, target` rows, docs/CONTRACTS.md) into one row per user:
    `user_id`, `items` (the longest history plus its target) and `start` (the shortest history's length), so that
    the user's samples are exactly `(items[:t], items[t])` for `t = start..len(items) - 1`.

    Raises `ValueError` when a user's samples are not such a chain (they always are for `data.leave_one_out`).
    Returns a `datasets.Dataset` (users in order of first appearance).
    """
    from datasets import Dataset

    if hasattr(split, "column_names") and hasattr(split, "column") and not hasattr(split, "features"):
        users, histories, targets = (split.column(c).to_pylist() for c in ("user_id", "history", "target"))
    else:
        users, histories, targets = split["user_id"], split["history"], split["target"]
    samples: dict[int, list[tuple[list[int], int]]] = {}
    for user, history, target in zip(users, histories, targets):
        samples.setdefault(int(user), []).append((list(history), int(target)))
    out = {"user_id": [], "items": [], "start": []}
    for user, rows in samples.items():
        rows.sort(key=lambda r: len(r[0]))
        longest, last_target = rows[-1]
        items = longest + [last_target]
        start = len(rows[0][0])
        for offset, (history, target) in enumerate(rows):
            t = start + offset
            if len(history) != t or history != items[:t] or target != items[t]:
                raise ValueError(
                    f"User {user}: training samples are not the prefixes of one sequence (sample with history length "
                    f"{len(history)} and target {target}); prefix-tree packing needs the paper's samples "
                    "`(items[:t], items[t])` for consecutive `t`."
                )
        out["user_id"].append(user)
        out["items"].append(items)
        out["start"].append(start)
    return Dataset.from_dict(out)


def num_samples(split) -> int:
    """Training samples of `split`: one per row, or `len(items) - start` per row of per-user rows (`items`, `start`:
    `data.load_train_users`, [`group_samples_by_user`])."""
    if "items" not in split.column_names:
        return split.num_rows
    return sum(len(items) - int(start) for items, start in zip(split["items"], split["start"]))


def count_tokens(processor, users: Sequence[tuple[Sequence[int], int]]) -> dict[str, int]:
    r"""
    Tokens processed per epoch, counted exactly from the processor's renderings, for `users` given as
    `(items, start)` pairs (see [`group_samples_by_user`]).

    Returns `dict` with `samples`, `users`, `shared_prompt_tokens`, `per_sample` (every sample's full prompt),
    `packed` (one prefix tree per user, prompt included) and `packed_shared_prompt` (trees without the shared prompt,
    plus the shared prompt once per epoch: add `shared_prompt_tokens` once per batch for the training figure).
    """
    num_shared = len(processor.shared_prompt_ids())
    prompt_lengths: dict[int, int] = {}
    per_sample = packed = samples = 0
    for items, start in users:
        for t in range(start, len(items)):
            if t not in prompt_lengths:
                prompt_lengths[t] = len(processor.prompt_token_ids(t))
            per_sample += prompt_lengths[t]
        samples += len(items) - start
        packed += len(pack_user(processor, items, start, num_shared).input_ids)
    return {
        "samples": samples,
        "users": len(users),
        "shared_prompt_tokens": num_shared,
        "per_sample": per_sample,
        "packed": packed + num_shared * len(users),
        "packed_shared_prompt": packed + num_shared,
    }


__all__ = [
    "MMESIDPackedCollator",
    "PackedUser",
    "concatenate_trees",
    "count_tokens",
    "group_samples_by_user",
    "num_samples",
    "pack_user",
    "tree_attention_mask",
    "user_samples",
]
