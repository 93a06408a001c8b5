# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`results.json` of every stage: the provenance block (`run_info`) and the metrics file's write and read."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from .io import atomic_write_json, atomic_write_text


def run_info(wall_time_s: float | None = None, config: dict | None = None) -> dict:
    """Provenance block for `results.json`: command, git commit, versions, device, wall time."""
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False, capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    info = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": commit or None,
        "meta_info": versions,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "created_unix": int(time.time()),
    }
    if wall_time_s is not None:
        info["wall_time_s"] = round(wall_time_s, 2)
    if config is not None:
        info["config"] = config
    return info


def write_results(path: str | Path, results: dict[str, dict], protocol: str, **extra) -> None:
    """Write the metrics table as JSON (atomically) next to the printed one."""
    atomic_write_json(path, {"protocol": protocol, "results": results, **extra})


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_between_markers(doc: str | Path, name: str, text: str) -> None:
    """Replace what lies between `<!-- {name}:start -->` and `<!-- {name}:end -->` in `doc` with `text` (atomically),
    so that a table in a README is written from a run's `results.json`, not by hand."""
    doc = Path(doc)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = doc.read_text()
    if start not in content or end not in content:
        raise ValueError(f"{doc}: no `{start}` ... `{end}` markers to write the table between.")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(doc, f"{head}{start}\n{text}\n{end}{tail}")


__all__ = ["read_results", "run_info", "write_between_markers", "write_results"]
