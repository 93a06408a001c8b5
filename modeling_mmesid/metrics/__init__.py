# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` metric modules shipped with the package (load them by path, offline)."""

from pathlib import Path


FULL_RANKING_METRIC_PATH = str(Path(__file__).parent / "full_ranking")
