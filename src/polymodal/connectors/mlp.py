"""MLP projector (LLaVA): each encoder token becomes one language-model token.

Liu et al., "Visual Instruction Tuning" (LLaVA, 2023, arXiv:2304.08485) used one linear layer; "Improved Baselines
with Visual Instruction Tuning" (LLaVA-1.5, 2023, arXiv:2310.03744) a two-layer MLP, Linear → GELU → Linear
(``mm_projector_type: mlp2x_gelu``), which is the default here.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..registry import CONNECTORS
from .base import Connector, ConnectorOutput


@CONNECTORS.register("mlp")
class MLPProjector(Connector):
    """Per-token MLP, D_enc → D_lm: ``depth`` Linear layers with GELU between them (LLaVA-1.5: depth 2).

    tokens [B, N, D_enc], mask [B, N] → tokens [B, N, D_lm] (masked positions zero), the same mask.
    Options: ``depth`` (1 = LLaVA's linear projection), ``hidden_dim`` (width of the inner layers; default
    D_lm, as in LLaVA-1.5).
    """

    def __init__(self, input_dim: int, output_dim: int, depth: int = 2, hidden_dim: int | None = None):
        super().__init__(input_dim, output_dim)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"MLPProjector: depth must be an integer ≥ 1, got {depth!r}")
        hidden = output_dim if hidden_dim is None else hidden_dim
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0:
            raise ValueError(f"MLPProjector: hidden_dim must be a positive integer, got {hidden_dim!r}")
        widths = [input_dim] + [hidden] * (depth - 1) + [output_dim]
        layers: list[nn.Module] = []
        for i in range(depth):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.net = nn.Sequential(*layers)

    def num_tokens(self, num_input_tokens: int) -> int:
        return int(num_input_tokens)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> ConnectorOutput:
        mask = self.check_inputs(tokens, mask)
        pad = ~mask.unsqueeze(-1)
        # zero padding before (NaN/inf garbage would survive a multiplication by 0) and after (biases) projecting
        out = self.net(tokens.masked_fill(pad, 0.0)).masked_fill(pad, 0.0)
        return ConnectorOutput(tokens=out, mask=mask)
