# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Which floating-point precision pays on this hardware, decided by the hardware (not by "is there a GPU").

bf16 matmuls run several times faster than float32 on CPUs with AMX or AVX512-BF16 (the measured factors:
docs/SPEED.md) and on CUDA devices that support bf16; elsewhere bf16 is emulated and slower. The policy of the package (docs/CONTRACTS.md, "Precision"):
frozen backbone weights may be bf16; everything that trains (LoRA, projections, item MLP, item table, SID rows,
fusion gate) and the optimizer state stay float32; fused item scores, the softmax/cross-entropy and every ranking
comparison are float32 (bf16 scores create ties that change ranks).

`MMESID_PRECISION=float32` forces float32 everywhere this module is asked (a switch for debugging and for exact
comparisons with earlier runs); `MMESID_PRECISION=bf16` forces bf16 where the device can run it at all.
"""

import os

import torch


PRECISION_ENV = "MMESID_PRECISION"


def _cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16 instructions (what oneDNN uses for bf16 matmuls)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(check()) for check in checks if check is not None)


def bf16_is_fast(device: "str | torch.device | None" = None) -> bool:
    """Whether bf16 compute pays on `device` (default: CUDA if available, else the CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_fast_bf16()
    return False


def use_bf16(device: "str | torch.device | None" = None, requested: "bool | str | None" = None) -> bool:
    """The decision: `requested` (`True`/`False`, or `"bf16"`/`"float32"`) wins, then `MMESID_PRECISION`, then the
    hardware ([`bf16_is_fast`])."""
    if isinstance(requested, str):
        requested = _parse(requested, "requested precision")
    if requested is not None:
        return bool(requested)
    env = os.environ.get(PRECISION_ENV)
    if env:
        return _parse(env, PRECISION_ENV)
    return bf16_is_fast(device)


def backbone_dtype(device: "str | torch.device | None" = None, requested: "bool | str | None" = None) -> torch.dtype:
    """`torch.bfloat16` where [`use_bf16`] says so, else `torch.float32`: the dtype to load frozen weights in."""
    return torch.bfloat16 if use_bf16(device, requested) else torch.float32


def _parse(value: str, what: str) -> bool:
    value = value.strip().lower()
    if value in ("bf16", "bfloat16"):
        return True
    if value in ("float32", "fp32", "32"):
        return False
    if value == "auto":
        return bf16_is_fast()
    raise ValueError(f"{what}={value!r}: expected 'bf16', 'float32' or 'auto'.")


__all__ = ["PRECISION_ENV", "backbone_dtype", "bf16_is_fast", "use_bf16"]
