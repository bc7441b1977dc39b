"""Connectors: modality encoder tokens [B, N, D_enc] → language-model input tokens [B, M, D_lm]. Importing this
package registers them all in ``polymodal.registry.CONNECTORS``:

- ``mlp``: per-token MLP projector (LLaVA / LLaVA-1.5), M = N;
- ``resampler``: learned queries + cross-attention (Flamingo Perceiver Resampler, BLIP-2 Q-Former style),
  a fixed M = ``num_tokens``.
"""

from __future__ import annotations

from typing import Any

from ..registry import CONNECTORS
from .base import Connector, ConnectorOutput
from .mlp import MLPProjector
from .resampler import PerceiverResampler


def build_connector(name: str, input_dim: int, output_dim: int, **options: Any) -> Connector:
    """``CONNECTORS.build(name, input_dim=D_enc, output_dim=D_lm, **options)`` with a typed return.

    Raises KeyError (with a "did you mean") for an unknown name, TypeError naming the connector for an unknown
    option, ValueError for a bad value.
    """
    return CONNECTORS.build(name, input_dim=input_dim, output_dim=output_dim, **options)


__all__ = ["Connector", "ConnectorOutput", "MLPProjector", "PerceiverResampler", "build_connector"]
