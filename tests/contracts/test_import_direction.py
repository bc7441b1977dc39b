"""Imports point down only: the config layer imports nothing above it, and building / saving / loading a model
(a LoRA one included, full and adapter-only saves) never imports training, recipe or evaluation code.

Fresh interpreters (subprocess) so that modules other tests imported do not hide an upward import; a static AST
pass too, since a lazy import inside a function escapes an import-time check until that function runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polymodal

PACKAGE = Path(polymodal.__file__).resolve().parent
# Modules that loading a model must never pull in: the floors above the models.
ABOVE_MODELS = ("polymodal.training", "polymodal.pipeline", "polymodal.evaluation", "polymodal.recipes",
                "polymodal.cli")
# The ground floor: the modules every layer may import. Each may import only the others (and itself).
CONFIG_MODULES = tuple(sorted(
    "polymodal.config" + ("" if p.stem == "__init__" else f".{p.stem}") for p in (PACKAGE / "config").glob("*.py")))
GROUND = (*CONFIG_MODULES, "polymodal.errors", "polymodal.registry", "polymodal.types")


def run_fresh(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the polymodal modules loaded at its end (sorted)."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json as _json, sys as _sys
        print(_json.dumps(sorted(m for m in _sys.modules if m == "polymodal" or m.startswith("polymodal."))))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def above(loaded: list[str]) -> list[str]:
    """The loaded modules on a floor above the models."""
    return [m for m in loaded if any(m == prefix or m.startswith(prefix + ".") for prefix in ABOVE_MODELS)]


def test_reading_a_config_imports_only_the_config_layer():
    loaded = run_fresh("""
        import warnings
        from polymodal.config import Config, from_dict
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = from_dict(Config, {"model": {"modalities": {"text": {"kind": "text"}}}, "finetune": "lora"})
        assert type(cfg.finetune).__name__ == "FinetuneConfig" and cfg.finetune.default == "lora"
        # the random-encoder warning names the encoder "auto" resolves to, without importing the encoders
        (message,) = [str(w.message) for w in caught if w.category.__name__ == "FinetuneWarning"]
        assert "text (text_transformer)" in message, message
    """)
    assert "polymodal.config.finetune_warnings" in loaded  # the finetune section was parsed and checked
    outside = [m for m in loaded if m != "polymodal" and m not in GROUND]
    assert not outside, f"reading a config imported {outside}"


def test_building_saving_and_loading_models_imports_nothing_above_the_models(tmp_path):
    loaded = run_fresh(f"""
        import warnings
        from pathlib import Path

        import numpy as np
        import torch

        import polymodal.config, polymodal.models, polymodal.models.aligner, polymodal.peft
        import polymodal.inference.predictor
        from polymodal.models.aligner import AlignmentConfig, AlignmentModel
        from polymodal.config import ModelConfig, from_dict
        from polymodal.inference.predictor import Predictor
        from polymodal.models import MultimodalModel
        from polymodal.peft import apply_finetune, save_adapter

        warnings.simplefilter("ignore")
        root = Path({str(tmp_path)!r})
        modalities = {{
            "image": {{"kind": "image", "encoder": "image_cnn", "options": {{"channels": [4, 8]}},
                      "processor": {{"image_size": 8, "channels": 1}}}},
            "text": {{"kind": "text", "options": {{"dim": 16, "depth": 1, "heads": 2}},
                     "processor": {{"max_length": 8}}}},
        }}
        config = from_dict(ModelConfig, {{"modalities": modalities, "fusion": {{"dim": 8}},
                                         "head": {{"labels": ["a", "b"]}}}}, "model")
        torch.manual_seed(0)
        MultimodalModel(config).save_pretrained(root / "base")
        model = MultimodalModel.from_pretrained(root / "base")
        apply_finetune(model, {{"default": "lora", "lora": {{"r": 2}}}})
        with torch.no_grad():  # move the adapters off their zero init so a wrong reload would show
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.1)
        model.save_pretrained(root / "full")
        save_adapter(model, root / "adapter")
        sample = {{"image": np.full((8, 8), 128, dtype=np.uint8), "text": "one two"}}
        expected = Predictor(model).predict(sample).probabilities
        for name in ("full", "adapter"):  # Predictor takes model directories; an adapter loads through the model
            got = Predictor(MultimodalModel.from_pretrained(root / name)).predict(sample).probabilities
            assert all(abs(got[k] - expected[k]) < 1e-5 for k in expected), (name, got, expected)

        aligned = from_dict(AlignmentConfig, {{"modalities": modalities, "embed_dim": 8}}, "alignment")
        AlignmentModel(aligned).save_pretrained(root / "aligned")
        assert Predictor(root / "full").labels == ["a", "b"]
        embedding = Predictor(root / "aligned").embed(text="one two")["text"]
        assert abs(float(embedding.norm()) - 1.0) < 1e-4
    """)
    assert "polymodal.peft.lora" in loaded and "polymodal.models.aligner" in loaded
    assert not above(loaded), f"building / saving / loading models imported {above(loaded)}"


# ---------------------------------------------------------------------------------------------- static


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``, lazy ones inside functions included."""
    found: list[tuple[int, str]] = []
    inside = path.is_relative_to(PACKAGE.parent)
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts) if inside else [path.stem]
    # ``from .x import y`` resolves against the module's package: a package's __init__ is its own package.
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [_submodule_or_package(module, a.name) for a in node.names]
            else:
                names = [node.module or ""]
            found += [(node.lineno, name) for name in names]
    return found


def _submodule_or_package(package: str, name: str) -> str:
    """``from package import name``: the submodule when ``name`` is one, else the package (an attribute)."""
    where = PACKAGE.parent.joinpath(*package.split("."), name)
    return f"{package}.{name}" if where.with_suffix(".py").exists() or where.is_dir() else package


def test_ground_floor_modules_import_nothing_above_them():
    """config*, errors, registry, types: polymodal imports only among themselves (registry names the packages it
    fills as strings, imported by importlib, which is how registration stays complete without an upward import)."""
    ground = [PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py") for name in GROUND]
    ground = [path if path.exists() else path.with_suffix("") / "__init__.py" for path in ground]
    assert all(path.exists() for path in ground), [p for p in ground if not p.exists()]
    bad = []
    for path in ground:
        for line, module in _imported_modules(path):
            if (module == "polymodal" or module.startswith("polymodal.")) and module not in (*GROUND, "polymodal"):
                bad.append(f"{path.name}:{line} imports {module}")
    assert not bad, bad


def test_layers_and_peft_import_nothing_above_them():
    """layers/: torch and itself only; peft/: the ground floor, files, encoders and layers (prompt tuning finds
    their transformers) and itself — never models, training, recipes, evaluation or inference."""
    allowed = {
        "layers": ("polymodal.layers",),
        "peft": (*GROUND, "polymodal", "polymodal.files", "polymodal.peft", "polymodal.encoders", "polymodal.layers"),
    }
    bad = []
    for package, ok in allowed.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for line, module in _imported_modules(path):
                if not (module == "polymodal" or module.startswith("polymodal.")):
                    continue
                if not any(module == root or (root != "polymodal" and module.startswith(root + ".")) for root in ok):
                    bad.append(f"{package}/{path.name}:{line} imports {module}")
    assert not bad, bad


def test_the_static_check_sees_relative_and_lazy_imports(tmp_path):
    """The resolver behind the static checks: relative imports resolve against the module's package."""
    probe = PACKAGE / "peft" / "apply.py"
    modules = {module for _, module in _imported_modules(probe)}
    assert {"polymodal.config", "polymodal.config.finetune", "polymodal.peft.lora"} <= modules
    init = {module for _, module in _imported_modules(PACKAGE / "peft" / "__init__.py")}
    assert "polymodal.peft.apply" in init
    adapters = {module for _, module in _imported_modules(PACKAGE / "peft" / "adapters.py")}
    assert "polymodal" in adapters  # from .. import __version__: an attribute of the package, not a module
    source = tmp_path / "probe.py"
    source.write_text("def later():\n    from polymodal.training import Trainer\n")
    assert _imported_modules(source) == [(2, "polymodal.training")]
