# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Hub publishing (`modeling_mmesid/hub.py`, `recipes/publish.py`), tested offline end to end.

A tiny run is fine-tuned (2 steps), published with `--dry-run`, placed in a Hub cache laid out as `huggingface_hub`
lays it out, and loaded back *by repo id* with `HF_HUB_OFFLINE=1`: the full model through `AutoModel` in a process
where `mmesid` cannot be imported, the adapter through peft, the dataset through `datasets.load_dataset`.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
MODEL_ID, DATASET_ID, RQVAE_ID, BACKBONE_ID = (
    "org/mmesid-beauty", "org/mmesid-beauty-data", "org/mmesid-beauty-rqvae", "org/tiny-llama")
PROBE = [[1, 2, 3], [5], [7, 8, 9, 10], [40, 39], [11, 3, 11, 12, 13, 14]]
LEAK = re.compile(r"(?<![\w.\-])/(?:work|tmp|home|root)/|hf_[A-Za-z0-9]{30,}")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(cache: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(cache), HF_HUB_CACHE=str(cache / "hub"), HF_DATASETS_CACHE=str(cache / "datasets"),
               HF_MODULES_CACHE=str(cache / "modules"), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("HF_TOKEN", None)
    return env


def _run(code: str, cache: Path, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter (outside the checkout); it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(cache), cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Tiny run -> 2-step fine-tune (scores of the in-memory model kept) -> `publish.py --dry-run` -> Hub cache."""
    import mmesid_testing as recipes_conftest
    from trl import ModelConfig, TrlParser

    from tokenization.configuration_mmrqvae import MMRQVAEConfig
    from tokenization.modeling_mmrqvae import MMRQVAE
    root = tmp_path_factory.mktemp("hub")
    run = recipes_conftest.build_tiny_run(root)
    torch.manual_seed(0)
    MMRQVAE(MMRQVAEConfig(modalities=["collaborative", "text"], input_dims=[8, 12], hidden_dims=[16], e_dim=16,
                          num_levels=2, codebook_size=8)).save_pretrained(run / "rqvae")

    finetune = _load("mmesid_finetune_recipe", REPO / "recipes" / "finetune.py")
    cfg = recipes_conftest.finetune_config(run, run / "finetune", max_steps=2, eval_strategy="no",
                                           save_strategy="no", logging_steps=1)
    # no `output_dir`: finetune.py writes <run_dir>/finetune (the run folder's), which publish.py reads
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(True) if not line.startswith("output_dir:")))
    in_memory = {}

    class KeepScores(finetune.MMESIDTrainer):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            self.model.eval()  # the trained PeftModel, LoRA not merged
            from modeling_mmesid import MMESIDRecommender

            recommender = MMESIDRecommender(self.model, self.processing_class)
            in_memory["scores"] = recommender.score_histories(PROBE)
            in_memory["top"] = recommender.recommend(PROBE, k=5)
            return out

    finetune.MMESIDTrainer = KeepScores
    finetune.main(*TrlParser((finetune.ScriptArguments, finetune.MMESIDTrainingConfig, ModelConfig))
                  .parse_args_and_config(["--config", str(cfg)]))

    publish = _load("mmesid_publish_recipe", REPO / "recipes" / "publish.py")
    (args,) = TrlParser((publish.ScriptArguments,)).parse_args_and_config(
        ["--run_dir", str(run), "--base_model_id", BACKBONE_ID, "--training_config", str(cfg), "--dry-run"])
    folders = publish.main(args)

    from modeling_mmesid.hub_cache import place_in_hub_cache

    cache = root / "hf"
    revisions = {}
    for folder, repo_id, repo_type in ((folders["model"], MODEL_ID, "model"), (folders["dataset"], DATASET_ID, "dataset"),
                                       (folders["rqvae"], RQVAE_ID, "model"), (run / "backbone", BACKBONE_ID, "model")):
        snapshot = place_in_hub_cache(folder, repo_id, repo_type, cache / "hub", datasets_cache_dir=cache / "datasets")
        revisions[repo_id] = snapshot.name
    return {"run": run, "folders": folders, "cache": cache, "revisions": revisions, "root": root, **in_memory}


# --------------------------------------------------------------------------------------------------- repo folders


def test_dry_run_writes_the_exact_repo_folders(published):
    folders = published["folders"]
    assert folders["model"] == published["run"] / "hub" / "model"

    def listing(kind):
        return sorted(p.relative_to(folders[kind]).as_posix() for p in folders[kind].rglob("*") if p.is_file())

    model = listing("model")
    for name in ("README.md", "config.json", "configuration_mmesid.py", "modeling_mmesid.py", "processing_mmesid.py",
                 "generation_mmesid.py", "recommender_mmesid.py", "building_mmesid.py", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "training_config.json",
                 "results.json"):
        assert name in model, name
    assert "adapter_config.json" not in model, "a root adapter_config.json makes transformers load the base model"
    assert not [n for n in model if n.endswith((".bin", ".pt", ".pkl"))], model  # no training_args.bin
    dataset = listing("dataset")
    for name in ("README.md", "data/train.parquet", "data/validation.parquet", "data/test.parquet", "items.parquet",
                 "train_sequences.parquet", "stats.json", "embeddings/collaborative.safetensors",
                 "embeddings/text.safetensors", "embeddings/text.json", "sids/sids.safetensors",
                 "sids/codebooks.safetensors", "sids/sids.json"):
        assert name in dataset, name
    assert listing("rqvae") == ["README.md", "config.json", "model.safetensors"]

    config = json.loads((folders["model"] / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_mmesid.MMESIDForSequentialRecommendation"
    assert config["text_config"]["_name_or_path"] == BACKBONE_ID
    adapter = json.loads((folders["model"] / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == BACKBONE_ID
    assert {"item_head", "fusion_gate", "item_fusion"} <= set(adapter["modules_to_save"])
    training = json.loads((folders["model"] / "training_config.json").read_text())
    assert training["finetune_config"]["max_steps"] == 2 and training["finetune_config"]["model_name_or_path"] == BACKBONE_ID
    assert training["lora"]["r"] == 8


def test_no_local_path_or_token_in_published_folders(published):
    for folder in published["folders"].values():
        for path in folder.rglob("*"):
            if path.suffix in {".md", ".json", ".py", ".jinja", ".txt", ".yaml"}:
                text = path.read_text()
                assert not LEAK.search(text), f"{path.relative_to(folder)}: {LEAK.search(text).group(0)}"
                assert str(published["root"]) not in text


def test_leak_check_fails_the_publish(published, tmp_path):
    from modeling_mmesid.hub import check_no_leaks

    cases = {
        "results.json": json.dumps({"command": "finetune.py --config /home/alice/run.yaml"}),
        "notes.md": "token: hf_" + "a1B2c3D4e5" * 4,
        "training_args.bin": "pickle",
        "config.json": json.dumps({"_name_or_path": "/work/main/outputs/run/backbone"}),
    }
    for name, content in cases.items():
        folder = tmp_path / name.replace(".", "_")
        shutil.copytree(published["folders"]["rqvae"], folder)
        (folder / name).write_text(content)
        with pytest.raises(ValueError, match=re.escape(name)):
            check_no_leaks(folder)
    folder = tmp_path / "secret"
    shutil.copytree(published["folders"]["rqvae"], folder)
    (folder / "log.txt").write_text("using s3cr3t-value")
    with pytest.raises(ValueError, match="secret"):
        check_no_leaks(folder, secrets=["s3cr3t-value"])
    check_no_leaks(published["folders"]["rqvae"])


def test_scrub_local_paths_rewrites_metadata():
    from modeling_mmesid.hub import scrub_local_paths

    out = scrub_local_paths({"cmd": "finetune.py --config /tmp/x/run/finetune.yaml", "dirs": ["/tmp/x/run/data"],
                             "url": "https://huggingface.co/org/m", "n": 3}, [("/tmp/x/run", "outputs/run")])
    assert out == {"cmd": "finetune.py --config outputs/run/finetune.yaml", "dirs": ["outputs/run/data"],
                   "url": "https://huggingface.co/org/m", "n": 3}
    assert scrub_local_paths("read /srv/data/items.jsonl") == "read <local>/items.jsonl"


# --------------------------------------------------------------------------------------------------- cards


def test_cards_validate_offline(published):
    from huggingface_hub import DatasetCardData, ModelCardData, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from modeling_mmesid.hub import check_card

    folders = published["folders"]
    card = check_card(folders["model"] / "README.md", "model")
    assert isinstance(card.data, ModelCardData)
    meta = metadata_load(folders["model"] / "README.md")
    assert meta["base_model"] == BACKBONE_ID and meta["datasets"] == [DATASET_ID]
    assert meta["library_name"] == "transformers" and {"recommendation", "semantic-ids", "mmesid"} <= set(meta["tags"])
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "mmesid-beauty"
    metrics = json.loads((folders["model"] / "results.json").read_text())["results"]["mmesid"]
    by_type = {r.metric_type: r.metric_value for r in results}
    assert by_type["ndcg_at_10"] == pytest.approx(metrics["ndcg@10"], abs=1e-6)
    assert len(by_type) == 9 and all(r.dataset_type == DATASET_ID and r.dataset_split == "test" for r in results)

    text = (folders["model"] / "README.md").read_text()
    protocol = json.loads((folders["model"] / "results.json").read_text())["protocol"]
    for quote in ((f'AutoModel.from_pretrained("{MODEL_ID}", trust_remote_code=True)` returns '
                   "`MMESIDForSequentialRecommendation`"),
                  f'model = AutoModel.from_pretrained("{MODEL_ID}", trust_remote_code=True)',
                  protocol, "| model | nDCG@5 | nDCG@10 | nDCG@20 | HR@5", "## Framework versions", "- transformers: ",
                  "@inproceedings{wang2025mmesid", 'subfolder="adapter"', "## Try it in the browser",
                  'pip install -e ".[demo]"', f"python app.py --model {MODEL_ID} --data {DATASET_ID}"):
        assert quote in text, quote
    assert "huggingface.co/spaces/" not in text  # no Space given: the card shows the local command only

    dataset_card = check_card(folders["dataset"] / "README.md", "dataset")
    assert isinstance(dataset_card.data, DatasetCardData)
    dmeta = metadata_load(folders["dataset"] / "README.md")
    default = next(c for c in dmeta["configs"] if c["config_name"] == "default")
    assert {f["split"]: f["path"] for f in default["data_files"]} == {
        s: f"data/{s}.parquet" for s in ("train", "validation", "test")}
    dtext = (folders["dataset"] / "README.md").read_text()
    stats = json.loads((folders["dataset"] / "stats.json").read_text())
    assert stats["protocol"] in dtext and f"| training samples | {stats['num_train_samples']:,} |" in dtext
    for path in ("data/train.parquet", "items.parquet", "embeddings/text.safetensors", "sids/codebooks.safetensors"):
        assert f"`{path}`" in dtext, path  # provenance row of every file
    assert "## Licence notes" in dtext and f'load_dataset("{DATASET_ID}")' in dtext

    rqvae = check_card(folders["rqvae"] / "README.md", "model")
    assert f'MMRQVAE.from_pretrained("{RQVAE_ID}")' in rqvae.text and "compute_semantic_ids" in rqvae.text


def test_card_templates_live_in_hub_cards():
    from modeling_mmesid import hub

    assert hub.hub_cards_dir() == REPO / "hub_cards"
    for name in ("model_card.md", "dataset_card.md", "rqvae_card.md"):
        assert (REPO / "hub_cards" / name).read_text().startswith("---\n{{ card_data }}\n---")


def test_missing_templates_error(monkeypatch, tmp_path):
    from modeling_mmesid import hub

    monkeypatch.setattr(hub, "__file__", str(tmp_path / "pkg" / "hub.py"))  # neither pkg/hub_cards nor hub_cards
    with pytest.raises(FileNotFoundError, match="hub_cards"):
        hub.hub_cards_dir()


# --------------------------------------------------------------------------------------------------- refusals


def test_refusals(published, tmp_path):
    from modeling_mmesid.hub import build_repo_folders

    run = published["run"]
    with pytest.raises(ValueError, match="`base_model_id` must be a Hub id"):
        build_repo_folders(run, tmp_path / "a", base_model_id=str(run / "backbone"))
    with pytest.raises(ValueError, match="`components` must be among"):
        build_repo_folders(run, tmp_path / "b", components=["weights"])
    with pytest.raises(ValueError, match="`space_repo_id` must be a Hub id"):
        build_repo_folders(run, tmp_path / "s", space_repo_id="https://huggingface.co/spaces/you/demo")
    with pytest.raises(FileNotFoundError, match="full model"):
        from modeling_mmesid.hub import build_model_folder

        build_model_folder(run, tmp_path / "c", MODEL_ID, DATASET_ID, RQVAE_ID, finetune_dir=tmp_path / "nothing")

    publish = _load("mmesid_publish_recipe_2", REPO / "recipes" / "publish.py")
    assert not [f.name for f in fields(publish.ScriptArguments) if "token" in f.name], "tokens come from the env only"
    args = publish.ScriptArguments(run_dir=str(run), output_dir=str(tmp_path / "push"), base_model_id=BACKBONE_ID)
    with pytest.raises(ValueError, match="placeholder namespace `org`"):
        publish.main(args)  # builds and checks, then refuses before any network call


def test_card_links_the_demo_app_space(published, tmp_path):
    """`--space_repo_id`: the card links the Space that runs the demo app, beside the command that runs it locally."""
    publish = _load("mmesid_publish_recipe_space", REPO / "recipes" / "publish.py")
    args = publish.ScriptArguments(run_dir=str(published["run"]), output_dir=str(tmp_path / "hub"),
                                   base_model_id=BACKBONE_ID, components=["model"], space_repo_id="you/mmesid-demo",
                                   dry_run=True)
    card = (publish.main(args)["model"] / "README.md").read_text()
    assert "The Space [you/mmesid-demo](https://huggingface.co/spaces/you/mmesid-demo) runs this model" in card
    assert f"python app.py --model {MODEL_ID} --data {DATASET_ID}" in card


def test_card_shows_an_evaluate_table(published, tmp_path):
    """`--eval_results`: the card's table, protocol and model-index come from an evaluate.py results.json (MME-SID
    beside the baselines on the same users), copied beside the card; a file without an MME-SID row is refused."""
    from modeling_mmesid.hub import build_model_folder

    row = {"ndcg@5": 0.1234, "ndcg@10": 0.2345, "hr@10": 0.5}
    evaluation_file = tmp_path / "eval" / "results.json"
    evaluation_file.parent.mkdir()
    evaluation_file.write_text(json.dumps({
        "results": {"popularity": {"ndcg@5": 0.0011, "ndcg@10": 0.0022, "hr@10": 0.01}, "mmesid": row},
        "protocol": "test: a protocol line of evaluate.py, 321 users"}))
    out = build_model_folder(published["run"], tmp_path / "model", MODEL_ID, DATASET_ID, RQVAE_ID,
                             base_model_id=BACKBONE_ID, evaluation_results=evaluation_file)
    card = (out / "README.md").read_text()
    assert "| popularity | 0.0011 | 0.0022 | 0.0100 |" in card and "| mmesid | 0.1234 | 0.2345 | 0.5000 |" in card
    assert "test: a protocol line of evaluate.py, 321 users" in card
    assert "value: 0.2345" in card  # model-index: the mmesid row
    assert json.loads((out / "eval_results.json").read_text())["results"]["mmesid"] == row

    evaluation_file.write_text(json.dumps({"results": {"popularity": row}, "protocol": "p"}))
    with pytest.raises(ValueError, match="no `mmesid` row"):
        build_model_folder(published["run"], tmp_path / "model2", MODEL_ID, DATASET_ID, RQVAE_ID,
                           base_model_id=BACKBONE_ID, evaluation_results=evaluation_file)


def test_card_shows_the_ablation_table(published, tmp_path):
    """`--ablation_results`: the card's Ablations section is the ablation.py results.json's table (values and the change
    against `full` computed by hand), the file is copied beside the card, and a file of another kind is refused."""
    from modeling_mmesid.hub import build_model_folder

    def metrics(ndcg10):
        return {"ndcg@5": 0.001, "ndcg@10": ndcg10, "ndcg@20": 0.003, "hr@5": 0.004, "hr@10": 0.005, "hr@20": 0.006,
                "mrr@10": 0.007, "samples_seen": 13704}

    ablation = {
        "protocol": "test: the ablation protocol line, 3,000 users",
        "variants": {
            "full": {"description": "the full model", "metrics": metrics(0.0125), "finished": True},
            "no_sids": {"description": "without SIDs", "metrics": metrics(0.0100), "finished": True},
            "no_text": {"description": "unfinished", "metrics": metrics(0.5), "finished": False},
        },
    }
    ablation_file = tmp_path / "ablation" / "results.json"
    ablation_file.parent.mkdir()
    ablation_file.write_text(json.dumps(ablation))
    out = build_model_folder(published["run"], tmp_path / "model", MODEL_ID, DATASET_ID, RQVAE_ID,
                             base_model_id=BACKBONE_ID, ablation_results=ablation_file)
    card = (out / "README.md").read_text()
    assert "### Ablations" in card and "test: the ablation protocol line, 3,000 users" in card
    assert "| full | 0.0010 | 0.0125 | 0.0030 | 0.0040 | 0.0050 | 0.0060 | 0.0070 |  | 13,704 | the full model |" in card
    assert "| no_sids | 0.0010 | 0.0100 |" in card and "| -20.0% | 13,704 | without SIDs |" in card  # 0.0100/0.0125 - 1
    assert "no_text" not in card  # unfinished rows are not shown
    assert json.loads((out / "ablation_results.json").read_text())["variants"]["no_sids"]["metrics"]["ndcg@10"] == 0.01
    plain = build_model_folder(published["run"], tmp_path / "plain", MODEL_ID, DATASET_ID, RQVAE_ID,
                               base_model_id=BACKBONE_ID)
    assert "### Ablations" not in (plain / "README.md").read_text()

    ablation_file.write_text(json.dumps({"results": {"mmesid": metrics(0.1)}}))
    with pytest.raises(ValueError, match="not a recipes/ablation.py results.json"):
        build_model_folder(published["run"], tmp_path / "model2", MODEL_ID, DATASET_ID, RQVAE_ID,
                           base_model_id=BACKBONE_ID, ablation_results=ablation_file)


# --------------------------------------------------------------------------------------------------- loading by repo id


def test_hub_cache_layout(published):
    from huggingface_hub import try_to_load_from_cache

    cache = published["cache"] / "hub"
    repo_dir = cache / "models--org--mmesid-beauty"
    revision = (repo_dir / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", revision) and revision == published["revisions"][MODEL_ID]
    link = repo_dir / "snapshots" / revision / "adapter" / "adapter_model.safetensors"
    assert link.is_symlink() and link.resolve().parent == (repo_dir / "blobs").resolve()
    assert try_to_load_from_cache(MODEL_ID, "config.json", cache_dir=cache) == str(
        repo_dir / "snapshots" / revision / "config.json")
    assert try_to_load_from_cache(DATASET_ID, "data/test.parquet", cache_dir=cache, repo_type="dataset")
    assert (published["cache"] / "datasets" / "org___mmesid-beauty-data" / "default").is_dir()


def test_automodel_by_repo_id_offline_without_the_package(published):
    """Fresh process, `mmesid` unimportable: the remote code in the cached repo alone gives the in-memory ranking."""
    out = _run(f"""
        import sys
        sys.modules["modeling_mmesid"] = None  # the package must not be importable: only the repo's own code
        sys.modules["tokenization"] = None
        import json
        from transformers import AutoModel, AutoProcessor
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        model = AutoModel.from_pretrained("{MODEL_ID}", trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained("{MODEL_ID}", trust_remote_code=True)
        recommender = get_class_from_dynamic_module("recommender_mmesid.MMESIDRecommender", "{MODEL_ID}")(
            model, processor)
        scores = recommender.score_histories({PROBE})
        from datasets import load_dataset
        splits = load_dataset("{DATASET_ID}")
        print(json.dumps({{"class": type(model).__name__, "module": type(model).__module__,
                          "processor": type(processor).__name__,
                          "top": recommender.recommend({PROBE}, k=5).tolist(),
                          "scores": scores[:, 1:].tolist(),
                          "splits": {{k: v.num_rows for k, v in splits.items()}},
                          "test0": splits["test"][0]}}))
    """, published["cache"], cwd=published["root"])
    assert out["class"] == "MMESIDForSequentialRecommendation"
    assert out["module"].startswith("transformers_modules.") and out["processor"] == "MMESIDProcessor"
    assert out["top"] == published["top"].tolist()
    torch.testing.assert_close(torch.tensor(out["scores"]), published["scores"][:, 1:], atol=1e-5, rtol=1e-5)

    from modeling_mmesid import data

    splits = data.load_splits(published["run"] / "data")
    assert out["splits"] == {k: v.num_rows for k, v in splits.items()}
    assert out["test0"] == splits["test"][0]


def test_demo_app_serves_the_published_repos_by_id_offline(published):
    """What the model card's "Try it in the browser" command loads: the model repo, and the dataset repo's item table
    and test split (`modeling_mmesid.demo`, the logic of app.py), by repo id from the Hub cache."""
    out = _run(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import json
        from modeling_mmesid.demo import DemoRecommender
        demo = DemoRecommender.load("{MODEL_ID}", "{DATASET_ID}")
        print(json.dumps({{"top": [r.item_id for r in demo.rank({PROBE[0]}, k=5).items],
                          "items": demo.catalog.num_items, "users": len(demo.test_users)}}))
    """, published["cache"], cwd=published["root"])
    from modeling_mmesid import data

    assert out["top"] == published["top"][0].tolist()
    assert out["items"] == 40 and out["users"] == data.load_splits(published["run"] / "data")["test"].num_rows


def test_adapter_through_peft_and_rqvae_by_repo_id_offline(published):
    """The adapter (peft, on the base named by its Hub id + the dataset repo's item tables) ranks like the model."""
    out = _run(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import json
        from huggingface_hub import snapshot_download
        from peft import PeftConfig, PeftModel
        from modeling_mmesid import MMESIDProcessor, MMESIDRecommender
        from modeling_mmesid.adapters import load_adapter_base, load_adapter_model
        from tokenization.modeling_mmrqvae import MMRQVAE

        config = PeftConfig.from_pretrained("{MODEL_ID}", subfolder="adapter")
        base = load_adapter_base("{MODEL_ID}", "{DATASET_ID}")
        folder = snapshot_download("{MODEL_ID}", allow_patterns="adapter/*")
        model = PeftModel.from_pretrained(base, folder + "/adapter").eval()
        processor = MMESIDProcessor.from_pretrained("{MODEL_ID}")
        same = load_adapter_model("{MODEL_ID}", "{DATASET_ID}").eval()
        rqvae = MMRQVAE.from_pretrained("{RQVAE_ID}")
        print(json.dumps({{"base_id": config.base_model_name_or_path,
                          "top": MMESIDRecommender(model, processor).recommend({PROBE}, k=5).tolist(),
                          "top_helper": MMESIDRecommender(same, processor).recommend({PROBE}, k=5).tolist(),
                          "scores": MMESIDRecommender(model, processor).score_histories({PROBE})[:, 1:].tolist(),
                          "rqvae": [rqvae.config.num_levels, rqvae.config.codebook_size, rqvae.config.modalities]}}))
    """, published["cache"], cwd=published["root"])
    assert out["base_id"] == BACKBONE_ID
    assert out["top"] == published["top"].tolist() == out["top_helper"]
    torch.testing.assert_close(torch.tensor(out["scores"]), published["scores"][:, 1:], atol=1e-5, rtol=1e-5)
    assert out["rqvae"] == [2, 8, ["collaborative", "text"]]


def test_adapter_base_keeps_every_config_field(tiny_run, tmp_path):
    """Every `MMESIDConfig` field set away from its default survives save -> `load_adapter_base` (by repo id, offline):
    the adapter path copies the saved config through `to_dict()`, so a new field cannot be forgotten."""
    from transformers import AutoTokenizer

    from mmesid_artifacts import Run, load_item_tables
    from modeling_mmesid import MMESIDConfig, MMESIDForSequentialRecommendation, MMESIDProcessor
    from modeling_mmesid.adapters import ADAPTER_SUBFOLDER, load_adapter_base, mmesid_fields
    from modeling_mmesid.hub_cache import place_in_hub_cache

    run = Run(tiny_run)
    tables = load_item_tables(run, ["collaborative", "text"])
    processor = MMESIDProcessor(AutoTokenizer.from_pretrained(tiny_run / "backbone"), layout="causal",
                                **tables.processor_kwargs())  # a non-default layout, which the processor carries
    trained = {"sid_projection": "none", "sid_init": "random", "fusion": "equal", "fusion_temperature": 0.5,
               "fusion_hidden_size": 16, "fusion_bottleneck_size": 4, "fusion_gate_init": "torch",
               "item_head_init": "zero", "item_token_sids": False, "head": "both", "generative_loss_weight": 0.5, "generative_id": "combined"}
    derived = {"text_config", "num_items", "modalities", "modality_dims", "num_levels", "codebook_size",
               "codebook_dim", "item_token_id", "sid_token_offset", "layout"}  # from the backbone, processor and tables
    fixed = {"pad_item_id": "must be 0", "tie_word_embeddings": "MME-SID has no LM head to tie"}
    assert set(trained) | derived | set(fixed) == set(MMESIDConfig.__annotations__), "a new field: add it here"
    assert all(MMESIDConfig.__dataclass_fields__[k].default != v for k, v in trained.items())

    model = MMESIDForSequentialRecommendation.from_backbone(
        str(tiny_run / "backbone"), processor, tables.embeddings, tables.sids, None, item_counts=tables.item_counts,
        **trained)
    model_dir, data_dir, cache = tmp_path / "model", tmp_path / "dataset", tmp_path / "hub"
    model.config.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (model_dir / ADAPTER_SUBFOLDER).mkdir()
    (model_dir / ADAPTER_SUBFOLDER / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tiny_run / "backbone")}))
    (model_dir / "training_config.json").write_text(json.dumps({"finetune_config": {"seed": 3}}))
    shutil.copytree(run.embeddings, data_dir / "embeddings")
    shutil.copytree(run.sids, data_dir / "sids")
    for name in ("items.parquet", "stats.json"):
        shutil.copy(run.data / name, data_dir / name)
    place_in_hub_cache(model_dir, MODEL_ID, "model", cache)
    place_in_hub_cache(data_dir, DATASET_ID, "dataset", cache, prepare_datasets_cache=False)

    base = load_adapter_base(MODEL_ID, DATASET_ID, cache_dir=cache)
    saved = mmesid_fields(MMESIDConfig.from_pretrained(model_dir).to_dict())
    rebuilt = mmesid_fields(base.config.to_dict())
    saved.pop("text_config"), rebuilt.pop("text_config")
    assert rebuilt == saved
    assert {k: rebuilt[k] for k in trained} == trained
    assert rebuilt["layout"] == "causal"  # from the saved processor


def test_rqvae_card_row_says_the_collisions_before_resolution():
    from modeling_mmesid.hub import _diagnostics_rows

    usage = {"utilization": [1.0, 0.5], "perplexity": [3.0, 2.0]}
    diagnostics = {
        "codebook": {"collaborative": usage},
        "collision_rate": {"collaborative": 0.25, "combined": 0.0},
        "collision_resolution": {"enabled": True, "collision_rate_before": {"combined": 0.0008}, "moved_items": 5},
    }
    rows = _diagnostics_rows(diagnostics)
    assert rows[0][:4] == ("collaborative", "0.2500", "100.0% / 50.0%", "3.0 / 2.0")
    assert rows[-1][:2] == ("combined ID", "0.0000 (0.0008 before resolution; 5 items moved)")
    diagnostics["collision_resolution"]["enabled"] = False  # --no_resolve_collisions: the rate as measured
    assert _diagnostics_rows(diagnostics)[-1][:2] == ("combined ID", "0.0000")
