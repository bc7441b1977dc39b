"""``polymodal.layers`` sits at the bottom of the import graph: it imports torch and itself, nothing above."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import polymodal.layers

LAYERS = Path(polymodal.layers.__file__).resolve().parent
ABOVE = ("polymodal.training", "polymodal.encoders", "polymodal.models", "polymodal.model",
         "polymodal.recipes", "polymodal.evaluation", "polymodal.inference", "polymodal.data", "polymodal.config")


def test_importing_layers_in_a_fresh_interpreter_imports_nothing_above_it():
    code = ("import json, sys\nimport polymodal.layers\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'polymodal' or m.startswith('polymodal.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "polymodal.layers.token_embedding" in loaded
    above = [m for m in loaded if m.startswith(ABOVE)]
    assert not above, f"importing polymodal.layers imported {above}"
    assert all(m == "polymodal" or m.startswith(("polymodal.layers", "polymodal.errors")) for m in loaded), loaded


def test_layers_source_imports_only_torch_the_standard_library_and_itself():
    """Static check too (a lazy import inside a function would escape the fresh-interpreter test)."""
    allowed_roots = {"torch", "__future__", *sys.stdlib_module_names}
    for path in sorted(LAYERS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from .x import y: inside layers/
                    continue
                assert node.level == 0, f"{path.name}:{node.lineno} imports from above polymodal.layers"
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            bad = [root for root in roots if root not in allowed_roots]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"


def test_native_clip_is_built_from_the_layers_kernels():
    from polymodal.encoders.clip_towers import CLIPModelNative, CLIPNativeConfig
    from polymodal.layers import LayerNormFp32, ResidualAttentionBlock, TokenEmbedding

    model = CLIPModelNative(CLIPNativeConfig.tiny())
    assert isinstance(model.text.token_embedding, TokenEmbedding)
    assert isinstance(model.visual.transformer.blocks[0], ResidualAttentionBlock)
    assert isinstance(model.text.ln_final, LayerNormFp32)
