# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Stage 1: encode every item per modality into `<run_dir>/embeddings/{collaborative,text,image}.safetensors`.

Commands:
    # collaborative (SASRec, CPU: ~1 min/epoch on 2 cores) + text (MiniLM, offline) for Beauty_new
    python recipes/encode_items.py --run_dir outputs/beauty-smollm2-135m --modalities collaborative text
    # the same from the run's YAML
    python recipes/encode_items.py --config recipes/configs/beauty-smollm2-135m/encoders.yaml
    # the paper's encoders on a GPU (LLM2CLIP text tower; open_clip ViT-L/14-336 image tower, images from items.parquet)
    python recipes/encode_items.py --run_dir outputs/beauty-llama3-8b \
        --modalities text image --text_preset llm2clip --image_model_name ViT-L-14-336 --image_pretrained openai
    # a richer text: title, brand and categories
    python recipes/encode_items.py --modalities text --text_template "{title}. Brand: {brand}. Categories: {categories}"

Reads `<run_dir>/data/` (recipes/prepare_data.py). Writes, per modality, `embeddings/<name>.safetensors` +
`<name>.json` (encoder, dim, item count, dataset fingerprint); SASRec also leaves `embeddings/sasrec/`
(`save_pretrained`) and `embeddings/sasrec/results.json` (validation/test metrics, per-epoch log).
"""

import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import torch
from trl import TrlParser

from mmesid_artifacts import (
    Run,
    load_split_table,
    load_stats,
    load_train_sequences,
    run_info,
    save_embeddings,
    write_results,
)
from mmesid_artifacts.recipe_args import document, library_default, run_dir_field
from mmesid_artifacts.run import SASREC_SUBFOLDER
from modeling_mmesid import evaluation
from tokenization.encoders import (
    ImageEncoderArguments,
    TextEncoderArguments,
    encode_images,
    encode_item_texts,
    encoder_details,
)
from tokenization.sasrec import SASRecConfig, SASRecModel, SASRecTrainingArguments, sasrec_scorer, train_sasrec


_SASREC = SASRecConfig()  # the library's SASRec defaults (RecBole 1.2.1)


@dataclass
class EncodeItemsArguments:
    run_dir: str = run_dir_field("reads data/; writes embeddings/ (and embeddings/sasrec/)")
    modalities: list[str] = field(
        default_factory=lambda: ["collaborative", "text"], metadata={"help": "Any of collaborative, text, image."}
    )
    device: str | None = field(default=None, metadata={"help": "Device; cuda when available."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (1 is fastest on a busy CPU)."})
    # Collaborative: SASRec. Defaults are the library's (`SASRecConfig`, `SASRecTrainingArguments`: RecBole 1.2.1,
    # docs/METHOD.md); `--sasrec_dropout` sets both of SASRecConfig's dropouts.
    sasrec_hidden_size: int = library_default(_SASREC, "hidden_size", "Item embedding size (paper: 64).")
    sasrec_num_layers: int = library_default(_SASREC, "num_hidden_layers", "Self-attention blocks.")
    sasrec_num_heads: int = library_default(_SASREC, "num_attention_heads", "Attention heads.")
    sasrec_dropout: float = library_default(_SASREC, "hidden_dropout_prob", "Hidden and attention dropout.")
    sasrec_max_length: int = library_default(_SASREC, "max_position_embeddings", "Longest history read.")
    sasrec_epochs: int = library_default(SASRecTrainingArguments, "num_epochs", "Upper bound on epochs.")
    sasrec_batch_size: int = library_default(
        SASRecTrainingArguments, "batch_size", "Training targets per batch (RecBole: samples)."
    )
    sasrec_learning_rate: float = library_default(SASRecTrainingArguments, "learning_rate", "Adam learning rate.")
    sasrec_patience: int = library_default(
        SASRecTrainingArguments, "patience", "Epochs without better validation nDCG@10."
    )
    seed: int = library_default(SASRecTrainingArguments, "seed", "Seed.")
    # Text (`TextEncoderArguments`). The library has no preset default (a model must be chosen); the recipe picks the
    # offline one, `minilm`.
    text_preset: str | None = field(default="minilm", metadata={"help": "minilm (offline) or llm2clip (paper)."})
    text_model_name_or_path: str | None = library_default(
        TextEncoderArguments, "model_name_or_path", "Overrides the preset's model."
    )
    text_pooling: str | None = library_default(TextEncoderArguments, "pooling", "mean, cls or last.")
    text_template: str = library_default(
        TextEncoderArguments, "template", "Format string over title/brand/categories."
    )
    text_batch_size: int = library_default(TextEncoderArguments, "batch_size", "Texts per forward pass.")
    # Image (`ImageEncoderArguments`)
    image_model_name: str = library_default(
        ImageEncoderArguments, "model_name", "open_clip name, local-dir: or hf-hub:."
    )
    image_pretrained: str | None = library_default(
        ImageEncoderArguments, "pretrained", "open_clip tag or .safetensors file."
    )
    image_batch_size: int = library_default(ImageEncoderArguments, "batch_size", "Images per forward pass.")
    image_cache_dir: str | None = library_default(ImageEncoderArguments, "cache_dir", "Download cache for image URLs.")
    image_timeout: float = library_default(ImageEncoderArguments, "timeout", "Seconds per request.")


def main(args: EncodeItemsArguments):
    run = Run(args.run_dir)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    stats = load_stats(run.data)
    num_items, fingerprint = stats["num_items"], stats["fingerprint"]
    items = pq.read_table(run.items_file).sort_by("item_id").to_pylist()
    print(f"users {stats['num_users']:,} · items {num_items:,} · fingerprint {fingerprint[:12]} · "
          f"→ {run.embeddings}")
    common = {"dataset_fingerprint": fingerprint, "created_by": "recipes/encode_items.py"}

    if "collaborative" in args.modalities:
        torch.manual_seed(args.seed)
        config = SASRecConfig(
            num_items=num_items,
            hidden_size=args.sasrec_hidden_size,
            num_hidden_layers=args.sasrec_num_layers,
            num_attention_heads=args.sasrec_num_heads,
            hidden_dropout_prob=args.sasrec_dropout,
            attention_probs_dropout_prob=args.sasrec_dropout,
            max_position_embeddings=args.sasrec_max_length,
        )
        model = SASRecModel(config).to(args.device or "cpu")
        validation = load_split_table(run.data, "validation")
        train_args = SASRecTrainingArguments(
            num_epochs=args.sasrec_epochs,
            batch_size=args.sasrec_batch_size,
            learning_rate=args.sasrec_learning_rate,
            patience=args.sasrec_patience,
            seed=args.seed,
        )
        start = time.perf_counter()
        history = train_sasrec(
            model,
            load_train_sequences(run.data),
            train_args,
            eval_fn=lambda m: evaluation.evaluate_scorer(sasrec_scorer(m), validation, num_items)["ndcg@10"],
            callback=lambda e: print(
                f"epoch {e['epoch']:3d} · loss {e['loss']:.4f} · val nDCG@10 {e.get('metric', float('nan')):.4f} "
                f"· train {e['train_seconds']:.1f}s · total {e['seconds']:.1f}s",
                flush=True,
            ),
        )
        model.save_pretrained(run.sasrec)
        test = load_split_table(run.data, "test")
        results = {
            "SASRec (ours, CE)": evaluation.evaluate_scorer(sasrec_scorer(model), test, num_items),
        }
        protocol = evaluation.protocol_line(num_items, test.num_rows)
        print(
            f"SASRec on the whole test split ({test.num_rows:,} users). The evaluation stage ranks it again on the "
            "users it samples for MME-SID, so its figures there differ from these."
        )
        print(evaluation.format_table(results, protocol=protocol))
        write_results(
            run.results_file("sasrec"),
            results,
            protocol,
            train_info=history,
            run_info=run_info(time.perf_counter() - start, vars(args)),
        )
        save_embeddings(
            run.embedding_file("collaborative"),
            model.get_item_embeddings(),
            modality="collaborative",
            encoder="SASRec (mmesid, CE)",
            sasrec_dir=SASREC_SUBFOLDER,
            best_epoch=history["best_epoch"],
            validation_ndcg10=history["best_metric"],
            **common,
        )

    if "text" in args.modalities:
        text_args = TextEncoderArguments(
            preset=args.text_preset,
            model_name_or_path=args.text_model_name_or_path,
            pooling=args.text_pooling,
            template=args.text_template,
            batch_size=args.text_batch_size,
            device=args.device,
        )
        table, mask, texts = encode_item_texts(items, text_args)
        save_embeddings(
            run.embedding_file("text"),
            table,
            mask=mask,
            modality="text",
            encoder=text_args.encoder_name,
            examples=texts[:3],
            **encoder_details(text_args),
            **common,
        )
        print(f"text: {tuple(table.shape)} · {int((~mask[1:]).sum()):,} items without text")

    if "image" in args.modalities:
        image_args = ImageEncoderArguments(
            model_name=args.image_model_name,
            pretrained=args.image_pretrained,
            batch_size=args.image_batch_size,
            device=args.device,
            cache_dir=args.image_cache_dir,
            timeout=args.image_timeout,
        )
        table, mask, report = encode_images([None] + [item.get("image") for item in items], image_args)
        report["num_missing"] -= 1  # row 0 is padding, not a missing image
        save_embeddings(
            run.embedding_file("image"),
            table,
            mask=mask,
            modality="image",
            encoder=encoder_details(image_args)["model_name"],
            **report,
            **encoder_details(image_args),
            **common,
        )
        print(
            f"image: {tuple(table.shape)} · {report['num_missing']:,} without image · {report['num_failed']:,} failed"
        )


if __name__ == "__main__":
    main(*document(TrlParser((EncodeItemsArguments,)), __doc__, __file__).parse_args_and_config())
