# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Print the versions a test run uses, one line: `python tests/versions.py LABEL`."""

import platform
import sys
from importlib.metadata import PackageNotFoundError, version


PACKAGES = ("torch", "torchvision", "transformers", "tokenizers", "peft", "trl", "accelerate", "datasets",
            "huggingface_hub", "safetensors", "evaluate", "open_clip_torch", "gguf", "pyarrow", "numpy")


def versions() -> str:
    parts = [f"python=={platform.python_version()}"]
    for name in PACKAGES:
        try:
            parts.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}: not installed")
    return " ".join(parts)


if __name__ == "__main__":
    label = " ".join(sys.argv[1:]) or "versions"
    print(f"{label}: {versions()}", flush=True)
