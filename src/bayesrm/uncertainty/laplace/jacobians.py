"""Per-example gradients of a reward model w.r.t. its LoRA (and head) linear maps, batched.

For a linear map out_t = W a_t applied at positions t of one sequence, the gradient of a scalar
output r w.r.t. W is  dr/dW = sum_t g_t a_t^T,  g_t = dr/d out_t.  Rows of a batch never interact
in a transformer, so ONE forward pass of the batch (hooks keep each map's input a [N, T, d_in] and
output) and ONE backward pass of sum_n r_n (giving every g [N, T, d_out]) yield all N per-example
gradients at once; no loop over examples (the trick of BackPACK / opacus).

For preference pairs the batch holds rows [chosen_1..chosen_B, rejected_1..rejected_B] and the
scalar is the margin f_b = r(chosen_b) - r(rejected_b); its gradient is the difference of the two
rows' gradients (the sign comes out of the backward pass).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class LinearBlock:
    """One linear map of phi: its name, the nn.Linear, and whether its bias belongs to phi."""

    name: str
    module: nn.Linear
    with_bias: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the per-example gradient; d_in counts the bias column."""
        w = self.module.weight
        return w.shape[0], w.shape[1] + int(self.with_bias)

    @property
    def numel(self) -> int:
        d_out, d_in = self.shape
        return d_out * d_in

    def weight_matrix(self) -> torch.Tensor:
        """[d_out, d_in] current weights (bias as the last column when included)."""
        w = self.module.weight
        return torch.cat([w, self.module.bias[:, None]], 1) if self.with_bias else w

    @torch.no_grad()
    def add_(self, delta: torch.Tensor) -> None:
        """Add a [d_out, d_in] perturbation to the weights (and bias)."""
        d = self.module.weight.shape[1]
        self.module.weight.add_(delta[:, :d].to(self.module.weight.dtype))
        if self.with_bias:
            self.module.bias.add_(delta[:, d].to(self.module.bias.dtype))


def collect_blocks(model: nn.Module, include_head: bool = False) -> list[LinearBlock]:
    """The linear maps of phi: every LoRA A and B of ``model.lora_modules()`` (+ the head)."""
    blocks: list[LinearBlock] = []
    for name, layer in model.lora_modules().items():
        for part in ("lora_A", "lora_B"):
            linear = getattr(layer, part)["default"]
            blocks.append(LinearBlock(f"{name}.{part}", linear, with_bias=False))
    if include_head:
        head = model.head
        blocks.append(LinearBlock("head", head, with_bias=head.bias is not None))
    if not blocks:
        raise ValueError("the model has no LoRA layers; use include_head=True for a head-only Laplace")
    return blocks


@contextmanager
def capture(blocks: list[LinearBlock]) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Forward hooks recording {block name: (input, output)} of every block during the context."""
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for block in blocks:
        def hook(_m: nn.Module, inputs: tuple, output: torch.Tensor, name: str = block.name) -> None:
            if name in store:
                raise RuntimeError(f"{name} ran twice in one forward pass; weight sharing is not supported")
            store[name] = (inputs[0], output)
        handles.append(block.module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class TokenGrads:
    """Hooked quantities of one block for a batch of N rows.

    inputs: [N, T, d_in] module inputs a_t (bias column of ones appended when included), or [N, d_in]
    grads:  [N, T, d_out] output gradients g_t = d(output scalar)/d out_t, or [N, d_out]
    """

    inputs: torch.Tensor
    grads: torch.Tensor

    def per_example(self) -> torch.Tensor:
        """[N, d_out, d_in] per-example gradients sum_t g_t a_t^T."""
        if self.inputs.ndim == 2:
            return self.grads[:, :, None] * self.inputs[:, None, :]  # [N, d_out, d_in]
        return torch.einsum("nto,nti->noi", self.grads, self.inputs)


def forward_backward(
    model: nn.Module,
    blocks: list[LinearBlock],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pairs: bool = False,
) -> tuple[torch.Tensor, dict[str, TokenGrads]]:
    """One forward and one backward pass: outputs and hooked (inputs, output grads) per block.

    input_ids, attention_mask [N, T]. With ``pairs`` N = 2B (chosen rows then rejected rows) and the
    output is the margin f [B]; gradients are then those of f (rejected rows carry the minus sign),
    still one row per sequence: [2B, ...]. Without ``pairs`` the output is the reward r [N].
    """
    with torch.enable_grad(), capture(blocks) as store:
        rewards = model(input_ids, attention_mask)  # [N]
        if pairs:
            n = rewards.shape[0] // 2
            out = rewards[:n] - rewards[n:]  # [B]
        else:
            out = rewards
        names = [b.name for b in blocks]
        grads = torch.autograd.grad(out.sum(), [store[n][1] for n in names], allow_unused=True)
    result: dict[str, TokenGrads] = {}
    for block, g in zip(blocks, grads):
        a = store[block.name][0].detach()
        g = torch.zeros_like(store[block.name][1]) if g is None else g.detach()
        if block.with_bias:
            a = torch.cat([a, torch.ones_like(a[..., :1])], -1)
        result[block.name] = TokenGrads(a, g)
    return out.detach(), result


@contextmanager
def weights_require_grad(blocks: list[LinearBlock]) -> Iterator[list[torch.Tensor]]:
    """The blocks' weights (and biases in phi), with requires_grad on for the context."""
    params = [p for b in blocks for p in ([b.module.weight, b.module.bias] if b.with_bias else [b.module.weight])]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield params
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def stream_pair_grads(
    model: nn.Module,
    blocks: list[LinearBlock],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    consume: Callable[[torch.Tensor], Callable[[str, TokenGrads], None]],
) -> torch.Tensor:
    """Like ``forward_backward(..., pairs=True)`` but each block's TokenGrads are handed to a sink as
    soon as the backward pass reaches that block, and then dropped: the fit never holds every
    block's output gradients [2B, T, d_out] (or outputs) at once, so its memory stays that of a
    training step (the inputs kept are those autograd saves anyway).

    consume(f) is called with the margins f [B] after the forward pass and returns the sink
    sink(block name, TokenGrads); a block the margin does not depend on gets zero gradients.
    Returns f [B].
    """
    inputs: dict[str, torch.Tensor] = {}
    out_shapes: dict[str, tuple[torch.Size, torch.dtype]] = {}
    sink: list[Callable[[str, TokenGrads], None]] = []

    def take(block: LinearBlock, g: torch.Tensor) -> None:
        a = inputs.pop(block.name)
        if block.with_bias:
            a = torch.cat([a, torch.ones_like(a[..., :1])], -1)
        sink[0](block.name, TokenGrads(a, g.detach()))

    def forward_hook(_m: nn.Module, args: tuple, output: torch.Tensor, block: LinearBlock) -> None:
        if block.name in inputs:
            raise RuntimeError(f"{block.name} ran twice in one forward pass; weight sharing is not supported")
        inputs[block.name], out_shapes[block.name] = args[0].detach(), (output.shape, output.dtype)
        output.register_hook(lambda g: take(block, g))

    handles = [b.module.register_forward_hook(lambda m, a, o, b=b: forward_hook(m, a, o, b)) for b in blocks]
    try:
        with torch.enable_grad(), weights_require_grad(blocks) as params:
            rewards = model(input_ids, attention_mask)  # [2B]
            n = rewards.shape[0] // 2
            f = rewards[:n] - rewards[n:]  # [B]
            sink.append(consume(f.detach()))
            torch.autograd.grad(f.sum(), params, allow_unused=True)  # LoRA-sized; pulls the pass through every block
    finally:
        for h in handles:
            h.remove()
    for block in blocks:
        if block.name in inputs:  # the margin does not depend on this block
            shape, dtype = out_shapes[block.name]
            take(block, torch.zeros(shape, dtype=dtype, device=input_ids.device))
    return f.detach()


def pair_sum(per_row: torch.Tensor) -> torch.Tensor:
    """[2B, ...] per-row gradients of the margin -> [B, ...] per-pair gradients (chosen + rejected rows)."""
    n = per_row.shape[0] // 2
    return per_row[:n] + per_row[n:]


def per_example_jacobians(
    model: nn.Module,
    blocks: list[LinearBlock],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pairs: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs [B] and per-example Jacobians {block: [B, d_out, d_in]} of r (or of the pair margin f)."""
    out, hooked = forward_backward(model, blocks, input_ids, attention_mask, pairs=pairs)
    jac = {}
    for name, tg in hooked.items():
        m = tg.per_example()  # [N, d_out, d_in]
        jac[name] = pair_sum(m) if pairs else m
    return out, jac
