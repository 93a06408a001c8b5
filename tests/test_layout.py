# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The layout and the import contracts of docs/LAYERS.md, checked from the source (AST) against the doc's tables."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmesid_testing import REPO


HUB_SIDE = ("configuration_mmesid", "modeling_mmesid", "processing_mmesid", "generation_mmesid", "recommender_mmesid",
            "building_mmesid")
PACKAGES = ("mmesid_artifacts", "modeling_mmesid", "tokenization")
LAYERS_DOC = REPO / "docs" / "LAYERS.md"


def _doc_rows(heading: str) -> list[list[str]]:
    """The table rows (cells without backticks) under `## heading` in docs/LAYERS.md."""
    section = LAYERS_DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| `")]
    assert rows, f"no table under `## {heading}` in {LAYERS_DOC}"
    return rows


# a module may import its own floor or lower ones (a higher number), never a higher one (docs/LAYERS.md)
LAYERS = {row[0]: int(row[1]) for row in _doc_rows("Floors of the modules")}
NEVER_IMPORTS = {row[0]: [n.strip() for n in row[1].split(",")] for row in _doc_rows("Packages that never import each other")}


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
        out.update(n for n in names if n and n.split(".")[0] in PACKAGES)
    return out


def _all_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in `path` (function-level ones included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
    return out


def _modules(package: str) -> list[str]:
    return sorted(f"{package}.{p.stem}" for p in (REPO / package).glob("*.py") if p.name != "__init__.py")


def test_design_card_layout():
    for name in ("mmesid_artifacts", "modeling_mmesid", "tokenization", "recipes", "hub_cards", "tests", "docs",
                 "pyproject.toml", "README.md"):
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


def test_every_module_has_a_floor_in_the_doc():
    """docs/LAYERS.md lists every module of the three packages, and only existing ones."""
    existing = {m for package in PACKAGES for m in _modules(package)}
    assert not existing - set(LAYERS), f"modules missing from {LAYERS_DOC.name}: {sorted(existing - set(LAYERS))}"
    assert not set(LAYERS) - existing, f"{LAYERS_DOC.name} lists modules that do not exist: {sorted(set(LAYERS) - existing)}"


def test_artifacts_are_the_ground_floor():
    ground = max(LAYERS.values())
    assert {m for m, floor in LAYERS.items() if floor == ground} == set(_modules("mmesid_artifacts"))


@pytest.mark.parametrize("package", sorted(NEVER_IMPORTS))
def test_packages_that_never_import_each_other(package):
    """No arrow from tokenization to modeling_mmesid (or back); the ground floor imports neither, nor transformers."""
    for path in sorted((REPO / package).rglob("*.py")):
        bad = _all_imports(path) & set(NEVER_IMPORTS[package])
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)} (docs/LAYERS.md)"


def test_importing_the_ground_floor_stays_light():
    """A fresh interpreter importing `mmesid_artifacts` (all of it) loads neither transformers nor the stages."""
    code = ("import sys, mmesid_artifacts, mmesid_artifacts.tables, mmesid_artifacts.results; "
            "print(sorted(m for m in ('transformers', 'modeling_mmesid', 'tokenization', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_layers_doc_names_real_files():
    """Every `path.py` the doc names in backticks exists (the doc cannot drift into files that are gone)."""
    for name in set(re.findall(r"`([\w/]+\.py)`", LAYERS_DOC.read_text())):
        assert any(REPO.glob(f"**/{name}")), f"{LAYERS_DOC.name} names `{name}`, which is not in the repository"
