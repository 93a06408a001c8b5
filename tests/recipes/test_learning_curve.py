# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The learning-curve recipe on the tiny run: the same samples for every variant, a point per budget, resumable."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from mmesid_testing import REPO, finetune_config, import_recipe


CURVE = REPO / "recipes" / "learning_curve.py"


def _run(args, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               MMESID_PRECISION="float32")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(CURVE), *args], check=False, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)


def test_learning_curve_points_and_resume(tiny_run, tmp_path):
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=-1, per_device_train_batch_size=2,
                          prefix_packing=True, max_eval_users=None)
    curve = tmp_path / "curve"
    args = ["--config", str(cfg), "--run_dir", str(tiny_run), "--curve_dir", str(curve), "--budgets", "15", "40",
            "--eval_users", "10", "--variants", "paper", "zero_head"]
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((curve / "results.json").read_text())
    assert list(results["variants"]) == ["paper", "zero_head"]
    assert "10 users" in results["protocol"] and "validation" in results["protocol"]
    seen = {}
    for name, variant in results["variants"].items():
        assert variant["finished"]
        points = variant["points"]
        assert [p["budget"] for p in points] == [15, 40]
        assert all(p["samples_seen"] >= p["budget"] for p in points)
        assert points[0]["samples_seen"] < points[1]["samples_seen"]
        assert all(0 <= p["ndcg@10"] <= 1 for p in points)
        seen[name] = [p["samples_seen"] for p in points]
    assert seen["paper"] == seen["zero_head"]  # the same users in the same order: the same samples at each point
    assert (curve / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (curve / "curve.md").read_text()
    assert "| paper |" in table and "| zero_head |" in table
    # a second call skips the finished variants, and writes the table into a document between its markers
    doc = tmp_path / "LEARNING.md"
    doc.write_text("# before\n<!-- curve:start -->\nold table\n<!-- curve:end -->\nafter\n")
    again = _run([*args, "--doc", str(doc)], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, skipped") == 2
    text = doc.read_text()
    assert "old table" not in text and "| paper |" in text
    assert text.startswith("# before\n<!-- curve:start -->\n") and text.endswith("<!-- curve:end -->\nafter\n")


def test_budget_callback_counts_the_samples_of_every_process():
    """Under 2 processes each one sees half of the samples: a budget is reached on the count over all processes (the
    trainer's `_global_samples_seen`), every process evaluates and stops at the same step, and only the main process
    records a point."""
    from transformers import TrainerControl, TrainerState

    curve = import_recipe("learning_curve")
    points = {0: [], 1: []}
    callbacks, controls = {}, {}
    for rank in (0, 1):
        trainer = SimpleNamespace(_samples_seen=0)  # this process's samples; the global count is twice that
        trainer._global_samples_seen = lambda trainer=trainer: 2 * trainer._samples_seen
        callbacks[rank] = (curve.BudgetCallback(trainer, [16, 8], points[rank].append), trainer)
    evaluated = []
    for step in range(1, 4):  # 3 samples per process and step: 6, 12, 18 in all
        for rank, (callback, trainer) in callbacks.items():
            state = TrainerState(global_step=step, is_world_process_zero=rank == 0)
            control = controls[rank] = TrainerControl()
            callback.on_step_begin(None, state, control)
            trainer._samples_seen += 3
            callback.on_step_end(None, state, control)
            if control.should_evaluate:
                evaluated.append((rank, step))
                callback.on_evaluate(None, state, control, metrics={"eval_ndcg@10": 0.5})
    assert evaluated == [(0, 2), (1, 2), (0, 3), (1, 3)]
    assert [(p["budget"], p["samples_seen"], p["step"]) for p in points[0]] == [(8, 12, 2), (16, 18, 3)]
    assert points[1] == [] and controls[0].should_training_stop and controls[1].should_training_stop


def _finetune_results(path, evals, max_eval_users=10, seed=42):
    history = [{"loss": 9.0, "step": 5}]
    history += [{"eval_ndcg@10": value, "samples_seen": seen, "step": step} for step, seen, value in evals]
    path.write_text(json.dumps({"run_info": {"config": {"script": {"max_eval_users": max_eval_users},
                                                          "training": {"seed": seed}}},
                                "train_info": {"log_history": history}}))
    return str(path)


def test_full_run_table_from_finetune_results(tiny_run, tmp_path):
    curve = import_recipe("learning_curve")
    stats = json.loads((tiny_run / "data" / "stats.json").read_text())
    paper = _finetune_results(tmp_path / "paper.json", [(10, 540, 0.0221), (20, 1075, 0.03406)])
    fast = _finetune_results(tmp_path / "fast.json", [(10, 540, 0.04312), (20, 1075, 0.0515), (28, 1500, 0.05)])
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"popularity": {"ndcg@10": 0.00771}, "sasrec": {"ndcg@10": 0.0692}}))
    table = curve.full_run_table({"paper": paper, "new_lr": fast}, tiny_run, baselines).splitlines()
    assert table[0].startswith("Protocol: validation: leave-one-out, full ranking over")
    assert f"10 users (sampled with seed 43 from {stats['num_validation']:,})" in table[0]
    assert table[2] == "| run | step 10 (540 samples) | step 20 (1,075 samples) | step 28 (1,500 samples) |"
    assert table[4] == "| paper | 0.0221 | 0.0341 |  |"
    assert table[5] == "| new_lr | 0.0431 | 0.0515 | 0.0500 |"
    assert table[-1] == f"On the same users (`{baselines}`): popularity 0.0077, sasrec 0.0692."
    other = _finetune_results(tmp_path / "other.json", [(10, 540, 0.02)], max_eval_users=20)
    with pytest.raises(ValueError, match="different users"):
        curve.full_run_table({"paper": paper, "other": other}, tiny_run)
    (tmp_path / "eval.json").write_text(json.dumps({"protocol": "x", "results": {}}))
    with pytest.raises(ValueError, match="eval.json: not a finetune.py results.json"):
        curve.full_run_table({"paper": str(tmp_path / "eval.json")}, tiny_run)
    doc = tmp_path / "LEARNING.md"
    doc.write_text("<!-- full-epoch:start -->\n<!-- full-epoch:end -->\n")
    done = _run(["--run_dir", str(tiny_run), "--full_runs", f"paper={paper}", f"new_lr={fast}", "--doc", str(doc)],
                tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| new_lr | 0.0431 | 0.0515 | 0.0500 |" in doc.read_text()
    bad = _run(["--run_dir", str(tiny_run), "--full_runs", paper], tmp_path)
    assert bad.returncode != 0 and "NAME=RESULTS_JSON" in bad.stderr


def test_full_run_table_counts_the_samples_of_a_resumed_run_over_the_whole_run(tiny_run, tmp_path):
    """A run resumed from its step-10 checkpoint before the trainer kept the count: its counter restarted at 0 after
    step 10 (27 samples by step 15), so its step-20 figure is 540 + 535, as the uninterrupted run's."""
    curve = import_recipe("learning_curve")
    whole = _finetune_results(tmp_path / "whole.json", [(10, 540, 0.02), (20, 1075, 0.03)])
    resumed = tmp_path / "resumed.json"
    _finetune_results(resumed, [(10, 540, 0.021)])
    saved = json.loads(resumed.read_text())
    saved["train_info"]["log_history"] += [{"loss": 8.0, "samples_seen": 27, "step": 15},
                                           {"eval_ndcg@10": 0.031, "samples_seen": 535, "step": 20}]
    resumed.write_text(json.dumps(saved))
    table = curve.full_run_table({"whole": whole, "resumed": str(resumed)}, tiny_run).splitlines()
    assert table[2] == "| run | step 10 (540 samples) | step 20 (1,075 samples) |"
    assert table[5] == "| resumed | 0.0210 | 0.0310 |"
    history = saved["train_info"]["log_history"]
    assert [e.get("samples_seen") for e in curve.cumulative_samples_seen(history)] == [None, 540, 567, 1075]
    assert [e.get("samples_seen") for e in history] == [None, 540, 27, 535]  # the input is left as it was


def test_validation_baselines_rank_the_users_finetune_validates_on(tiny_run, tmp_path):
    import random

    from mmesid_artifacts import Run, load_item_counts, load_stats
    from modeling_mmesid import baselines, evaluation
    from modeling_mmesid.data import load_splits

    curve = import_recipe("learning_curve")
    scores = curve.validation_baselines(tiny_run, num_users=7, seed=42)
    assert sorted(scores) == ["popularity", "transition"] and scores["popularity"]["num_users"] == 7
    # independently: finetune.py's `max_eval_users` draws the users with `seed + 1`
    validation = load_splits(Run(tiny_run).data)["validation"]
    users = set(random.Random(43).sample(sorted(set(validation["user_id"])), 7))
    subset = validation.filter(lambda u: u in users, input_columns="user_id")
    num_items = load_stats(Run(tiny_run).data)["num_items"]
    expected = evaluation.evaluate_scorer(
        baselines.PopularityScorer(load_item_counts(Run(tiny_run).data, num_items)), subset, num_items
    )
    assert scores["popularity"] == expected
    other = curve.validation_baselines(tiny_run, num_users=7, seed=0)
    assert other["popularity"] != expected or other["transition"] != scores["transition"]  # other users


def test_sasrec_epochs_line(tmp_path):
    curve = import_recipe("learning_curve")
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"protocol": "validation: leave-one-out, full ranking, 22,332 users",
                                "train_info": {"log": [{"epoch": 1, "metric": 0.01423}, {"epoch": 2, "metric": 0.0285}]}}))
    assert curve.sasrec_epochs_line(path) == (
        f"Our SASRec after each epoch (validation ndcg@10, 22,332 users; `{path}`): 1: 0.0142, 2: 0.0285."
    )
