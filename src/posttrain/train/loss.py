"""Model inputs for a packed batch, the token-level loss, and per-category loss accounting.

The loss is transformers' causal-LM loss (`ForCausalLMLoss`: fp32 logits, labels shifted by one,
-100 ignored, summed and divided by the number of target tokens of the whole accumulated batch
across processes), computed per token once so that the same numbers give both the training loss
and the loss of every category. `labels` are -100 outside assistant tokens and at the first token
of every document, so no prompt token and no document boundary is ever a target.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def model_inputs(batch: dict[str, Any], attn_implementation: str) -> dict[str, Any]:
    """What the model is called with: ids, restarting positions, no cache, varlen kwargs for flash.

    sdpa/eager find the documents from `position_ids` (transformers builds a block-diagonal causal
    mask when there is no attention mask *and no cache*); flash-attention takes the boundaries as
    `cu_seq_lens_q/k` and `max_length_q/k` and runs its varlen kernel.
    """
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if attn_implementation.startswith("flash"):
        for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
            inputs[key] = batch[key]
    return inputs


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position against the next label, 0 where the target is ignored; shape [T]."""
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    flat = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, targets.to(flat.device), ignore_index=IGNORE_INDEX, reduction="none")


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is a training target (the positions `token_losses` counts)."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1) != IGNORE_INDEX


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Document number of every flattened position, from `cu_seqlens` = [0, end1, end2, ...].

    >>> document_ids(torch.tensor([0, 2, 5]), 5).tolist()
    [0, 0, 1, 1, 1]
    """
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(lens.numel(), device=lens.device), lens)[:total]


class LossMeter:
    """Sums of token losses and target counts per category, on the device, since the last `take`.

    Layout of the vector `take` returns: [loss_sum, targets, tokens, loss_sum per category...,
    targets per category...], so one all-reduce sums everything across processes.
    """

    def __init__(self, num_categories: int) -> None:
        self.num_categories = num_categories
        self._acc: torch.Tensor | None = None

    def add(self, per_token: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor,
            doc_categories: torch.Tensor) -> None:
        """Account one micro-batch (values are detached; no graph is kept)."""
        c = self.num_categories
        device = per_token.device
        if self._acc is None or self._acc.device != device:
            self._acc = torch.zeros(3 + 2 * c, dtype=torch.float64, device=device)
        losses = per_token.detach().double()
        mask = target_mask(labels).to(device)
        cats = doc_categories.to(device)[document_ids(cu_seqlens.to(device), losses.numel())]
        self._acc[0] += losses.sum()
        self._acc[1] += mask.sum()
        self._acc[2] += labels.numel()
        self._acc[3 : 3 + c].index_add_(0, cats, losses)
        self._acc[3 + c :].index_add_(0, cats, mask.double())

    def take(self, device: torch.device | str) -> torch.Tensor:
        """The sums since the last call (zeros if nothing was added), then reset."""
        out = self._acc if self._acc is not None else torch.zeros(3 + 2 * self.num_categories, dtype=torch.float64)
        self._acc = None
        return out.to(device)


def summarize(sums: torch.Tensor | list[float], names: list[str]) -> dict[str, Any]:
    """Mean losses (overall and per category) and counts from a (reduced) `LossMeter` vector.

    >>> s = summarize([6.0, 3.0, 10.0, 4.0, 2.0, 2.0, 1.0], ["chat", "math"])
    >>> s["loss"], s["loss_by_category"], s["targets_by_category"]
    (2.0, {'chat': 2.0, 'math': 2.0}, {'chat': 2, 'math': 1})
    """
    v = [float(x) for x in (sums.tolist() if isinstance(sums, torch.Tensor) else sums)]
    c = len(names)
    loss_by, targets_by = {}, {}
    for i, name in enumerate(names):
        n = v[3 + c + i]
        if n > 0:
            loss_by[name] = v[3 + i] / n
            targets_by[name] = int(n)
    return {
        "loss": v[0] / v[1] if v[1] else float("nan"),
        "targets": int(v[1]),
        "tokens": int(v[2]),
        "loss_by_category": loss_by,
        "targets_by_category": targets_by,
    }
