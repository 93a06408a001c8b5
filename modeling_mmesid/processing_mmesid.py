# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Processor for MME-SID: the text side of the model (paper §3.3, prompt of the official README).

Naming (the words collide): the *item tokenizer* is MM-RQ-VAE (`tokenization/`), which maps items to semantic IDs;
the *text tokenizer* is the backbone's; the *processor* is [`MMESIDProcessor`], which wraps the text tokenizer, adds
the item placeholder and the SID tokens, and renders histories into prompts. The model never formats strings.
"""

from collections.abc import Sequence

import torch
from transformers import AddedToken
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_mmesid import KNOWN_MODALITIES


DEFAULT_MODALITIES = KNOWN_MODALITIES  # the paper's order: collaborative, image, text
# The prompt of the official README (docs/METHOD.md, "Prompt"); only the processor reads it.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant for recommendations"
DEFAULT_INSTRUCTION = "Given the user's purchase history, predict next possible item to be purchased. "
LAYOUTS = ("chat", "causal")  # `MMESIDConfig.layout`


def sid_token(modality: str, level: int, code: int) -> str:
    """The SID token of `code` at `level` (0-based) of `modality`'s codebook: `<sid_{modality}_{level}_{code}>`."""
    return f"<sid_{modality}_{level}_{code}>"


class MMESIDProcessor(ProcessorMixin):
    r"""
    Renders purchase histories into MME-SID prompts (paper §3.3; template of the official README).

    On construction it adds to the text tokenizer, when missing, the item placeholder `item_token` (`<item>`) and
    one token per (modality, level, code), named `<sid_{modality}_{level}_{code}>` (level and code 0-based), in
    that order, so their ids are contiguous: `id = sid_token_offset + (m * num_levels + l) * codebook_size + c`.
    Added tokens are special (never split, never normalized) and are saved in `tokenizer.json`; the processor's
    own attributes go to `processor_config.json`. Resize the backbone's embeddings to `len(processor.tokenizer)`.

    The prompt is the backbone's chat template applied to
    `[{"role": "system", "content": system_prompt}, {"role": "user", "content": instruction + "<item>" * n}]`
    with `add_generation_prompt=True`. For Llama-3 this gives the paper's prompt exactly:

    `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful AI assistant for
    recommendations<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the user's purchase history,
    predict next possible item to be purchased. <item><item><|eot_id|><|start_header_id|>assistant<|end_header_id|>`

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The backbone's text tokenizer. It must carry a chat template (or pass `chat_template`).
        chat_template (`str`, *optional*):
            Jinja chat template overriding the tokenizer's.
        modalities (`list[str]`, *optional*, defaults to `["collaborative", "image", "text"]`):
            Modalities with SID tokens, in the model config's order.
        num_levels (`int`, *optional*, defaults to 4):
            Levels per semantic ID (official MM-RQ-VAE run: 4).
        codebook_size (`int`, *optional*, defaults to 256):
            Codes per level (official MM-RQ-VAE run: 256).
        num_items (`int`, *optional*):
            Largest item id; when given, item ids above it are refused.
        item_token (`str`, *optional*, defaults to `"<item>"`):
            Placeholder that the model replaces by the fused item token (LLaVA-style).
        system_prompt (`str`, *optional*, defaults to `"You are a helpful AI assistant for recommendations"`):
            System message (official README).
        instruction (`str`, *optional*, defaults to `"Given the user's purchase history, predict next possible item to be purchased. "`):
            User message before the item placeholders (official README; placeholders follow without separator).
        strip_generation_suffix (`bool`, *optional*, defaults to `True`):
            Strip the whitespace that chat templates put after the assistant header (Llama-3 adds `"\n\n"`). The
            paper's prompt ends at `<|end_header_id|>`, and the user representation is the hidden state of the
            prompt's final token, so that token must be the header's end.
        max_length (`int`, *optional*):
            Longest prompt in tokens (e.g. the backbone's `max_position_embeddings`); longer prompts are refused
            rather than truncated (histories are not truncated, paper §4.1).
        layout (`str`, *optional*, defaults to `"chat"`):
            How a history is laid out as a prompt (`MMESIDConfig.layout`; the model refuses a processor whose layout
            differs from its own). `"chat"`: the paper's prompt above, read out at its final token, the end of the
            assistant header. `"causal"`: the same chat rendering up to the first placeholder, then the history's
            placeholders and nothing after them, read out at the last one (at the instruction's last token for an
            empty history). Every `"causal"` prompt is a prefix of the next longer one, so one causal pass over a
            user's whole sequence gives the user state for every training target (docs/LAYOUT.md).
    """

    def __init__(
        self,
        tokenizer=None,
        chat_template=None,
        modalities: list[str] | None = None,
        num_levels: int = 4,
        codebook_size: int = 256,
        num_items: int | None = None,
        item_token: str = "<item>",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        instruction: str = DEFAULT_INSTRUCTION,
        strip_generation_suffix: bool = True,
        max_length: int | None = None,
        layout: str = "chat",
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("`tokenizer` is required: pass the backbone's text tokenizer.")
        self.modalities = list(modalities) if modalities is not None else list(DEFAULT_MODALITIES)
        self.num_levels = int(num_levels)
        self.codebook_size = int(codebook_size)
        self.num_items = num_items
        self.item_token = item_token
        self.system_prompt = system_prompt
        self.instruction = instruction
        self.strip_generation_suffix = strip_generation_suffix
        self.max_length = max_length
        if layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {list(LAYOUTS)}, got {layout!r}.")
        self.layout = layout
        if self.num_levels < 1 or self.codebook_size < 2:
            raise ValueError(
                f"`num_levels` must be >= 1 and `codebook_size` >= 2, got {self.num_levels} and {self.codebook_size}."
            )
        super().__init__(tokenizer, chat_template=chat_template)
        self._add_tokens()
        self._prompt_cache: dict = {}

    # ------------------------------------------------------------------ tokens
    @property
    def sid_tokens(self) -> list[str]:
        """All SID tokens, ordered by modality, level, code."""
        return [
            sid_token(m, l, c)
            for m in self.modalities
            for l in range(self.num_levels)  # noqa: E741
            for c in range(self.codebook_size)
        ]

    def _add_tokens(self):
        wanted = [self.item_token] + self.sid_tokens
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in wanted if t not in vocab]
        if missing:
            self.tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self.item_token_id = self.tokenizer.convert_tokens_to_ids(self.item_token)
        sid_ids = self.tokenizer.convert_tokens_to_ids(self.sid_tokens)
        self.sid_token_offset = sid_ids[0]
        if sid_ids != list(range(sid_ids[0], sid_ids[0] + len(sid_ids))):
            raise ValueError(
                "SID tokens must have contiguous ids ordered by modality, level, code, but the tokenizer already holds "
                f"some of them at other ids (first {sid_ids[:3]}...). Start from the backbone's original tokenizer."
            )

    @property
    def pad_token_id(self) -> int:
        """The id that pads prompts and packed rows (never attended to): the text tokenizer's pad token, else its
        end-of-sequence token (many chat backbones have no pad token), else 0."""
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
        return 0

    def config_kwargs(self) -> dict:
        """The `MMESIDConfig` fields this processor determines."""
        return {
            "modalities": list(self.modalities),
            "num_levels": self.num_levels,
            "codebook_size": self.codebook_size,
            "item_token_id": self.item_token_id,
            "sid_token_offset": self.sid_token_offset,
            "layout": self.layout,
        }

    # ------------------------------------------------------------------ prompts
    def render_prompt(self, num_history_items: int) -> str:
        """The prompt string for a history of `num_history_items` items (placeholders, not ids)."""
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.instruction + self.item_token * num_history_items},
        ]
        template = self.chat_template if self.chat_template is not None else self.tokenizer.chat_template
        if template is None:
            raise ValueError(
                "The text tokenizer has no chat template; pass `chat_template=` to `MMESIDProcessor` (MME-SID renders "
                "its prompt through the backbone's chat template)."
            )
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return text.rstrip() if self.strip_generation_suffix else text

    def _causal_prefix(self) -> list[int]:
        """`layout="causal"`: the chat rendering of a one-item history up to its placeholder (system message and
        instruction)."""
        ids = self._chat_prompt_ids(1)
        return ids[: ids.index(self.item_token_id)]

    def _prompt_ids(self, num_history_items: int) -> list[int]:
        # The prompt depends only on the history length, so token ids are cached per length.
        ids = self._prompt_cache.get(num_history_items)
        if ids is None:
            if self.layout == "causal":
                ids = self._causal_prefix() + [self.item_token_id] * num_history_items
            else:
                ids = self._chat_prompt_ids(num_history_items)
            self._prompt_cache[num_history_items] = ids
        return ids

    def _chat_prompt_ids(self, num_history_items: int) -> list[int]:
        key = ("chat", num_history_items)
        ids = self._prompt_cache.get(key)
        if ids is None:
            text = self.render_prompt(num_history_items)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            n_found = sum(1 for i in ids if i == self.item_token_id)
            if n_found != num_history_items:
                raise ValueError(
                    f"The chat template kept {n_found} of {num_history_items} `{self.item_token}` placeholders; "
                    "check `chat_template` and `item_token`."
                )
            self._prompt_cache[key] = ids
        return ids

    def prompt_token_ids(self, num_history_items: int) -> list[int]:
        """Token ids of the prompt for a history of `num_history_items` items (`<item>` placeholders, not ids)."""
        return list(self._prompt_ids(num_history_items))

    def shared_prompt_ids(self) -> list[int]:
        r"""
        The tokens every prompt starts with, whatever the history (the instruction prompt up to where the empty and
        non-empty renderings part: 32 tokens with SmolLM2's chat template). The model computes them once and shares
        their keys/values (`shared_prompt_ids=` in the forward, and the inference cache of `MMESIDRecommender`).

        Every prompt keeps at least one token of its own after it, whose hidden state is the user representation.
        """
        renderings = [self._prompt_ids(n) for n in (0, 1, 2)]
        length = 0
        limit = min(len(r) for r in renderings) - 1
        while length < limit and all(r[length] == renderings[0][length] for r in renderings):
            length += 1
        return list(renderings[0][:length])

    def _check_history(self, index: int, history) -> list[int]:
        items = history.tolist() if isinstance(history, torch.Tensor) else list(history)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError(f"History {index}: item ids must be integers, got {item!r} ({type(item).__name__}).")
            if item < 1 or (self.num_items is not None and item > self.num_items):
                upper = self.num_items if self.num_items is not None else "num_items"
                raise ValueError(
                    f"History {index}: item id {item} is out of range; expected 1..{upper} (0 is padding and is "
                    "never an input)."
                )
        return items

    def __call__(
        self,
        histories: Sequence[Sequence[int]] | Sequence[int],
        return_tensors: str | None = "pt",
        max_length: int | None = None,
        return_item_positions: bool = False,
        shared_prompt: bool = False,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Render histories into left-padded prompts.

        Args:
            histories (`list[list[int]]` or `list[int]`):
                Item ids per user, oldest first (1-based; 0 is padding and refused). A flat list of ints is one
                user. An empty inner list is an empty history (the prompt then has no placeholder).
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                `"pt"` for tensors, `None` for lists.
            max_length (`int`, *optional*):
                Overrides `self.max_length` for this call.
            return_item_positions (`bool`, *optional*, defaults to `False`):
                Also return `item_positions` and `history_lengths`.
            shared_prompt (`bool`, *optional*, defaults to `False`):
                Leave out the tokens every prompt starts with ([`~MMESIDProcessor.shared_prompt_ids`]); the model
                prepends them once for the whole batch (`shared_prompt_ids=` in its forward). `max_length` still
                counts them.

        Returns:
            [`BatchFeature`] with
            - `input_ids` (`torch.LongTensor` of shape `(batch_size, sequence_length)`): left-padded, so the last
              position is each prompt's final token;
            - `attention_mask` (`torch.LongTensor` of shape `(batch_size, sequence_length)`);
            - `item_ids` (`torch.LongTensor` of shape `(num_history_items_in_batch,)`): the histories flattened in
              order, one per `<item>` placeholder in row-major order of `input_ids`;
            - with `return_item_positions=True`: `item_positions` (`(num_history_items_in_batch, 2)`, row and column
              of each placeholder) and `history_lengths` (`(batch_size,)`).
        """
        if kwargs:
            raise TypeError(f"Unknown arguments {sorted(kwargs)} for `MMESIDProcessor.__call__`.")
        if isinstance(histories, torch.Tensor):
            histories = histories.tolist()
        histories = list(histories)
        if len(histories) == 0:
            raise ValueError("`histories` is empty; pass one list of item ids per user (`[[]]` is one empty history).")
        if not isinstance(histories[0], (list, tuple, torch.Tensor)):
            histories = [histories]
        histories = [self._check_history(i, h) for i, h in enumerate(histories)]
        limit = max_length if max_length is not None else self.max_length

        prompts = [self._prompt_ids(len(h)) for h in histories]
        seq_len = max(len(p) for p in prompts)
        if limit is not None and seq_len > limit:
            worst = max(range(len(prompts)), key=lambda i: len(prompts[i]))
            raise ValueError(
                f"History {worst} ({len(histories[worst])} items) renders to {len(prompts[worst])} tokens, more than "
                f"`max_length`={limit} (the backbone's context). Histories are not truncated; shorten them upstream."
            )
        if shared_prompt:
            num_shared = len(self.shared_prompt_ids())
            prompts = [p[num_shared:] for p in prompts]
            seq_len -= num_shared
        pad_id = self.pad_token_id
        input_ids = [[pad_id] * (seq_len - len(p)) + p for p in prompts]
        attention_mask = [[0] * (seq_len - len(p)) + [1] * len(p) for p in prompts]
        item_ids = [item for h in histories for item in h]
        data = {"input_ids": input_ids, "attention_mask": attention_mask, "item_ids": item_ids}
        if return_item_positions:
            data["item_positions"] = [
                [row, col] for row, ids in enumerate(input_ids) for col, t in enumerate(ids) if t == self.item_token_id
            ]
            data["history_lengths"] = [len(h) for h in histories]
        if return_tensors == "pt":
            data = {k: torch.tensor(v, dtype=torch.long) for k, v in data.items()}
            if return_item_positions and data["item_positions"].numel() == 0:
                data["item_positions"] = data["item_positions"].view(0, 2)
        elif return_tensors is not None:
            raise ValueError(f"`return_tensors` must be 'pt' or None, got {return_tensors!r}.")
        return BatchFeature(data=data)

    def add_response(self, inputs: dict, response_ids: torch.LongTensor, labels: torch.LongTensor | None = None) -> dict:
        r"""
        Teacher forcing of a generated response (the generative head's training data): each prompt of `inputs`
        (left-padded, as [`~MMESIDProcessor.__call__`] returns them) is followed by its response's tokens but the last,
        and `generative_labels` holds every token of the response, whose next-token scores the model reads from the
        prompt's final token on.

        Args:
            inputs (`dict`): the processor's `input_ids`, `attention_mask` and `item_ids`.
            response_ids (`torch.LongTensor` of shape `(batch_size, response_length)`):
                Token ids of each row's response (the target item's generated ID).
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                The item labels; rows labelled `-100` get `-100` in `generative_labels` (ignored).

        Returns:
            `dict` with `input_ids` and `attention_mask` extended by `response_length - 1` columns, `generative_labels`
            `(batch_size, response_length)` and the other entries of `inputs` unchanged.
        """
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if not bool(mask[:, -1].bool().all()):
            raise ValueError(
                "The response follows each prompt, so prompts must be left-padded (the processor's padding); got "
                "right padding in `attention_mask`."
            )
        teacher = response_ids[:, :-1].to(input_ids.device)
        out = dict(inputs)
        out["input_ids"] = torch.cat([input_ids, teacher], dim=1)
        out["attention_mask"] = torch.cat([mask, torch.ones_like(teacher, dtype=mask.dtype)], dim=1)
        targets = response_ids
        if labels is not None:
            targets = response_ids.masked_fill((labels == -100).to(response_ids.device)[:, None], -100)
        out["generative_labels"] = targets
        return out

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "item_ids"]


__all__ = ["MMESIDProcessor", "sid_token"]
