"""Mixed precision: the ``amp`` setting (``train.amp``, ``tools/eval.py --amp``, ``Segmenter(amp=...)``)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("none", *AMP_DTYPES)


def check_amp(amp: str, key: str = "amp") -> str:
    """``amp`` when it is none, bf16 or fp16; else ``ValueError`` naming ``key``."""
    if amp not in AMP_MODES:
        raise ValueError(f"{key} must be none, bf16 or fp16, got {amp!r}")
    return amp


def autocast_context(device: torch.device | str, amp: str):
    """torch.autocast for ``amp`` in {none, bf16, fp16} on ``device``'s type."""
    if check_amp(amp) == "none":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])
