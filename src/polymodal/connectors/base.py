"""Base class for connectors: the bridge from a modality encoder's tokens to a causal language model's input space.

Shapes: B attachments (images, clips) in the batch, N encoder tokens, D_enc encoder width, M connector tokens,
D_lm the language model's hidden size (its input-embedding width).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..types import ModalityOutput


@dataclass
class ConnectorOutput:
    """tokens [B, M, D_lm] in the language model's embedding space; mask [B, M] bool, True for real tokens.

    A masked token is zero and must not reach the language model (the vision-language model drops it when it
    expands a placeholder), so an attachment with k real tokens occupies exactly k positions of the prompt.
    """

    tokens: Tensor
    mask: Tensor

    @property
    def lengths(self) -> Tensor:
        """[B] long: how many real tokens each attachment contributes."""
        return self.mask.sum(1)


class Connector(nn.Module):
    """Every connector is built as ``cls(input_dim=D_enc, output_dim=D_lm, **options)``.

    ``forward(tokens [B, N, D_enc], mask [B, N] bool | None) -> ConnectorOutput`` with ``tokens [B, M, D_lm]``.
    ``num_tokens(n)`` says how many tokens M an input of ``n`` tokens becomes (N for per-token projectors, a
    constant for resamplers). A sample whose mask is all False (an absent attachment) comes out all masked and
    zero: its values never influence anything.
    """

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        for key, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}: {key} must be a positive integer, got {value!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim

    def num_tokens(self, num_input_tokens: int) -> int:
        raise NotImplementedError

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> ConnectorOutput:
        raise NotImplementedError

    def forward_modality(self, output: ModalityOutput) -> ConnectorOutput:
        """The same as ``forward(output.tokens, output.mask)`` for a polymodal encoder's output."""
        return self(output.tokens, output.mask)

    def check_inputs(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """Validate shapes; return the mask as bool [B, N] (all True when None)."""
        name = type(self).__name__
        if tokens.dim() != 3 or tokens.shape[-1] != self.input_dim:
            raise ValueError(
                f"{name}: expected tokens [B, N, D_enc={self.input_dim}], got {tuple(tokens.shape)}; build the "
                f"connector with input_dim equal to the encoder's output width"
            )
        if mask is None:
            return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ValueError(f"{name}: mask {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}[:2]")
        return mask.to(device=tokens.device, dtype=torch.bool)
