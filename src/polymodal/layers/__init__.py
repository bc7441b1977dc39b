"""Kernels shared by models: fp32 LayerNorm, fused MLP, token embedding, pre-LN attention blocks, and the
CPU GEMM backend choice (oneDNN or BLAS, ``gemm``).

This package sits at the bottom of the import graph (``layers → torch`` only): it imports nothing from
``polymodal.encoders``, ``models``, ``alignment`` or ``training``, so any model can use it and loading a model
never drags training code in (tests/contracts/test_import_layers.py checks it in a fresh interpreter).
"""

from .gemm import cpu_gemm_backend, linear, set_cpu_gemm_backend
from .mlp import FusedMLP, fused_mlp_supported, quick_gelu
from .norms import LayerNormFp32
from .token_embedding import TokenEmbedding
from .transformer import ResidualAttentionBlock, Transformer

__all__ = [
    "FusedMLP",
    "LayerNormFp32",
    "ResidualAttentionBlock",
    "TokenEmbedding",
    "Transformer",
    "cpu_gemm_backend",
    "fused_mlp_supported",
    "linear",
    "quick_gelu",
    "set_cpu_gemm_backend",
]
