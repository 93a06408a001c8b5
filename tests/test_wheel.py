# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The built wheel works outside a source checkout: `pip install` of it, then `recipes/publish.py --dry_run`.

The wheel is built offline from a copy of the sources (`pip wheel --no-build-isolation`, with this environment's
setuptools), installed into a fresh virtual environment, and run from a folder outside the checkout with no
`PYTHONPATH`: the card templates (`hub_cards/`) must come from the wheel. The environment borrows the dependencies
of this one through a plain path entry, which does not run this environment's `.pth` files, so an editable install
of the checkout there stays invisible.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from mmesid_testing import REPO, build_tiny_run, tiny_mmesid


# what `pip wheel` needs from the checkout: the project file, its readme, the packages and the card templates
SOURCES = ("pyproject.toml", "README.md", "hub_cards", "mmesid_artifacts", "modeling_mmesid", "tokenization")
PACKAGES = ("mmesid_artifacts", "modeling_mmesid", "tokenization")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _check(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    _check([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", root / "dist", src])
    (built,) = (root / "dist").glob("mmesid-*.whl")
    return built


def test_wheel_ships_every_module_and_the_card_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO).as_posix() for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert not sources - names, f"modules missing from the wheel (pyproject.toml `packages`): {sorted(sources - names)}"
    for template in (REPO / "hub_cards").glob("*.md"):
        assert f"modeling_mmesid/hub_cards/{template.name}" in names
        assert zipfile.ZipFile(wheel).read(f"modeling_mmesid/hub_cards/{template.name}") == template.read_bytes()


def test_installed_wheel_publishes_outside_the_checkout(wheel, tmp_path):
    from tokenization.configuration_mmrqvae import MMRQVAEConfig
    from tokenization.modeling_mmrqvae import MMRQVAE

    # a run with every stage publish.py reads: data, embeddings, sids (tiny run), rqvae, finetune (an untrained model)
    run = build_tiny_run(tmp_path)
    torch.manual_seed(0)
    MMRQVAE(MMRQVAEConfig(modalities=["collaborative", "text"], input_dims=[8, 12], hidden_dims=[16], e_dim=16,
                          num_levels=2, codebook_size=8)).save_pretrained(run / "rqvae")
    model, processor, _ = tiny_mmesid(num_items=40)
    model.save_pretrained(run / "finetune" / "model")
    processor.save_pretrained(run / "finetune" / "model")
    metrics = {"ndcg@10": 0.1, "hr@10": 0.2, "mrr@10": 0.05}
    (run / "finetune" / "results.json").write_text(json.dumps({"results": {"mmesid": metrics}, "train_info": {}}))

    venv = tmp_path / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _check([*PIP, "--python", python, "install", "--no-deps", "--no-index", wheel])
    purelib = Path(_check([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (purelib / "mmesid_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"  # neither the checkout nor anything of it on sys.path
    work.mkdir()
    shutil.copy(REPO / "recipes" / "publish.py", work / "publish.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    code = (
        "import json, runpy, sys, mmesid_artifacts, modeling_mmesid, tokenization\n"
        "from modeling_mmesid import hub\n"
        "print(json.dumps({m.__name__: m.__file__ for m in (mmesid_artifacts, modeling_mmesid, tokenization)}"
        " | {'cards': str(hub.hub_cards_dir())}))\n"
        f"sys.argv = ['publish.py', '--run_dir', {str(run)!r}, '--base_model_id', 'org/tiny-llama', '--dry_run']\n"
        "runpy.run_path('publish.py', run_name='__main__')\n"
    )
    proc = _check([python, "-c", code], cwd=work, env=env)
    where = json.loads(proc.stdout.splitlines()[0])
    for name, path in where.items():
        assert Path(path).resolve().is_relative_to(venv.resolve()), f"{name} comes from {path}, not the installed wheel"
    assert "dry run: nothing pushed" in proc.stdout
    for kind in ("model", "dataset", "rqvae"):
        assert (run / "hub" / kind / "README.md").is_file(), kind
    card = (run / "hub" / "model" / "README.md").read_text()
    assert 'AutoModel.from_pretrained("org/mmesid-beauty"' in card and "0.1000" in card
