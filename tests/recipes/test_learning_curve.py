# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The learning-curve recipe on the tiny run: the same samples for every variant, a point per budget, resumable."""

import json
import os
import subprocess
import sys

from mmesid_testing import REPO, finetune_config


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
