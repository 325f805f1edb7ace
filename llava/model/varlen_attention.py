"""Packed (varlen) attention from PyTorch itself, for CUDA machines without the flash-attn package.

transformers keeps packed samples apart without a mask only on flash-attn's varlen kernels, and
flash-attn has no prebuilt wheel for every torch. PyTorch ships the same flash kernels as
`torch.nn.attention.varlen.varlen_attn`; registering it under `torch_varlen` with transformers'
AttentionInterface (plus a mask function that builds no mask where nothing is padded) gives sequence
packing on the stock CUDA torch. Hand-written: transformers has no such backend.

Where the kernel cannot run (no CUDA, float32, an older torch) each segment goes through SDPA instead:
the same arithmetic, slower, which is what the CPU tests exercise. Padded batches and decoding steps
(query shorter than the keys) always go through transformers' SDPA path.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
import torch.nn.functional as F

NAME = "torch_varlen"


@lru_cache(maxsize=None)
def register() -> str:
    """Make `torch_varlen` a valid attn_implementation for every transformers model (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME


def kernel_available() -> bool:
    """PyTorch's varlen flash kernel exists here and a GPU can run it."""
    return torch.cuda.is_available() and _kernel() is not None


@lru_cache(maxsize=None)
def _kernel():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask for square, unpadded attention (segments come from position_ids); SDPA's mask otherwise.

    Queries shorter than the keys (a cached continuation) keep SDPA's mask: its causal diagonal is offset.
    """
    from transformers.masking_utils import sdpa_mask

    square = kwargs.get("q_length") == kwargs.get("kv_length")
    if square and (attention_mask is None or bool(attention_mask.all())):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def segment_bounds(position_ids: torch.Tensor | None, rows: int, length: int,
                   device: torch.device) -> torch.Tensor:
    """Cumulative segment starts (int32, ends with rows*length) over the flattened rows.

    A segment starts at every position id 0, and at every row start, so unpacked rows are segments too.
    """
    starts = torch.zeros(rows, length, dtype=torch.bool, device=device)
    starts[:, 0] = True
    if position_ids is not None:
        starts |= position_ids.expand(rows, length) == 0
    index = starts.reshape(-1).nonzero().flatten()
    end = torch.tensor([rows * length], device=device)
    return torch.cat([index, end]).to(torch.int32)


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None,
                             is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: (batch, heads, tokens, dim) in, (batch, tokens, heads, dim) out."""
    if attention_mask is not None or query.shape[2] != key.shape[2]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    if sliding_window is not None or dropout:
        raise NotImplementedError(f"{NAME} supports neither sliding windows nor attention dropout "
                                  "(Qwen2.5 and SigLIP use neither); use sdpa or flash_attention_2")
    rows, heads, length, dim = query.shape
    causal = module.is_causal if is_causal is None else is_causal
    bounds = segment_bounds(kwargs.get("position_ids"), rows, length, query.device)
    q, k, v = (t.transpose(1, 2).reshape(rows * length, t.shape[1], dim) for t in (query, key, value))
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _kernel() is not None:
        out = _flash_segments(q, k, v, bounds, int((bounds[1:] - bounds[:-1]).max()), causal, scaling)
    else:
        out = _sdpa_segments(q, k, v, bounds, causal, scaling)
    return out.reshape(rows, length, heads, dim), None


def _sdpa_segments(q, k, v, bounds, causal: bool, scaling: float | None) -> torch.Tensor:
    gqa = q.shape[1] != k.shape[1]
    pieces = []
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        one = [t[start:end].transpose(0, 1) for t in (q, k, v)]
        pieces.append(F.scaled_dot_product_attention(*one, is_causal=causal, scale=scaling,
                                                     enable_gqa=gqa).transpose(0, 1))
    return torch.cat(pieces)


@lru_cache(maxsize=None)
def _kernel_keywords() -> frozenset[str]:
    """The keywords the installed torch's varlen_attn takes (they changed between releases)."""
    return frozenset(inspect.signature(_kernel()).parameters)


def _flash_segments(q, k, v, bounds, longest: int, causal: bool, scaling: float | None) -> torch.Tensor:
    """One varlen flash call; adapts to the keyword set of the installed torch's varlen_attn."""
    kernel, accepted = _kernel(), _kernel_keywords()
    if q.shape[1] != k.shape[1] and "enable_gqa" not in accepted:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    options = {"scale": scaling}
    if "enable_gqa" in accepted:
        options["enable_gqa"] = q.shape[1] != k.shape[1]
    if "window_size" in accepted:
        options["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        options["is_causal"] = causal
    return kernel(q, k, v, bounds, bounds, longest, longest, **options)
