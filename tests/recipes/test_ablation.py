# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The ablation recipe on the tiny run: one setting for every row, `--sids_dir` plumbed through, resumable, refusals."""

import json
import os
import shutil
import subprocess
import sys

from mmesid_testing import REPO, finetune_config


ABLATION = REPO / "recipes" / "ablation.py"


def _run(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               MMESID_PRECISION="float32")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(ABLATION), *args], check=False, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_ablation_rows_share_users_and_steps(tiny_run, tmp_path):
    cfg = finetune_config(tiny_run, tmp_path / "out", max_steps=-1, per_device_train_batch_size=2,
                          prefix_packing=True, max_eval_users=None)
    # `mse_sids` reads --mse_sids_dir: a copy of the run's own SIDs must give exactly the full model's numbers
    same_sids = tmp_path / "sids-copy"
    shutil.copytree(tiny_run / "sids", same_sids)
    out = tmp_path / "ablation"
    base = ["--config", str(cfg), "--run_dir", str(tiny_run), "--output_dir", str(out), "--budget", "30",
            "--test_users", "12"]
    missing = _run([*base, "--variants", "full", "mse_sids", "--mse_sids_dir", str(tmp_path / "nowhere")], tmp_path)
    assert missing.returncode != 0 and "--mse_sids_dir" in missing.stderr and "nowhere" in missing.stderr
    assert not out.exists()  # refused before anything was written

    args = [*base, "--variants", "full", "mse_sids", "equal_fusion", "--mse_sids_dir", str(same_sids)]
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["variants"]) == ["full", "mse_sids", "equal_fusion"]
    assert "test" in results["protocol"] and "12 users" in results["protocol"]
    assert results["variants"]["mse_sids"]["overrides"] == {"sids_dir": str(same_sids)}
    full, same, equal = (results["variants"][n]["metrics"] for n in ("full", "mse_sids", "equal_fusion"))
    assert full["samples_seen"] == same["samples_seen"] == equal["samples_seen"] >= 30
    assert full["step"] == equal["step"]
    for key in ("loss", "ndcg@10", "hr@20", "mrr@10"):
        assert same[key] == full[key], key
    assert equal["loss"] != full["loss"]  # the fusion switch reached the model
    table = (out / "ablation.md").read_text()
    assert "| full |" in table and "| equal_fusion |" in table and "+0.0%" in table  # mse_sids vs full
    # resumed: finished rows are skipped; the table goes into a document between its markers
    doc = tmp_path / "README.md"
    doc.write_text("a\n<!-- ablation:start -->\nold\n<!-- ablation:end -->\nb\n")
    again = _run([*args, "--doc", str(doc)], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, skipped") == 3
    assert "old" not in doc.read_text() and "| mse_sids |" in doc.read_text()
    # another budget would mix settings in one table: refused, the file kept
    before = (out / "results.json").read_text()
    other = _run([*base[:-4], "--budget", "20", "--test_users", "12", "--variants", "no_sids"], tmp_path)
    assert other.returncode != 0 and "setting" in other.stderr
    assert (out / "results.json").read_text() == before
