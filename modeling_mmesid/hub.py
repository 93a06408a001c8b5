# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Hub publishing: build the three repo folders of a run, render their cards, check them, push them (or not).

A run (`outputs/<run>/`, docs/RUN_FOLDER.md) becomes three Hub repositories:

- **model** (`org/mmesid-beauty`): the full fine-tuned model at the root (`config.json` with `auto_map`, the three
  Hub-side files, weights, processor files), so `AutoModel.from_pretrained(repo, trust_remote_code=True)` returns
  `MMESIDForSequentialRecommendation`; the LoRA adapter under `adapter/` (with an `adapter_config.json` at the root,
  `transformers` would load `base_model_name_or_path` instead of the full model); `training_config.json`,
  `results.json` and the card.
- **dataset** (`org/mmesid-beauty-data`): the splits under `data/` (the card's default config), `items.parquet`,
  `train_sequences.parquet`, `stats.json`, `embeddings/`, `sids/` and the card.
- **rqvae** (`org/mmesid-beauty-rqvae`): the MM-RQ-VAE item tokenizer, to regenerate semantic IDs. A repo of its own:
  it is another model (`model_type="mmrqvae"`, loaded with `mmesid` installed, not through remote code).

Cards are rendered from the `hub_cards/` templates by `huggingface_hub` (`ModelCard.from_template`) and checked
offline (`check_card`); every folder is checked for local paths, tokens and pickles (`check_no_leaks`) before
anything is pushed. The token comes from `HF_TOKEN` or `hf auth login`, never from an argument. Loading what is
published: `hub_cache.py` (the Hub cache layout, offline) and `adapters.py` (the adapter's base model).
"""

import json
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from huggingface_hub import (
    DatasetCard,
    DatasetCardData,
    EvalResult,
    ModelCard,
    ModelCardData,
    RepoCard,
)
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers.utils import logging

from mmesid_artifacts import SPLITS, Run, atomic_write_json, read_json
from mmesid_artifacts.data_files import KNOWN_SOURCES
from mmesid_artifacts.io import parquet_strings, safetensors_metadata
from mmesid_artifacts.run import DATA_FILES, FULL_MODEL_SUBFOLDER, SIDS_FILES

from .adapters import ADAPTER_SUBFOLDER


logger = logging.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CLASS = "MMESIDForSequentialRecommendation"
DEFAULT_BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
COMPONENTS = ("model", "dataset", "rqvae")
TAGS = ["recommendation", "sequential-recommendation", "semantic-ids", "mmesid"]
METRIC_NAMES = {"ndcg": "nDCG", "hr": "HR", "mrr": "MRR"}
CITATION = """@inproceedings{wang2025mmesid,
  title     = {Empowering Large Language Model for Sequential Recommendation via Multimodal Embeddings and Semantic IDs},
  author    = {Wang, Yuhao and others},
  booktitle = {Proceedings of the 34th ACM International Conference on Information and Knowledge Management (CIKM)},
  year      = {2025},
  note      = {arXiv:2509.02017}
}"""
# Pickles are never published (docs/RUN_FOLDER.md, "Rules for every file"): `training_args.bin` of the Trainer is one.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
TEXT_SUFFIXES = {".md", ".json", ".yaml", ".yml", ".txt", ".py", ".jinja", ".log", ".csv", ".tsv", ".cfg", ".toml",
                 ".ini", ".gitattributes", ""}
LEAK_PATTERNS = {
    "local path": re.compile(r"(?<![\w.\-])(?:/(?:work|tmp|home|root|Users|private/var|var/folders)/|[A-Za-z]:\\+Users\\)"),
    "Hugging Face token": re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}"),
}
# Absolute paths inside the JSON metadata we write ourselves are rewritten before the leak check runs.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.\-<>:/~])/(?=[\w.])[^\s'\"]*")


# ---------------------------------------------------------------------------------------------------------------------
# small helpers


def hub_cards_dir() -> Path:
    """The card templates: `modeling_mmesid/hub_cards/` in an installed wheel (`pyproject.toml` ships the top-level
    `hub_cards/` there), the top-level `hub_cards/` in a source checkout or an editable install."""
    package = Path(__file__).resolve().parent
    folders = (package / "hub_cards", package.parent / "hub_cards")
    for folder in folders:
        if (folder / "model_card.md").is_file():
            return folder
    raise FileNotFoundError(
        f"Card templates (`hub_cards/model_card.md`) not found in {[str(f) for f in folders]}; reinstall mmesid."
    )


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _fresh_folder(path: str | os.PathLike) -> Path:
    """`path` as an empty folder (a previous build removed)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def scrub_local_paths(obj, replacements: Sequence[tuple[str, str]] = ()):
    """Rewrite local paths inside metadata we publish (JSON/YAML values), recursively.

    Each `(prefix, new)` in `replacements` is applied first (e.g. the run folder -> `outputs/<run>`); any absolute
    path left becomes `<local>/<file name>`. Only for metadata we generate or copy on purpose (results, sidecars,
    training config): configs and tokenizer files are not rewritten blindly, the leak check fails on them instead.
    """
    if isinstance(obj, dict):
        return {k: scrub_local_paths(v, replacements) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub_local_paths(v, replacements) for v in obj]
    if isinstance(obj, str):
        for old, new in replacements:
            obj = obj.replace(old, new)
        return _ABSOLUTE_PATH.sub(lambda m: "<local>/" + Path(m.group(0).rstrip("/")).name, obj)
    return obj


def _path_replacements(run_dir: Path) -> list[tuple[str, str]]:
    run_dir = run_dir.resolve()
    return [(str(run_dir), f"outputs/{run_dir.name}"), (str(REPO_ROOT) + os.sep, ""), (str(REPO_ROOT), ".")]


# ---------------------------------------------------------------------------------------------------------------------
# leak check and card checks


def _leaks_in_text(text: str, secrets: Sequence[str]) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, pattern in LEAK_PATTERNS.items():
            match = pattern.search(line)
            if match:
                found.append(f"line {lineno}: {what} {match.group(0)!r}")
        for secret in secrets:
            if secret in line:
                found.append(f"line {lineno}: the value of a secret (token or local folder)")
    return found


def check_no_leaks(folder: str | os.PathLike, secrets: Iterable[str] | None = None) -> None:
    """Fail the publish if a folder about to be published holds a local path, a token or a pickle.

    Scans every text file (cards, configs, JSON, code, logs), the metadata of every safetensors file and the string
    columns of every Parquet file for `/work/`, `/tmp/`, `/home/`, `/root/`, `/Users/`, `C:\\Users\\`, an
    `hf_...` token and the literal values in `secrets` (by default `$HF_TOKEN` and the user's home folder).

    Raises:
        `ValueError` listing every `file: line: what` found, or every pickle file.
    """
    folder = Path(folder)
    if secrets is None:
        home = str(Path.home())
        secrets = [os.environ.get("HF_TOKEN", ""), os.environ.get("HUGGING_FACE_HUB_TOKEN", ""),
                   home + os.sep if len(home) > 1 else ""]
    secrets = [s for s in secrets if s and len(s) >= 4]
    problems = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            problems.append(f"{rel}: pickle-format file ({suffix}); publish safetensors/Parquet/JSON only")
            continue
        if suffix in TEXT_SUFFIXES or path.name.startswith("."):
            text = path.read_text(errors="replace")
        elif suffix == ".safetensors":
            text = json.dumps(safetensors_metadata(path))
        elif suffix == ".parquet":
            text = parquet_strings(path)
        else:
            problems.append(f"{rel}: unexpected file type {suffix!r}; not published")
            continue
        problems.extend(f"{rel}: {leak}" for leak in _leaks_in_text(text, secrets))
    if problems:
        raise ValueError(
            f"Refusing to publish `{folder.name}/`: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def check_card(path: str | os.PathLike, repo_type: str = "model") -> RepoCard:
    """Offline checks of a rendered card (`RepoCard.validate` needs the Hub; it runs before a real push).

    - the YAML front matter parses (`metadata_load`) and loads into `ModelCardData`/`DatasetCardData`;
    - a model card's `model-index` converts back to `EvalResult`s (`model_index_to_eval_results`) with numbers;
    - a dataset card declares `configs` whose `data_files` exist in the folder.

    Returns:
        The loaded card. Raises `ValueError` naming the card and the problem.
    """
    from huggingface_hub import metadata_load

    path = Path(path)
    meta = metadata_load(path)
    if not meta:
        raise ValueError(f"`{path}`: no YAML metadata block.")
    card_class = {"model": ModelCard, "dataset": DatasetCard}.get(repo_type, RepoCard)
    card = card_class.load(path)
    if repo_type == "model" and "model-index" in meta:
        name, results = model_index_to_eval_results(meta["model-index"])
        if not results or not all(isinstance(r.metric_value, int | float) for r in results):
            raise ValueError(f"`{path}`: `model-index` of {name!r} has no numeric results.")
    if repo_type == "dataset":
        configs = meta.get("configs")
        if not configs:
            raise ValueError(f"`{path}`: a dataset card must declare `configs` (splits for `load_dataset`).")
        for config in configs:
            for entry in _as_list(config["data_files"]):
                for one in _as_list(entry["path"] if isinstance(entry, dict) else entry):
                    if not list(path.parent.glob(one)):
                        raise ValueError(f"`{path}`: config {config['config_name']!r} names missing {one!r}.")
    if "{{" in card.text or "}}" in card.text:
        raise ValueError(f"`{path}`: unrendered template placeholders left in the card.")
    return card


# ---------------------------------------------------------------------------------------------------------------------
# card pieces


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _label(key: str) -> str:
    """`ndcg@10` -> `nDCG@10`."""
    name, k = key.split("@")
    return f"{METRIC_NAMES[name]}@{k}"


def _metric_keys(metrics: dict) -> list[str]:
    keys = [k for k in metrics if k.split("@")[0] in METRIC_NAMES and "@" in k]
    return sorted(keys, key=lambda k: (list(METRIC_NAMES).index(k.split("@")[0]), int(k.split("@")[1])))


def metrics_table(results: dict[str, dict]) -> str:
    """Markdown table `model | nDCG@5 | ...` of a `results.json` `results` block."""
    keys = _metric_keys(next(iter(results.values()), {}))
    head = "| model | " + " | ".join(_label(k) for k in keys) + " |"
    rows = [f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |" for name, m in results.items()]
    return "\n".join([head, "|" + "---|" * (len(keys) + 1), *rows])


ABLATION_COLUMNS = ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20", "mrr@10")


def ablation_table(results: dict) -> str:
    """Markdown table of a `recipes/ablation.py` `results.json`: one row per finished variant (the first, `full`, is
    the reference of the `nDCG@10 vs full` column), under its protocol line."""
    variants = {n: v for n, v in results.get("variants", {}).items() if v.get("finished")}
    if not variants:
        raise ValueError("ablation results hold no finished variant")
    reference = variants.get("full")
    lines = [f"Protocol: {results.get('protocol', '')}", "",
             "| variant | " + " | ".join(map(_label, ABLATION_COLUMNS)) + " | nDCG@10 vs full | samples | what |",
             "|---|" + "---|" * (len(ABLATION_COLUMNS) + 3)]
    for name, v in variants.items():
        m = v["metrics"]
        delta = ""
        if reference is not None and name != "full" and reference["metrics"]["ndcg@10"] > 0:
            delta = f"{m['ndcg@10'] / reference['metrics']['ndcg@10'] - 1:+.1%}"
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in ABLATION_COLUMNS)
                     + f" | {delta} | {m['samples_seen']:,} | {v['description']} |")
    return "\n".join(lines)


def eval_results(metrics: dict, dataset_repo_id: str, dataset_name: str, split: str = "test") -> list[EvalResult]:
    """`EvalResult`s (the card's `model-index`) for every nDCG/HR/MRR@K in `metrics`."""
    return [
        EvalResult(
            task_type="sequential-recommendation",
            task_name="Sequential recommendation (full ranking)",
            dataset_type=dataset_repo_id,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=key.replace("@", "_at_"),
            metric_name=_label(key),
            metric_value=round(float(metrics[key]), 6),
        )
        for key in _metric_keys(metrics)
    ]


def _versions_block(meta_info: dict) -> str:
    import huggingface_hub

    lines = [f"- {name}: {version}" for name, version in meta_info.items()]
    lines.append(f"- huggingface_hub (publishing): {huggingface_hub.__version__}")
    return "\n".join(lines)


def _stats_rows(stats: dict) -> list[tuple[str, str]]:
    labels = {
        "num_users": "users", "num_items": "items", "num_interactions": "interactions",
        "num_train_samples": "training samples", "num_empty_history_samples": "training samples with an empty history",
        "num_validation": "validation users", "num_test": "test users",
        "num_short_users": "users with fewer than 3 items (training only)",
        "num_items_with_title": "items with a title", "num_items_with_image": "items with an image",
        "max_train_samples_per_user": "training samples per user, at most",
    }
    return [(label, _fmt(stats[key])) for key, label in labels.items() if key in stats]


def _source_notes(stats: dict) -> tuple[list[dict], bool]:
    """Provenance of the raw inputs named in `stats["source"]`; `known` is False when some input is unknown."""
    notes, known = [], True
    for role, name in (stats.get("source") or {}).items():
        base = Path(str(name)).name
        entry = KNOWN_SOURCES.get(base)
        if entry is None:
            known = False
            entry = {"origin": f"`{base}`, supplied by the publisher", "license": "stated by the publisher"}
        notes.append({"role": role, "file": base, **entry})
    return notes, known and bool(notes)


def _dataset_name(stats: dict, run_name: str) -> str:
    names = [Path(str(n)).name for n in (stats.get("source") or {}).values()]
    if "Beauty_new.txt" in names:
        return "Amazon Beauty, MME-SID's Beauty_new"
    return f"{run_name}, leave-one-out splits"


# ---------------------------------------------------------------------------------------------------------------------
# the training config


def _finetune_yaml(results: dict, training_config: str | os.PathLike | None) -> tuple[dict, str | None]:
    """The fine-tuning YAML (`--config` of the recorded command, or `training_config`), parsed."""
    candidates = []
    if training_config is not None:
        candidates.append(Path(training_config))
    argv = shlex.split(results.get("run_info", {}).get("command", ""))
    if "--config" in argv[:-1]:
        value = Path(argv[argv.index("--config") + 1])
        candidates += [value, REPO_ROOT / value]
    for path in candidates:
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}, path.name
    if training_config is not None:
        raise FileNotFoundError(f"`training_config` {str(training_config)!r} not found.")
    logger.warning("The fine-tuning YAML was not found (pass `--training_config`); the card will say so.")
    return {}, None


def training_config(
    finetune_dir: Path, results: dict, base_model_id: str, replacements, training_config_path=None
) -> dict:
    """What the model repo's `training_config.json` holds: the YAML, the script arguments, LoRA, run and train info."""
    finetune_yaml, yaml_name = _finetune_yaml(results, training_config_path)
    if "model_name_or_path" in finetune_yaml:
        finetune_yaml["model_name_or_path"] = base_model_id
    run_info = dict(results.get("run_info", {}))
    script = run_info.pop("config", {}).get("script", {})
    lora = {}
    adapter_config = finetune_dir / "adapter_config.json"
    if adapter_config.is_file():
        cfg = json.loads(adapter_config.read_text())
        tokens = cfg.get("trainable_token_indices") or {}
        lora = {k: cfg.get(k) for k in ("peft_type", "r", "lora_alpha", "lora_dropout", "modules_to_save",
                                         "peft_version")}
        lora["target_modules"] = sorted(cfg.get("target_modules") or [])
        lora["trainable_token_indices"] = {k: f"{len(v)} ids, {min(v)}..{max(v)}" for k, v in tokens.items()}
    train_info = {k: v for k, v in results.get("train_info", {}).items() if k != "log_history"}
    out = {"base_model": base_model_id, "finetune_config_file": yaml_name, "finetune_config": finetune_yaml,
           "script_arguments": script, "lora": lora, "run_info": run_info, "train_info": train_info}
    return scrub_local_paths(out, replacements)


# ---------------------------------------------------------------------------------------------------------------------
# the three folders


def _repo_links(model_repo_id: str, dataset_repo_id: str, rqvae_repo_id: str) -> dict:
    return {"model_repo_id": model_repo_id, "dataset_repo_id": dataset_repo_id, "rqvae_repo_id": rqvae_repo_id}


def _render_card(card_class, card_data, template: str, out: Path, model_repo_id: str, dataset_repo_id: str,
                 rqvae_repo_id: str, **values) -> Path:
    """Render `hub_cards/<template>` with the three repo ids and the citation into `out/README.md`; returns `out`."""
    card = card_class.from_template(card_data, template_path=str(hub_cards_dir() / template), citation=CITATION,
                                    **_repo_links(model_repo_id, dataset_repo_id, rqvae_repo_id), **values)
    card.save(out / "README.md")
    return out


def build_model_folder(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike, model_repo_id: str, dataset_repo_id: str,
    rqvae_repo_id: str, base_model_id: str = DEFAULT_BASE_MODEL_ID,
    training_config_path: str | os.PathLike | None = None, finetune_dir: str | os.PathLike | None = None,
    evaluation_results: str | os.PathLike | None = None, ablation_results: str | os.PathLike | None = None,
    space_repo_id: str | None = None,
) -> Path:
    """`<run>/finetune/` -> the model repo folder (full model at the root, adapter under `adapter/`, card).

    `evaluation_results`: a `recipes/evaluate.py` `results.json` whose table (MME-SID beside the baselines) and
    `mmesid` row the card shows instead of the fine-tuning run's own figures (copied to `eval_results.json`);
    `ablation_results`: a `recipes/ablation.py` `results.json`, shown under "Ablations" (`ablation_results.json`);
    `space_repo_id`: a Space running the demo app (`app.py`), which the card links."""
    run = Run(run_dir)
    finetune_dir = Path(finetune_dir) if finetune_dir else run.finetune
    full = finetune_dir / FULL_MODEL_SUBFOLDER
    if not (full / "config.json").is_file():
        raise FileNotFoundError(
            f"`{full}/config.json` not found: the model repo needs the full model. Run `recipes/finetune.py` with "
            "`--save_full_model true` (the default)."
        )
    out = _fresh_folder(output_dir)
    replacements = _path_replacements(run.root)

    for src in sorted(p for p in full.iterdir() if p.is_file()):
        if src.suffix.lower() in PICKLE_SUFFIXES or src.name == "README.md":
            continue
        _copy(src, out / src.name)
    config = json.loads((out / "config.json").read_text())
    missing = [f"{m}.py" for m in ("configuration_mmesid", "modeling_mmesid", "processing_mmesid", "generation_mmesid",
                                    "recommender_mmesid", "building_mmesid")
               if not (out / f"{m}.py").is_file()]
    if "auto_map" not in config or missing:
        raise ValueError(
            f"`{full}` is not a remote-code checkpoint (auto_map: {config.get('auto_map')}, missing {missing}); "
            "save it after `import modeling_mmesid` so `register_for_auto_class` copies the code."
        )
    # The backbone's local folder leaks through the nested config; the Hub id is what it was trained from.
    config.pop("_name_or_path", None)
    if isinstance(config.get("text_config"), dict) and "_name_or_path" in config["text_config"]:
        config["text_config"]["_name_or_path"] = base_model_id
    atomic_write_json(out / "config.json", config)

    has_adapter = (finetune_dir / "adapter_config.json").is_file()
    if has_adapter:
        adapter = json.loads((finetune_dir / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = base_model_id  # never the local path (or None) training saw
        atomic_write_json(out / ADAPTER_SUBFOLDER / "adapter_config.json", adapter)
        for src in finetune_dir.glob("adapter_model*.safetensors"):
            _copy(src, out / ADAPTER_SUBFOLDER / src.name)

    results = read_json(finetune_dir / "results.json")
    train_config = training_config(finetune_dir, results, base_model_id, replacements, training_config_path)
    atomic_write_json(out / "training_config.json", train_config)
    atomic_write_json(out / "results.json", scrub_local_paths(results, replacements))

    shown = results
    if evaluation_results is not None:
        shown = read_json(Path(evaluation_results))
        if "mmesid" not in shown.get("results", {}):
            raise ValueError(f"{evaluation_results}: no `mmesid` row in `results`; pass an evaluate.py run with --model.")
        atomic_write_json(out / "eval_results.json", scrub_local_paths(shown, replacements))
    ablation = None
    if ablation_results is not None:
        ablation_json = read_json(Path(ablation_results))
        try:
            ablation = ablation_table(ablation_json)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{ablation_results}: not a recipes/ablation.py results.json ({error!r})") from error
        atomic_write_json(out / "ablation_results.json", scrub_local_paths(ablation_json, replacements))
    stats = read_json(run.stats_file)
    metrics = shown["results"]["mmesid"] if "mmesid" in shown["results"] else next(iter(shown["results"].values()))
    dataset_name = _dataset_name(stats, run.root.name)
    card_data = ModelCardData(
        model_name=model_repo_id.split("/")[-1], base_model=base_model_id, datasets=[dataset_repo_id],
        library_name="transformers", license="apache-2.0", tags=TAGS,
        metrics=sorted({k.split("@")[0] for k in _metric_keys(metrics)}),
        eval_results=eval_results(metrics, dataset_repo_id, dataset_name),
    )
    script = train_config.get("script_arguments", {})
    gguf = script.get("gguf_file")
    hyper = {k: v for k, v in train_config["finetune_config"].items()
             if k not in {"run_dir", "output_dir", "model_name_or_path"}}
    return _render_card(
        ModelCard, card_data, "model_card.md", out, model_repo_id, dataset_repo_id, rqvae_repo_id,
        model_class=MODEL_CLASS,
        base_model_id=base_model_id,
        dataset_name=dataset_name,
        protocol=shown.get("protocol", ""),
        metrics_table=metrics_table({k: v for k, v in shown["results"].items()}),
        ablation_table=ablation,
        modalities=", ".join(config.get("modalities") or []),
        num_items=_fmt(config.get("num_items")),
        num_levels=config.get("num_levels"),
        codebook_size=config.get("codebook_size"),
        fusion=config.get("fusion"),
        sid_init=config.get("sid_init"),
        has_adapter=has_adapter,
        adapter_subfolder=ADAPTER_SUBFOLDER,
        lora=train_config.get("lora", {}),
        gguf_file=gguf,
        hyperparameters=[(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in hyper.items()],
        trainable_parameters=_fmt(train_config["train_info"].get("trainable_parameters")),
        train_samples=_fmt(train_config["train_info"].get("train_samples")),
        max_train_users=script.get("max_train_users"),
        space_repo_id=space_repo_id,
        versions=_versions_block(results.get("run_info", {}).get("meta_info", {})),
        git_commit=results.get("run_info", {}).get("git_commit"),
    )


def build_dataset_folder(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike, model_repo_id: str, dataset_repo_id: str,
    rqvae_repo_id: str, license: str | None = None,
) -> Path:
    """`<run>/{data,embeddings,sids}` -> the dataset repo folder. `license` defaults to `"other"` (research-use
    Amazon Review Data) for the known Amazon sources and to `"unknown"` otherwise."""
    run = Run(run_dir)
    stats = read_json(run.stats_file)
    out = _fresh_folder(output_dir)
    replacements = _path_replacements(run.root)

    for split in SPLITS:
        src = run.split_file(split)
        if not src.is_file():
            raise FileNotFoundError(f"`{src}` not found; run `recipes/prepare_data.py` first.")
        _copy(src, out / "data" / f"{split}.parquet")
    files = [
        {"path": f"data/{s}.parquet", "what": f"{s} split: `user_id`, `history` (oldest first), `target`",
         "made_by": "`recipes/prepare_data.py` (leave-one-out)"} for s in SPLITS
    ]
    configs = [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}.parquet"} for s in SPLITS]}]
    for name, what, config_name in (
        (DATA_FILES["items"], "item table: `item_id`, `title`, `brand`, `categories`, `image`, `train_count`",
         "items"),
        (DATA_FILES["train_sequences"], "each user's training prefix `items[:-2]` and `start`, its first training target", "train_sequences"),
    ):
        if (run.data / name).is_file():
            _copy(run.data / name, out / name)
            files.append({"path": name, "what": what, "made_by": "`recipes/prepare_data.py`"})
            configs.append({"config_name": config_name, "data_files": [{"split": "train", "path": name}]})
    atomic_write_json(out / DATA_FILES["stats"], scrub_local_paths(stats, replacements))
    files.append({"path": DATA_FILES["stats"], "what": "counts, split protocol, sha256 fingerprint of the sequences",
                  "made_by": "`recipes/prepare_data.py`"})

    embeddings = []
    for src in sorted(run.embeddings.glob("*.safetensors")):
        _copy(src, out / "embeddings" / src.name)
        sidecar = src.with_suffix(".json")
        meta = scrub_local_paths(json.loads(sidecar.read_text()), replacements) if sidecar.is_file() else {}
        if meta:
            atomic_write_json(out / "embeddings" / sidecar.name, meta)
        embeddings.append({"modality": src.stem, "encoder": meta.get("encoder", "not recorded"),
                           "dim": meta.get("dim"), "num_masked": meta.get("num_masked")})
        files.append({"path": f"embeddings/{src.name}", "what": f"{src.stem} item embeddings, key `embeddings` "
                      f"`[num_items + 1, {meta.get('dim', 'dim')}]` (row 0 = padding)",
                      "made_by": f"`recipes/encode_items.py` ({meta.get('encoder', 'encoder not recorded')})"})
        if meta:
            files.append({"path": f"embeddings/{sidecar.name}", "what": "sidecar: encoder, dim, fingerprint",
                          "made_by": "`recipes/encode_items.py`"})

    sid_meta = {}
    for name in (*SIDS_FILES.values(), run.diagnostics_file.name):
        src = run.sids / name
        if not src.is_file():
            continue
        if src.suffix == ".json":
            atomic_write_json(out / "sids" / name, scrub_local_paths(json.loads(src.read_text()), replacements))
        else:
            _copy(src, out / "sids" / name)
        what = {
            "sids.safetensors": "semantic IDs, key `sids` int64 `[num_items + 1, modalities, levels]`",
            "codebooks.safetensors": "MM-RQ-VAE codebooks, keys `codebooks.<modality>` `[levels, codes, e_dim]`",
            "sids.json": "modality order of axis 1, levels, codebook size, e_dim, fingerprint",
            "diagnostics.json": "collision rate, codebook utilization/perplexity, reconstruction, Kendall tau-a, spectra",
        }[name]
        files.append({"path": f"sids/{name}", "what": what,
                      "made_by": f"`recipes/assign_sids.py` with [{rqvae_repo_id}](https://huggingface.co/{rqvae_repo_id})"})
    if run.sids_meta_file.is_file():
        sid_meta = json.loads(run.sids_meta_file.read_text())

    sources, known = _source_notes(stats)
    amazon = any(s["file"] in KNOWN_SOURCES for s in sources)
    if license is None:
        license = "other" if amazon else "unknown"
    dataset_name = _dataset_name(stats, run.root.name)
    size = stats.get("num_users", 0)
    size_category = "n<1K" if size < 1_000 else "1K<n<10K" if size < 10_000 else "10K<n<100K" if size < 100_000 \
        else "100K<n<1M"
    card_data = DatasetCardData(
        license=license, license_name="amazon-review-data-research" if license == "other" and amazon else None,
        pretty_name=dataset_name, size_categories=[size_category], task_categories=["other"], tags=TAGS,
        configs=configs,
    )
    return _render_card(
        DatasetCard, card_data, "dataset_card.md", out, model_repo_id, dataset_repo_id, rqvae_repo_id,
        dataset_name=dataset_name,
        stats_rows=_stats_rows(stats),
        split_protocol=stats.get("protocol", ""),
        fingerprint=stats.get("fingerprint", ""),
        files=files,
        sources=sources,
        sources_known=known,
        amazon=amazon,
        license=license,
        num_items_with_image=stats.get("num_items_with_image", 0),
        embeddings=embeddings,
        sid_meta=sid_meta,
    )


def build_rqvae_folder(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike, model_repo_id: str, dataset_repo_id: str,
    rqvae_repo_id: str, rqvae_dir: str | os.PathLike | None = None,
) -> Path:
    """`<run>/rqvae/` -> the MM-RQ-VAE repo folder (`config.json`, `model.safetensors`, card)."""
    run = Run(run_dir)
    src = Path(rqvae_dir) if rqvae_dir else run.rqvae
    if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"`{src}` has no `config.json` + `model.safetensors`; run `recipes/train_rqvae.py` first, or publish "
            "without it (`--components model dataset`)."
        )
    out = _fresh_folder(output_dir)
    replacements = _path_replacements(run.root)
    config = json.loads((src / "config.json").read_text())
    config.pop("_name_or_path", None)
    atomic_write_json(out / "config.json", config)
    _copy(src / "model.safetensors", out / "model.safetensors")
    results = {}
    if (src / "results.json").is_file():
        results = scrub_local_paths(json.loads((src / "results.json").read_text()), replacements)
        atomic_write_json(out / "results.json", results)
    diagnostics = {}
    if run.diagnostics_file.is_file():
        diagnostics = json.loads(run.diagnostics_file.read_text())
        diagnostics = scrub_local_paths({k: v for k, v in diagnostics.items() if k != "run_info"}, replacements)
        if "collision_resolution" in diagnostics:  # the card's JSON keeps the count; the moves stay in the file
            diagnostics["collision_resolution"] = {
                k: v for k, v in diagnostics["collision_resolution"].items() if k != "changes"
            }
    card_data = ModelCardData(model_name=rqvae_repo_id.split("/")[-1], datasets=[dataset_repo_id],
                              library_name="mmesid", license="apache-2.0", tags=[*TAGS, "rq-vae", "item-tokenizer"])
    return _render_card(
        ModelCard, card_data, "rqvae_card.md", out, model_repo_id, dataset_repo_id, rqvae_repo_id,
        config_rows=[(k, json.dumps(config[k])) for k in (
            "modalities", "input_dims", "hidden_dims", "e_dim", "num_levels", "codebook_size", "recon_loss",
            "beta", "alignment_weight", "alignment_anchor", "kmeans_method", "sinkhorn_epsilon", "dead_code_restart",
            "restart_usage_fraction", "normalize_latents") if k in config],
        diagnostics=json.dumps(diagnostics, indent=2)[:4000] if diagnostics else "",
        diagnostics_rows=_diagnostics_rows(diagnostics),
        meta_info=_versions_block((results.get("run_info") or {}).get("meta_info") or {}),
    )


def _diagnostics_rows(diagnostics: dict) -> list[tuple[str, ...]]:
    """One summary row per modality of `sids/diagnostics.json` for the RQ-VAE card (docs/SID_QUALITY.md)."""
    rows = []
    for m, usage in (diagnostics.get("codebook") or {}).items():
        tau = (diagnostics.get("kendall_tau") or {}).get(m, {})
        recon = (diagnostics.get("reconstruction") or {}).get(m, {})
        rows.append((
            m,
            f"{diagnostics['collision_rate'][m]:.4f}",
            " / ".join(f"{u:.1%}" for u in usage["utilization"]),
            " / ".join(f"{p:.1f}" for p in usage["perplexity"]),
            f"{recon['cosine']:.4f}" if "cosine" in recon else "–",
            f"{tau['tau_a']:.4f}" if "tau_a" in tau else "–",
            f"{tau['concordant_fraction']:.4f}" if "concordant_fraction" in tau else "–",
        ))
    if rows and "combined" in diagnostics.get("collision_rate", {}):
        rate = f"{diagnostics['collision_rate']['combined']:.4f}"
        resolution = diagnostics.get("collision_resolution") or {}
        if resolution.get("enabled"):
            before = resolution["collision_rate_before"]["combined"]
            rate += f" ({before:.4f} before resolution; {resolution['moved_items']} items moved)"
        rows.append(("combined ID", rate, "", "", "", "", ""))
    return rows


def build_repo_folders(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None,
    model_repo_id: str = "org/mmesid-beauty", dataset_repo_id: str = "org/mmesid-beauty-data",
    rqvae_repo_id: str = "org/mmesid-beauty-rqvae", base_model_id: str = DEFAULT_BASE_MODEL_ID,
    components: Sequence[str] = COMPONENTS, training_config_path: str | os.PathLike | None = None,
    dataset_license: str | None = None, finetune_dir: str | os.PathLike | None = None,
    evaluation_results: str | os.PathLike | None = None, ablation_results: str | os.PathLike | None = None,
    space_repo_id: str | None = None,
) -> dict[str, Path]:
    """Build, card and check the repo folders of a run under `output_dir` (default `<run>/hub/`); `finetune_dir`,
    `evaluation_results`, `ablation_results` and `space_repo_id` as in [`build_model_folder`]."""
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"`components` must be among {list(COMPONENTS)}, got {unknown}.")
    repo_ids = {"model_repo_id": model_repo_id, "dataset_repo_id": dataset_repo_id, "rqvae_repo_id": rqvae_repo_id,
                "base_model_id": base_model_id, **({"space_repo_id": space_repo_id} if space_repo_id else {})}
    for name, repo_id in repo_ids.items():
        if repo_id.count("/") != 1 or Path(repo_id).is_absolute() or repo_id.startswith(("./", "../")):
            raise ValueError(f"`{name}` must be a Hub id `namespace/name`, got {repo_id!r}.")
    run_dir = Path(run_dir)
    output_dir = Path(output_dir) if output_dir else Run(run_dir).hub
    links = _repo_links(model_repo_id, dataset_repo_id, rqvae_repo_id)
    folders = {}
    if "dataset" in components:
        folders["dataset"] = build_dataset_folder(run_dir, output_dir / "dataset", **links, license=dataset_license)
    if "rqvae" in components:
        folders["rqvae"] = build_rqvae_folder(run_dir, output_dir / "rqvae", **links)
    if "model" in components:
        folders["model"] = build_model_folder(
            run_dir, output_dir / "model", **links, base_model_id=base_model_id,
            training_config_path=training_config_path, finetune_dir=finetune_dir, evaluation_results=evaluation_results,
            ablation_results=ablation_results, space_repo_id=space_repo_id,
        )
    for kind, folder in folders.items():
        check_card(folder / "README.md", "dataset" if kind == "dataset" else "model")
        check_no_leaks(folder)
    return folders


def push_folder(folder: str | os.PathLike, repo_id: str, repo_type: str = "model", private: bool = False,
                commit_message: str = "Upload with mmesid recipes/publish.py") -> str:
    """Validate the card on the Hub, create the repo if needed and upload the folder. The token comes from
    `HF_TOKEN` or `hf auth login` (`huggingface_hub`'s own lookup), never from an argument."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    check_no_leaks(folder)  # again: the folder may have been edited since it was built
    RepoCard.load(folder / "README.md").validate(repo_type=repo_type)
    api = HfApi()
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message=commit_message)
    return str(url)


__all__ = [
    "build_dataset_folder",
    "build_model_folder",
    "build_repo_folders",
    "build_rqvae_folder",
    "check_card",
    "check_no_leaks",
    "push_folder",
    "scrub_local_paths",
]
