"""Native CLIP, kept importable here: the code moved down the import graph.

- kernels (fp32 LayerNorm, fused MLP, token embedding, attention blocks) → ``polymodal.layers``;
- ``CLIPNativeConfig``, the towers and ``CLIPModelNative`` → ``polymodal.encoders.clip_towers``
  (architectures are YAML presets: ``polymodal/presets/clip/*.yaml``);
- the ``clip_vision`` / ``clip_text`` encoders → ``polymodal.encoders.clip`` (registered whenever
  ``polymodal.encoders`` is imported: importing this module is no longer needed for that).

``from polymodal.alignment.clip_native import CLIPModelNative, CLIPNativeConfig`` (benchmarks, tests, user code)
keeps working; new code imports from the modules above.
"""

from ..encoders.clip import CLIPTextEncoder, CLIPVisionEncoder
from ..encoders.clip_towers import (
    CLIPModelNative,
    CLIPNativeConfig,
    CLIPTextTower,
    CLIPVisionTower,
    clip_preset_names,
)
from ..layers import LayerNormFp32, ResidualAttentionBlock, TokenEmbedding, Transformer, quick_gelu
from ..layers.mlp import MLP_ACTIVATIONS as _MLP_ACTS  # noqa: F401  (old private names, for old imports)
from ..layers.mlp import FusedMLP as _FusedMLP  # noqa: F401

# name → CLIPNativeConfig factory, as before (the names now come from the preset files)
PRESETS = {name: (lambda name=name, **overrides: CLIPNativeConfig.from_preset(name, **overrides))
           for name in clip_preset_names()}

__all__ = [
    "PRESETS",
    "CLIPModelNative",
    "CLIPNativeConfig",
    "CLIPTextEncoder",
    "CLIPTextTower",
    "CLIPVisionEncoder",
    "CLIPVisionTower",
    "LayerNormFp32",
    "ResidualAttentionBlock",
    "TokenEmbedding",
    "Transformer",
    "quick_gelu",
]
