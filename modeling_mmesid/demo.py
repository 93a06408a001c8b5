# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""What the demo app (`app.py`) does, without the UI: load a trained model and its item table, search item titles,
build a history, recommend with both heads, and explain each ranked item by the parts of its fused score.

The UI (gradio) lives in `app.py` and only calls this module, so everything here is tested without a browser
(`tests/test_demo.py`). `DemoRecommender` is an [`MMESIDRecommender`] with a catalog: one forward pass per query
gives the fused scores that rank the items and their explanation, `modality_logits` and `fusion_weights` (paper Eq. 8:
`item_logits[j] = sum_m fusion_weights[j, m] * modality_logits[j, m]`, the weights from the frequency-aware gate of
item `j`'s training count, Eq. 9); the beams are `MMESIDRecommender.generate_items`, whose shared prompt and trie are
built once for all queries.
"""

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from mmesid_artifacts import Run, load_item_table, load_split_table
from mmesid_artifacts.run import DATA_FILES, DEFAULT_RUN_DIR, FULL_MODEL_SUBFOLDER

from .recommender_mmesid import MMESIDRecommender


DEFAULT_MODEL = Run(DEFAULT_RUN_DIR).full_model  # the main job's model (bash recipes/run_pipeline.sh)
MAIN_JOB_COMMAND = "bash recipes/run_pipeline.sh"
# The name of each column of `modality_logits` (`MMESIDOutput`): 0 is the learned item table `<h, e_j>`, 1 + m the
# projected embedding of `config.modalities[m]`.
ID_SCORE = "item table"


class MissingRunError(FileNotFoundError):
    """No trained model (or no item table) where the app looks: the message says which command makes one."""


@dataclass
class Catalog:
    """The items of a run: `titles[j]`, `brands[j]`, `train_counts[j]` for item id `j` (index 0 is padding)."""

    titles: list[str] = field(repr=False)
    brands: list[str | None] = field(repr=False)
    train_counts: np.ndarray = field(repr=False)

    def __post_init__(self):
        self._lower_titles = [t.lower() for t in self.titles]  # searched on every keystroke
        self._lower_brands = [(b or "").lower() for b in self.brands]

    @property
    def num_items(self) -> int:
        return len(self.titles) - 1

    def title(self, item_id: int) -> str:
        return self.titles[item_id]

    def search(self, query: str, limit: int = 10, exclude: Sequence[int] = ()) -> list[tuple[int, str]]:
        """Type-ahead over the titles: `(item_id, title)` of the items whose title (or brand) contains every word of
        `query` (case-insensitive), titles that start with the query first, then the most bought (training count),
        then by id. At most `limit`; items in `exclude` (the history) are left out. An empty query finds nothing."""
        words = query.lower().split()
        if not words or limit < 1:
            return []
        phrase, skip = " ".join(words), set(exclude)
        found = []
        for item, (title, brand) in enumerate(zip(self._lower_titles, self._lower_brands)):
            if item == 0 or item in skip:
                continue
            text = f"{title} {brand}"
            if all(w in text for w in words):
                found.append((not title.startswith(phrase), -int(self.train_counts[item]), item))
        return [(item, self.titles[item]) for *_, item in sorted(found)[:limit]]


def load_catalog(data_dir: str | os.PathLike) -> Catalog:
    """The item table (`items.parquet`) of a run's `data/` folder or a dataset repo's root. An item without a title
    is shown as `item <id>`."""
    table = load_item_table(data_dir, columns=["title", "brand", "train_count"])
    titles = [t if t else f"item {i}" for i, t in enumerate(table.column("title").to_pylist(), start=1)]
    counts = np.concatenate([[0], table.column("train_count").to_numpy()])
    return Catalog(titles=["(padding)", *titles], brands=[None, *table.column("brand").to_pylist()],
                   train_counts=counts)


@dataclass
class HeldOutUsers:
    """The test split's users: each one's history and held-out item (leave-one-out: the last item)."""

    histories: dict[int, list[int]] = field(repr=False)
    targets: dict[int, int] = field(repr=False)

    def __post_init__(self):
        self._ids = sorted(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, user_id: int) -> tuple[list[int], int]:
        """`(history, held-out item)` of `user_id`; `KeyError` naming the range for an unknown user."""
        if user_id not in self.targets:
            raise KeyError(f"user {user_id} is not in the test split ({len(self)} users, ids "
                           f"{min(self.targets)}..{max(self.targets)}).")
        return list(self.histories[user_id]), self.targets[user_id]

    def random_user(self, rng: random.Random | None = None) -> int:
        return (rng or random).choice(self._ids)


def load_test_users(splits_dir: str | os.PathLike) -> HeldOutUsers:
    table = load_split_table(splits_dir, "test")
    users = table.column("user_id").to_pylist()
    return HeldOutUsers(histories=dict(zip(users, table.column("history").to_pylist())),
                     targets=dict(zip(users, table.column("target").to_pylist())))


# ---------------------------------------------------------------------------------------------------- history


def add_item(history: Sequence[int], item_id: int, num_items: int) -> list[int]:
    """`history` with `item_id` appended (the newest purchase last); an item already in the history is not added
    twice. `ValueError` for an id outside 1..`num_items`."""
    item_id = int(item_id)
    if not 1 <= item_id <= num_items:
        raise ValueError(f"item id {item_id} is outside the catalog (1..{num_items}).")
    return list(history) if item_id in history else [*history, item_id]


def remove_item(history: Sequence[int], item_id: int) -> list[int]:
    """`history` without `item_id`."""
    return [i for i in history if i != int(item_id)]


# ---------------------------------------------------------------------------------------------------- results


@dataclass
class RankedItem:
    """One recommended item and what drove its fused score: `parts[m] = weights[m] * logits[m]`, summing to `score`."""

    rank: int
    item_id: int
    title: str
    score: float
    logits: dict[str, float]
    weights: dict[str, float]
    parts: dict[str, float]
    train_count: int
    held_out: bool = False


@dataclass
class Ranking:
    """The ranking head's top-k for one history (`MMESIDRecommender.recommend`), best first, with the held-out item's rank among
    all candidates when a test user's history is shown (`None` when there is none, or it is in the history)."""

    items: list[RankedItem]
    score_names: list[str]
    history: list[int] = field(default_factory=list)
    target: int | None = None
    target_rank: int | None = None
    num_candidates: int = 0
    seconds: float = 0.0
    explanation: "Explanation | None" = field(default=None, repr=False)  # the pass it came from (for `generate`)


@dataclass
class Beam:
    """One beam of constrained generation: an item and its log-probability under the model
    (`MMESIDRecommender.generate_items`)."""

    rank: int
    item_id: int
    title: str
    log_prob: float
    held_out: bool = False
    ranking_rank: int | None = None  # where the ranking head puts the same item (model with both heads)


@dataclass
class Generation:
    beams: list[Beam]
    history: list[int] = field(default_factory=list)
    target: int | None = None
    seconds: float = 0.0


@dataclass
class Explanation:
    """The forward pass's view of every item for one history: `item_logits (num_items + 1,)` (history items and
    padding `-inf`), `modality_logits (num_items + 1, M + 1)`, `fusion_weights (num_items + 1, M + 1)`."""

    item_logits: torch.Tensor
    modality_logits: torch.Tensor
    fusion_weights: torch.Tensor

    def rank_of(self, item_id: int) -> int | None:
        """1-based rank of `item_id` among the candidates (ties count against it: the first of a tied block); `None`
        for a masked item (history or padding)."""
        score = self.item_logits[item_id]
        if not torch.isfinite(score):
            return None
        return int((self.item_logits > score).sum()) + 1


# ---------------------------------------------------------------------------------------------------- the recommender


class DemoRecommender(MMESIDRecommender):
    """A trained MME-SID's [`MMESIDRecommender`] with its catalog and (optionally) its test users: what the app
    serves."""

    def __init__(self, model, processor, catalog: Catalog, test_users: HeldOutUsers | None = None,
                 source: dict | None = None):
        super().__init__(model, processor)
        self.catalog = catalog
        self.test_users = test_users
        self.source = dict(source or {})

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, data: str | os.PathLike | None = None) -> "DemoRecommender":
        """Load a model folder or Hub repo id (default: the main job's, `outputs/beauty-smollm2-135m/finetune/model`)
        and the item table and test split of `data`: a run's `data/` folder, a run folder, or a dataset repo id
        (default: the `data/` folder of the model's run, `<run>/finetune/model` -> `<run>/data`)."""
        model_ref = str(model if model is not None else DEFAULT_MODEL)
        local = model is None or Path(model_ref).exists() or model_ref.count("/") != 1  # else `namespace/name`
        if local and not (Path(model_ref) / "config.json").is_file():
            raise MissingRunError(
                f"No trained model at `{model_ref}`. Run the main job first, `{MAIN_JOB_COMMAND}` (docs/MAIN_JOB.md), "
                "or pass another model folder or Hub repo id (`python app.py --model ...`)."
            )
        if data is None:
            if not local:
                raise ValueError(f"The model `{model_ref}` is a Hub repo id: pass its dataset repo too (`--data`).")
            data = _run_of_model(Path(model_ref)).data
        items_dir, splits_dir = _data_folders(data)
        recommender = cls(
            model=AutoModel.from_pretrained(model_ref, trust_remote_code=True).eval(),
            processor=AutoProcessor.from_pretrained(model_ref, trust_remote_code=True),
            catalog=load_catalog(items_dir),
            test_users=load_test_users(splits_dir) if splits_dir is not None else None,
            source={"model": model_ref, "data": str(data)},
        )
        if recommender.catalog.num_items != recommender.config.num_items:
            raise ValueError(
                f"The item table of `{data}` has {recommender.catalog.num_items} items, the model "
                f"{recommender.config.num_items}: pass the data the model was trained on (`--data`)."
            )
        return recommender

    @property
    def score_names(self) -> list[str]:
        """The four (or fewer) scores Eq. 8 fuses, in `modality_logits`' order."""
        return [ID_SCORE, *self.config.modalities]

    @property
    def can_rank(self) -> bool:
        return self.config.head in ("ranking", "both")

    @property
    def can_generate(self) -> bool:
        return self.config.head in ("generative", "both")

    def train_count(self, item_id: int) -> int:
        """The count the fusion gate reads (the model's `item_counts` buffer: training interactions)."""
        return int(self.model.model.item_counts[item_id])

    @torch.no_grad()
    def explain(self, history: Sequence[int]) -> Explanation:
        """One forward pass over the history's prompt: every item's fused score and its parts; history items and
        padding masked (`-inf`), as `recommend` masks them."""
        if not self.can_rank:
            raise ValueError(f"The model has no ranking head (`config.head={self.config.head!r}`).")
        out = self.forward([list(history)])
        item_logits = out.item_logits[0].float().cpu().clone()
        if history:
            item_logits[torch.as_tensor(list(history))] = float("-inf")
        return Explanation(item_logits, out.modality_logits[0].float().cpu(), out.fusion_weights.float().cpu())

    def rank(self, history: Sequence[int], k: int = 10, target: int | None = None) -> Ranking:
        """The ranking head's top-`k` (history excluded) with the parts of each fused score (the item table's and one
        per modality: four with the paper's three modalities), and the rank of `target` (a test user's held-out item)
        among all candidates.

        One backbone pass per query: the items are ranked by the scores they are explained with, those of the model's
        forward pass (the path of `score_histories(use_cache=False)`). Calling `recommend` as well (the cached path)
        would add a second backbone pass for the same list up to float rounding (`tests/test_equivalence.py`;
        `tests/test_demo.py` checks the two agree)."""
        start = time.perf_counter()
        explanation = self.explain(history)
        num_candidates = int(torch.isfinite(explanation.item_logits).sum())
        top = explanation.item_logits.topk(min(int(k), num_candidates)).indices.tolist()
        items = []
        for rank, item in enumerate(top, start=1):
            logits = explanation.modality_logits[item].tolist()
            weights = explanation.fusion_weights[item].tolist()
            items.append(RankedItem(
                rank=rank, item_id=item, title=self.catalog.title(item), score=float(explanation.item_logits[item]),
                logits=dict(zip(self.score_names, logits)), weights=dict(zip(self.score_names, weights)),
                parts={n: w * s for n, w, s in zip(self.score_names, weights, logits)},
                train_count=self.train_count(item), held_out=item == target,
            ))
        return Ranking(
            items=items, score_names=self.score_names, history=list(history), target=target,
            target_rank=explanation.rank_of(target) if target is not None else None, num_candidates=num_candidates,
            seconds=time.perf_counter() - start, explanation=explanation,
        )

    def generate(self, history: Sequence[int], k: int = 10, target: int | None = None,
                 explanation: Explanation | None = None) -> Generation:
        """The generative head's `k` beams (constrained beam search over the catalog's IDs, history excluded), best
        first, each with its log-probability; with both heads, where the ranking head puts each beam's item
        (`explanation`: the same history's pass from `rank`, so that a query runs the backbone's ranking pass once)."""
        if not self.can_generate:
            raise ValueError(f"The model has no generative head (`config.head={self.config.head!r}`).")
        start = time.perf_counter()
        k = min(int(k), self.config.num_items - len(set(history)))
        items, scores = self.generate_items([list(history)], k=k)
        if explanation is None and self.can_rank:
            explanation = self.explain(history)
        beams = [
            Beam(rank=rank, item_id=item, title=self.catalog.title(item), log_prob=score, held_out=item == target,
                 ranking_rank=explanation.rank_of(item) if explanation is not None else None)
            for rank, (item, score) in enumerate(zip(items[0].tolist(), scores[0].tolist()), start=1)
            if item != 0  # padding fills the end of the row when fewer than k items are left
        ]
        return Generation(beams=beams, history=list(history), target=target, seconds=time.perf_counter() - start)

    @torch.no_grad()
    def fusion_profile(self, quantiles: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)) -> list[dict]:
        """The gate over the catalog: at each quantile of the items' training counts, the count and the fusion
        weights an item with that count gets (`get_fusion_weights`; the weights depend on the count only)."""
        counts = self.model.model.item_counts[1:].cpu()
        weights = self.model.get_fusion_weights()[1:].float().cpu()
        order = torch.argsort(counts, stable=True)
        rows = []
        for q in quantiles:
            item = int(order[round(q * (len(order) - 1))])
            rows.append({"quantile": q, "train_count": int(counts[item]),
                         "weights": dict(zip(self.score_names, weights[item].tolist()))})
        return rows


def measure_latency(recommender: DemoRecommender, num_queries: int = 20, k: int = 10, seed: int = 0) -> dict:
    """Wall seconds per query of each head the model has, over the histories of `num_queries` random test users (an
    empty history and a one-item one without test users), after one warm-up query: `{head: {median, max, ...}}`."""
    rng, users = random.Random(seed), recommender.test_users
    if users is not None:
        histories = [users.get(users.random_user(rng))[0] for _ in range(num_queries)]
    else:
        histories = [[], [1]] * (num_queries // 2 + 1)
    heads = {"rank": recommender.rank} if recommender.can_rank else {}
    if recommender.can_generate:
        heads["generate"] = recommender.generate
    out = {}
    for name, query in heads.items():
        query(histories[0], k=k)  # warm-up (first calls allocate)
        seconds = []
        for history in histories[:num_queries]:
            start = time.perf_counter()
            query(history, k=k)
            seconds.append(time.perf_counter() - start)
        out[name] = {"median": float(np.median(seconds)), "max": max(seconds), "queries": len(seconds),
                     "mean_history_length": float(np.mean([len(h) for h in histories[:num_queries]]))}
    return out


def _run_of_model(model_dir: Path) -> Run:
    """`<run>/finetune/model` -> `<run>` (the main job's layout); any other folder -> the default run."""
    if model_dir.name == FULL_MODEL_SUBFOLDER and model_dir.parent.name == Run(".").finetune.name:
        return Run(model_dir.parent.parent)
    return Run(DEFAULT_RUN_DIR)


def _data_folders(data: str | os.PathLike) -> tuple[Path, Path | None]:
    """`(folder of items.parquet, folder of test.parquet or None)` for a run's `data/` folder, a run folder or a
    dataset repo (local folder or Hub id: `items.parquet` at its root, the splits under `data/`)."""
    folder = Path(data)
    if not folder.exists() and str(data).count("/") == 1 and not str(data).startswith((".", "/")):
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(data), repo_type="dataset",
                                        allow_patterns=[DATA_FILES["items"], "data/test.parquet"]))
    for items_dir in (folder, Run(folder).data):
        if (items_dir / DATA_FILES["items"]).is_file():
            for splits_dir in (items_dir, items_dir / "data"):
                if (splits_dir / "test.parquet").is_file():
                    return items_dir, splits_dir
            return items_dir, None
    raise MissingRunError(
        f"No item table (`{DATA_FILES['items']}`) in `{data}` or `{Run(folder).data}`. Run the main job first, "
        f"`{MAIN_JOB_COMMAND}`, or pass a run's data folder or a dataset repo id (`python app.py --data ...`)."
    )


__all__ = [
    "Beam",
    "Catalog",
    "DemoRecommender",
    "Explanation",
    "Generation",
    "HeldOutUsers",
    "MissingRunError",
    "RankedItem",
    "Ranking",
    "add_item",
    "load_catalog",
    "load_test_users",
    "measure_latency",
    "remove_item",
]
