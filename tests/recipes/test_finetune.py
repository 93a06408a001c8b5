# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The fine-tuning recipe end to end: in process, under a 2-process `accelerate launch`, and resumed."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from mmesid_testing import REPO, finetune_config

from modeling_mmesid import MMESIDRecommender


FINETUNE = REPO / "recipes" / "finetune.py"


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_recipe", FINETUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backbone_dtype_and_quantization_come_from_model_config():
    """`load_in_4bit` goes through `trl.get_quantization_config`: the YAML's quant type and nested quantization reach
    bitsandbytes, 8-bit works, and the 4-bit compute dtype is the resolved one (`dtype: auto` follows `bf16`)."""
    from trl import ModelConfig

    recipe = _load_recipe()
    cpu = SimpleNamespace(bf16=False)
    assert recipe.backbone_dtype_kwargs(ModelConfig(dtype="auto"), cpu) == {"dtype": torch.float32}
    assert recipe.backbone_dtype_kwargs(ModelConfig(dtype="auto"), SimpleNamespace(bf16=True)) == {"dtype": torch.bfloat16}
    assert recipe.backbone_dtype_kwargs(ModelConfig(dtype="auto", attn_implementation="eager"), cpu) == {
        "dtype": torch.float32, "attn_implementation": "eager",
    }
    qlora = recipe.backbone_dtype_kwargs(
        ModelConfig(dtype="bfloat16", load_in_4bit=True, bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True), cpu
    )
    q = qlora["quantization_config"]
    assert qlora["dtype"] == torch.bfloat16 and q.load_in_4bit and not q.load_in_8bit
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("fp4", True, torch.bfloat16)
    auto = recipe.backbone_dtype_kwargs(ModelConfig(dtype="auto", load_in_4bit=True), cpu)["quantization_config"]
    assert auto.bnb_4bit_compute_dtype == torch.float32 and auto.bnb_4bit_quant_type == "nf4"
    eight = recipe.backbone_dtype_kwargs(ModelConfig(load_in_8bit=True), cpu)["quantization_config"]
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_trainer_routes_loss_through_mmesid_forward(tiny_run, tmp_path):
    """One optimizer step through `MMESIDTrainer`: the fusion gate, item MLP, projections, item table, LoRA weights
    and the SID rows all change (TRL's fused-LM-head loss would never reach them)."""
    from trl import ModelConfig, TrlParser

    recipe = _load_recipe()
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=1, eval_strategy="no", save_strategy="no")
    script_args, training_args, model_args = TrlParser(
        (recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig)
    ).parse_args_and_config(["--config", str(cfg)])
    captured = {}

    class Spy(recipe.MMESIDTrainer):
        def train(self, *args, **kwargs):
            captured["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            out = super().train(*args, **kwargs)
            captured["after"] = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            return out

    recipe.MMESIDTrainer = Spy
    results = recipe.main(script_args, training_args, model_args)
    before, after = captured["before"], captured["after"]
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    for key in ("fusion_gate", "item_fusion", "modality_projections.collaborative", "modality_projections.text",
                "item_head", "lora_B", "trainable_tokens_delta"):  # lora_A: zero grad while lora_B = 0
        assert any(key in n for n in changed), f"no trainable parameter containing {key!r} changed: {sorted(changed)}"
    frozen = [n for n in before if "embed_tokens.weight" in n or "q_proj" in n]
    assert not frozen, f"frozen backbone weights are trainable: {frozen}"
    assert 0.0 <= results["mmesid"]["ndcg@10"] <= 1.0
    out = tmp_path / "out"
    for name in ("adapter_model.safetensors", "adapter_config.json", "results.json", "processor_config.json",
                 "model/config.json", "model/model.safetensors"):
        assert (out / name).is_file(), name


@pytest.mark.timeout(900)
def test_two_process_cpu_launch_then_load_and_rank(tiny_run, tmp_path):
    """2 processes x 8 samples against 1 process x 8 samples x 2 accumulated micro-batches, from one config
    (`global_train_batch_size: 16`): the same 16 samples per step, so the same loss, gradient norm and weights at each
    step (the loss is scaled by the number of processes, `MMESIDTrainer.compute_loss`, which DDP's averaging undoes).
    Then the 2-process run's model loads with its own code and ranks."""
    from safetensors.torch import load_file

    env = dict(_env(), MMESID_PRECISION="float32")  # float32 on any CPU: the two runs agree to rounding
    cfg = finetune_config(tiny_run, tmp_path / "ddp", max_steps=4, eval_steps=2, save_steps=2, logging_steps=1,
                          global_train_batch_size=16)
    # `--cpu --num_processes 2` would start ONE process (Accelerate's simple launcher: several CPU processes need
    # mpirun); `--multi_gpu` is its torchrun launcher, and the config's `use_cpu` makes them gloo CPU processes
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
           "--dynamo_backend", "no", str(FINETUNE), "--config", str(cfg)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=800, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    one = cfg.with_name("one.yaml")
    one.write_text(cfg.read_text().replace(str(tmp_path / "ddp"), str(tmp_path / "one")))
    proc = subprocess.run([sys.executable, str(FINETUNE), "--config", str(one), "--save_full_model", "false"],
                          check=False, env=env, capture_output=True, text=True, timeout=800, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    def steps(name):
        history = json.loads((tmp_path / name / "results.json").read_text())["train_info"]["log_history"]
        return [(e["step"], e["samples_seen"], e["loss"], e["grad_norm"]) for e in history if "loss" in e]

    def accumulation(name):
        return json.loads((tmp_path / name / "results.json").read_text())["run_info"]["config"]["training"][
            "gradient_accumulation_steps"]

    assert (accumulation("ddp"), accumulation("one")) == (1, 2)  # 16 / (8 x 2 processes), 16 / (8 x 1 process)
    two_processes, accumulated = steps("ddp"), steps("one")
    assert [s[:2] for s in two_processes] == [s[:2] for s in accumulated] == [(k, 16 * k) for k in range(1, 5)]
    for (step, _, loss2, norm2), (_, _, loss1, norm1) in zip(two_processes, accumulated):
        assert loss2 == pytest.approx(loss1, rel=1e-5), (step, loss2, loss1)
        assert norm2 == pytest.approx(norm1, rel=1e-4), (step, norm2, norm1)
    for step in (2, 4):
        weights2 = load_file(tmp_path / "ddp" / f"checkpoint-{step}" / "adapter_model.safetensors")
        weights1 = load_file(tmp_path / "one" / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert weights2.keys() == weights1.keys()
        for key in weights1:
            torch.testing.assert_close(weights2[key], weights1[key], rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    # every test user is ranked (no max_test_users) and the table holds each metric at each cut-off, in [0, 1]
    num_test = json.loads((tiny_run / "data" / "stats.json").read_text())["num_test"]
    assert f"{num_test:,} users" in results["protocol"], results["protocol"]
    metrics = results["results"]["mmesid"]
    assert all(0.0 <= metrics[f"{m}@{k}"] <= 1.0 for m in ("ndcg", "hr", "mrr") for k in (5, 10, 20)), metrics
    assert results["train_info"]["best_checkpoint"] is not None

    # the saved model loads through the Auto classes with its own code and ranks
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tmp_path / "ddp" / "model", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "ddp" / "model", trust_remote_code=True)
    top = MMESIDRecommender(model, processor).recommend([[1, 2, 3], [5]], k=5)
    assert top.shape == (2, 5)
    assert not set(top[0].tolist()) & {0, 1, 2, 3} and 5 not in top[1].tolist()


@pytest.mark.timeout(1200)
def test_resume_after_interruption_matches_uninterrupted(tiny_run, tmp_path):
    full_cfg = finetune_config(tiny_run, tmp_path / "full", save_full_model=False)
    cut_cfg = finetune_config(tiny_run, tmp_path / "cut", save_full_model=False)
    run = lambda cfg, *extra: subprocess.run(  # noqa: E731
        [sys.executable, str(FINETUNE), "--config", str(cfg), *extra], check=False, env=_env(), capture_output=True,
        text=True, timeout=600, cwd=REPO)
    proc = run(full_cfg)
    assert proc.returncode == 0, proc.stderr[-5000:]

    # interrupt a second run once its first checkpoint is complete
    proc = subprocess.Popen([sys.executable, str(FINETUNE), "--config", str(cut_cfg)], env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "cut" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 500
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert marker.exists(), "the run ended before writing checkpoint-4"
    # if the process got further before the kill landed, drop what came after checkpoint-4
    import shutil

    for later in (tmp_path / "cut").glob("checkpoint-*"):
        if later.name != "checkpoint-4":
            shutil.rmtree(later)
    (tmp_path / "cut" / "results.json").unlink(missing_ok=True)

    proc = run(cut_cfg, "--resume_from_checkpoint", str(tmp_path / "cut" / "checkpoint-4"))
    assert proc.returncode == 0, proc.stderr[-5000:]
    full = json.loads((tmp_path / "full" / "results.json").read_text())["results"]["mmesid"]
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())["results"]["mmesid"]
    for key in ("ndcg@5", "ndcg@10", "ndcg@20", "hr@10", "mrr@10", "loss"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    # the samples counter goes on from the checkpoint's count (it restarted from 0 before 2026-12-05): every logged
    # entry after the resume, training and validation, says what the uninterrupted run said at that step
    def seen(name):
        history = json.loads((tmp_path / name / "results.json").read_text())["train_info"]["log_history"]
        return [(e["step"], "loss" in e, e["samples_seen"]) for e in history if "samples_seen" in e]

    after = [entry for entry in seen("cut") if entry[0] > 4]
    assert after and set(after) <= set(seen("full")), (seen("cut"), seen("full"))
    from modeling_mmesid.trainer import SAMPLES_SEEN_FILE

    saved_count = json.loads((tmp_path / "cut" / "checkpoint-4" / SAMPLES_SEEN_FILE).read_text())["samples_seen"]
    assert (4, True, saved_count) in seen("full"), (saved_count, seen("full"))  # logging_steps 2: step 4 is logged
    # no pickled training arguments in a checkpoint or the output folder; their JSON instead (resuming read neither)
    assert not list((tmp_path / "cut").rglob("training_args.bin"))
    saved = json.loads((tmp_path / "cut" / "checkpoint-4" / "training_args.json").read_text())
    assert saved["output_dir"] == str(tmp_path / "cut") and saved["save_strategy"] == "steps"


def test_resume_from_a_checkpoint_without_the_samples_count_is_refused(tiny_run, tmp_path):
    """A checkpoint without `mmesid_samples_seen.json` (written before 2026-12-05, or by another trainer): `train`
    refuses to resume, naming the file and the last logged count, instead of counting the samples from 0 again; with
    the file written, the count goes on from it."""
    from trl import ModelConfig, TrlParser

    from modeling_mmesid.trainer import SAMPLES_SEEN_FILE, samples_seen_at

    recipe = _load_recipe()
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=1, eval_strategy="no", save_strategy="no")
    trainer, _, _ = recipe.build_trainer(*TrlParser(
        (recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig)).parse_args_and_config(["--config", str(cfg)]))
    checkpoint = tmp_path / "out" / "checkpoint-6"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps(
        {"global_step": 6, "log_history": [{"loss": 3.0, "samples_seen": 40, "step": 4}]}))
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(checkpoint / SAMPLES_SEEN_FILE))} not found.*"
                       r"logged 40 samples at step 4 of 6: a lower bound"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    with pytest.raises(FileNotFoundError, match=SAMPLES_SEEN_FILE):  # the last checkpoint of the output folder
        trainer.train(resume_from_checkpoint=True)
    (checkpoint / SAMPLES_SEEN_FILE).write_text(json.dumps({"samples_seen": 52}))
    assert samples_seen_at(checkpoint) == 52


def test_bf16_run_trains_float32_parameters_and_saves_a_loadable_model(tiny_run, tmp_path, monkeypatch):
    """Where the hardware runs bf16 (forced here with MMESID_PRECISION=bf16): the recipe loads the frozen backbone in
    bf16 and trains under bf16 autocast; what trains is float32, and the saved model loads with AutoModel (backbone
    bf16, MME-SID's modules float32) and ranks with float32 scores."""
    from transformers import AutoModel, AutoProcessor
    from trl import ModelConfig, TrlParser

    monkeypatch.setenv("MMESID_PRECISION", "bf16")
    recipe = _load_recipe()
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=2, eval_strategy="no", save_strategy="no", dtype="auto",
                          use_cpu=False)  # as the pipeline's config: the CPU run is inferred
    script_args, training_args, model_args = TrlParser(
        (recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig)
    ).parse_args_and_config(["--config", str(cfg)])
    assert training_args.bf16 is True
    captured = {}

    class Spy(recipe.MMESIDTrainer):
        def train(self, *args, **kwargs):
            params = dict(self.model.named_parameters())
            captured["trainable"] = {n: p.dtype for n, p in params.items() if p.requires_grad}
            captured["frozen"] = {n: p.dtype for n, p in params.items() if not p.requires_grad and "layers" in n}
            return super().train(*args, **kwargs)

    recipe.MMESIDTrainer = Spy
    results = recipe.main(script_args, training_args, model_args)
    assert set(captured["trainable"].values()) == {torch.float32}, captured["trainable"]
    assert set(captured["frozen"].values()) == {torch.bfloat16}
    assert 0.0 <= results["mmesid"]["ndcg@10"] <= 1.0
    model = AutoModel.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True)
    assert model.item_head.weight.dtype == torch.float32
    scores = MMESIDRecommender(model, processor).score_histories([[1, 2, 3], [4]])
    assert scores.dtype == torch.float32 and torch.isfinite(scores[:, 1:]).all()


def test_packed_recipe_trains_on_the_users_as_written(tiny_run, tmp_path):
    """`--prefix_packing`: the recipe trains on `train_sequences.parquet`'s per-user rows, equal to the per-sample
    split regrouped, for the same sampled users; the sample count it reports is the per-sample one."""
    from trl import ModelConfig, TrlParser

    from modeling_mmesid import data
    from modeling_mmesid.packing import group_samples_by_user, num_samples

    recipe = _load_recipe()
    built = {}
    for packing in (True, False):
        cfg = finetune_config(tiny_run, tmp_path / f"out-{packing}", max_steps=1, eval_strategy="no",
                              save_strategy="no", prefix_packing=packing, max_train_users=7)
        args = TrlParser((recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig)).parse_args_and_config(
            ["--config", str(cfg)])
        built[packing] = recipe.build_trainer(*args)
    packed_trainer, packed_splits, _ = built[True]
    per_sample_train = built[False][1]["train"]
    assert packed_trainer.train_dataset.column_names == ["user_id", "items", "start"]
    assert packed_trainer.train_dataset.to_dict() == group_samples_by_user(per_sample_train).to_dict()
    assert num_samples(packed_splits["train"]) == per_sample_train.num_rows
    everyone = data.load_train_users(tiny_run / "data")
    assert everyone.to_dict() == group_samples_by_user(data.load_splits(tiny_run / "data")["train"]).to_dict()


def test_causal_layout_trains_packed_saves_and_loads_with_its_layout(tiny_run, tmp_path):
    """`--layout causal` through the recipe: packed rows are one causal chain per user (one item token per sample
    after the first), and the saved model and processor carry the layout, so the loaded model reads users at their
    last item token and refuses a processor of the other layout."""
    from transformers import AutoModel, AutoProcessor
    from trl import ModelConfig, TrlParser

    recipe = _load_recipe()
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=2, eval_strategy="no", save_strategy="no",
                          prefix_packing=True, layout="causal", per_device_train_batch_size=2)
    args = TrlParser((recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(cfg)])
    trainer, splits, _ = recipe.build_trainer(*args)
    rows = [splits["train"][i] for i in range(2)]
    batch = trainer.data_collator(rows)
    samples = sum(len(r["items"]) - r["start"] for r in rows)
    # each user: the instruction's last token (the rest is the shared prompt) and every item but the last
    assert batch["input_ids"].shape == (1, sum(1 + len(r["items"]) - 1 for r in rows))
    assert batch["readout_positions"].shape == (samples, 2) and batch["labels"].numel() == samples

    results = recipe.main(*TrlParser((recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig))
                          .parse_args_and_config(["--config", str(cfg)]))
    assert 0.0 <= results["mmesid"]["ndcg@10"] <= 1.0
    model = AutoModel.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True)
    assert model.config.layout == processor.layout == "causal"
    assert processor.prompt_token_ids(2)[-2:] == [processor.item_token_id] * 2  # read out at the last item
    top = MMESIDRecommender(model, processor).recommend([[1, 2, 3], [5]], k=5)
    assert top.shape == (2, 5) and not set(top[0].tolist()) & {0, 1, 2, 3}
    chat = AutoProcessor.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True, layout="chat")
    with pytest.raises(ValueError, match="layout='chat'"):
        MMESIDRecommender(model, chat)
