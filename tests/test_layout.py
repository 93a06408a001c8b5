# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The design card's layout and the import contracts (docs/STYLE.md P1, P20), checked from the source (AST)."""

import ast
from pathlib import Path

import pytest
from mmesid_testing import REPO


HUB_SIDE = ("configuration_mmesid", "modeling_mmesid", "processing_mmesid")
# a module may import its own layer or lower ones (a higher number), never a higher one
LAYERS = {
    "modeling_mmesid.trainer": 2, "modeling_mmesid.hub": 2,
    "modeling_mmesid.evaluation": 3, "modeling_mmesid.baselines": 3, "modeling_mmesid.packing": 3,
    "tokenization.semantic_ids": 3, "tokenization.diagnostics": 3, "tokenization.train_rqvae": 3,
    "modeling_mmesid.configuration_mmesid": 4, "modeling_mmesid.modeling_mmesid": 4,
    "modeling_mmesid.processing_mmesid": 4, "tokenization.configuration_mmrqvae": 4,
    "tokenization.modeling_mmrqvae": 4, "tokenization.encoders": 4, "tokenization.sasrec": 4,
    "modeling_mmesid.data": 5, "modeling_mmesid.precision": 5,
}


def _project_imports(path: Path, package: str) -> set[str]:
    """Project modules imported by `path` (absolute and relative imports, including function-level ones)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else package.rsplit(".", node.level - 1)[0]
                names = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n and n.split(".")[0] in ("modeling_mmesid", "tokenization"))
    return out


def test_design_card_layout():
    for name in ("modeling_mmesid", "tokenization", "recipes", "hub_cards", "tests", "pyproject.toml", "README.md"):
        assert (REPO / name).exists(), name


def test_tokenization_is_this_repositorys():
    import tokenization

    assert Path(tokenization.__file__).resolve().is_relative_to(REPO)


@pytest.mark.parametrize("name", HUB_SIDE)
def test_hub_side_files_import_only_each_other(name):
    imported = _project_imports(REPO / "modeling_mmesid" / f"{name}.py", "modeling_mmesid")
    allowed = {f"modeling_mmesid.{n}" for n in HUB_SIDE}
    extra = {m for m in imported if not any(m == a or m.startswith(a + ".") for a in allowed)}
    assert not extra, f"{name}.py imports {sorted(extra)}: Hub-side files may import only each other"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_layering(module):
    package, name = module.split(".")
    level = LAYERS[module]
    for imported in _project_imports(REPO / package / f"{name}.py", package):
        target = next((m for m in LAYERS if imported == m or imported.startswith(m + ".")), None)
        if target is not None and target != module:
            assert LAYERS[target] >= level, f"{module} (layer {level}) imports {target} (layer {LAYERS[target]})"
