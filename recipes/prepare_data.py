# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Prepare leave-one-out splits, the item table and `stats.json` → `<run_dir>/data/`.

Commands:
    # MME-SID's own Beauty_new (the paper's data), with titles/brands/categories from the joined item table
    python recipes/prepare_data.py --config recipes/configs/beauty-smollm2-135m/data.yaml
    # the same, spelled out
    python recipes/prepare_data.py --sequences ../shared/data/Beauty/mmesid/Beauty_new.txt \
        --items ../shared/data/Beauty/derived/beauty_items.jsonl --item_id_field mme_id \
        --run_dir outputs/beauty-smollm2-135m
    # classic S3-Rec Beauty.txt
    python recipes/prepare_data.py --sequences ../shared/data/Beauty/s3rec/Beauty.txt \
        --items ../shared/data/Beauty/derived/beauty_items.jsonl --item_id_field s3_id --run_dir outputs/s3rec
    # your own catalog: CSV/Parquet of user,item,timestamp (+ JSONL item table keyed by your raw item ids)
    python recipes/prepare_data.py --interactions my.csv --items my_items.jsonl --k_core 5 --run_dir outputs/mine
    # online: download the public Amazon 2014 5-core files (beauty, toys, sports), checksummed
    python recipes/prepare_data.py --download beauty --run_dir outputs/amazon-beauty
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from mmesid_artifacts import Run, read_sequence_file
from mmesid_artifacts.recipe_args import document, run_dir_field
from modeling_mmesid import data


@dataclass
class PrepareArguments:
    run_dir: str = run_dir_field("writes data/ (the splits, the item table, stats.json)")
    sequences: str | None = field(default=None, metadata={"help": "`user item item ...` file (1-based)."})
    interactions: str | None = field(default=None, metadata={"help": "CSV/Parquet with user, item, timestamp."})
    download: str | None = field(default=None, metadata={"help": "Amazon 2014 dataset to download: beauty|toys|sports."})
    base_url: str | None = field(default=None, metadata={"help": "Mirror replacing the Amazon files' base URL."})
    cache_dir: str = field(default="outputs/downloads", metadata={"help": "Where downloads are cached."})
    items: str | None = field(default=None, metadata={"help": "JSONL item table (id, title, brand, categories, image)."})
    item_id_field: str = field(default="id", metadata={"help": "Id key of the item table (`mme_id` for Beauty_new)."})
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "timestamp"
    k_core: int = field(default=5, metadata={"help": "k-core filter for --interactions/--download (paper: 5)."})
    max_train_samples_per_user: int = field(default=50, metadata={"help": "Official code: last 50 positions."})


def main(args: PrepareArguments) -> dict:
    start = time.time()
    sources = [s for s in (args.sequences, args.interactions, args.download) if s]
    if len(sources) != 1:
        raise ValueError("Give exactly one of `--sequences`, `--interactions` or `--download`.")
    item_index, items_path = None, args.items
    if args.sequences:
        sequences = read_sequence_file(args.sequences)
        source = {"sequences": Path(args.sequences).name}
    else:
        path = args.interactions
        if args.download:
            if args.download not in data.AMAZON_2014:
                raise ValueError(f"`--download` must be one of {sorted(data.AMAZON_2014)}, got {args.download!r}.")
            urls = dict(data.AMAZON_2014[args.download])
            if args.base_url:
                urls = {k: args.base_url.rstrip("/") + "/" + u.rsplit("/", 1)[-1] for k, u in urls.items()}
            reviews = data.download(urls["reviews"], args.cache_dir)
            path = data.amazon_reviews_to_csv(reviews, Path(args.cache_dir) / f"{args.download}_interactions.csv")
        sequences, item_index = data.read_interactions(path, args.user_col, args.item_col, args.time_col, args.k_core)
        source = {"interactions": Path(path).name, "k_core": args.k_core}
        if args.download:
            meta = data.download(urls["meta"], args.cache_dir)
            items_path = data.amazon_meta_to_jsonl(meta, Path(args.cache_dir) / f"{args.download}_items.jsonl", item_index)
            source.update(dataset=f"amazon-2014-{args.download}", urls=urls)
    num_items = max(max(s) for s in sequences.values())
    items = None
    if items_path:
        items = data.read_item_table(items_path, num_items, args.item_id_field, item_index)
        source["items"] = Path(items_path).name
    out = Run(args.run_dir).data
    stats = data.write_dataset(out, sequences, items, source, args.max_train_samples_per_user)
    print(
        f"users {stats['num_users']:,} · items {stats['num_items']:,} · interactions {stats['num_interactions']:,} · "
        f"training samples {stats['num_train_samples']:,} ({stats['num_empty_history_samples']:,} with an empty "
        f"history) · validation {stats['num_validation']:,} · test {stats['num_test']:,} · short users "
        f"{stats['num_short_users']:,} · items with a title {stats['num_items_with_title']:,}"
    )
    print(f"wrote {out} in {time.time() - start:.1f}s")
    return stats


if __name__ == "__main__":
    (script_args,) = document(TrlParser((PrepareArguments,)), __doc__, __file__).parse_args_and_config()
    main(script_args)
