"""Imports point down only, for the whole package: every module sits on one floor and imports only its own floor
or the floors below it (issue #10; docs/ARCHITECTURE.md):

    cli → recipes → {training, evaluation, inference} → tasks → models → peft
        → {encoders, fusion, connectors, decoders, heads, objectives, metrics, data} → layers → ground

Checked statically (``ast``), lazy imports inside functions included, so an upward import cannot hide in a
function body. A compat shim (an old import path kept for user code) sits on the top floor: nothing in polymodal
may import it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_import_direction import PACKAGE, _imported_modules

# Floor of each top-level module / package of polymodal (0 = ground). A package's modules share its floor unless a
# longer prefix says otherwise.
FLOORS: dict[str, int] = {
    "polymodal": 0, "polymodal.config": 0, "polymodal.errors": 0, "polymodal.registry": 0, "polymodal.types": 0,
    "polymodal.files": 0, "polymodal.jsonable": 0, "polymodal.threads": 0, "polymodal.presets": 0,
    "polymodal.layers": 1,
    "polymodal.encoders": 2, "polymodal.fusion": 2, "polymodal.connectors": 2, "polymodal.decoders": 2,
    "polymodal.heads": 2, "polymodal.objectives": 2, "polymodal.metrics": 2, "polymodal.data": 2,
    "polymodal.components": 2,
    "polymodal.peft": 3,
    "polymodal.models": 4, "polymodal.generation": 4, "polymodal.ensemble.model": 4, "polymodal.ensemble.stacking": 4,
    "polymodal.tasks": 5,
    "polymodal.training": 6, "polymodal.evaluation": 6, "polymodal.inference": 6, "polymodal.explain": 6,
    "polymodal.tune": 6, "polymodal.ensemble": 6,
    "polymodal.recipes": 7,
    "polymodal.cli": 8, "polymodal.commands": 8, "polymodal.__main__": 8,
}
NAMES = {0: "ground", 1: "layers", 2: "components", 3: "peft", 4: "models", 5: "tasks",
         6: "training / evaluation / inference", 7: "recipes", 8: "cli"}
# Old import paths kept so user code keeps working: top floor, never imported by polymodal itself.
SHIMS = {"polymodal.pipeline", "polymodal.model", "polymodal.demo", "polymodal.alignment.recipe",
         "polymodal.alignment.model", "polymodal.alignment.metrics", "polymodal.alignment.zeroshot",
         "polymodal.alignment.evaluate", "polymodal.evaluation.classification", "polymodal.training.finetune",
         "polymodal.training.peft_utils", "polymodal.training.prompt_tuning", "polymodal.training.finetune_warnings",
         "polymodal.alignment", "polymodal.alignment.clip_native", "polymodal.alignment.convert",
         "polymodal.evaluation.bootstrap", "polymodal.evaluation.exact", "polymodal.evaluation.intervals"}
TOP = max(NAMES) + 1


def floor_of(module: str) -> int | None:
    if module in SHIMS or any(module.startswith(shim + ".") for shim in SHIMS if shim == "polymodal.alignment"):
        return TOP
    best = None
    for prefix, floor in FLOORS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, floor)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_floor():
    missing = [module_name(p) for p in modules() if floor_of(module_name(p)) is None]
    assert not missing, f"add these modules to FLOORS (or SHIMS): {missing}"


def test_imports_point_down_only():
    bad = []
    for path in modules():
        name = module_name(path)
        own = floor_of(name)
        for line, target in _imported_modules(path):
            if not (target == "polymodal" or target.startswith("polymodal.")):
                continue
            floor = floor_of(target)
            if floor is not None and floor > own:
                where = "a compat shim" if floor == TOP else f"the {NAMES[floor]} floor"
                bad.append(f"{name}:{line} ({NAMES.get(own, 'shim')}) imports {target} ({where})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module,expected", [("polymodal.tasks.alignment", 5), ("polymodal.config.run", 0),
                                             ("polymodal.ensemble.model", 4), ("polymodal.ensemble.build", 6),
                                             ("polymodal.pipeline", TOP)])
def test_floor_lookup_takes_the_longest_prefix(module, expected):
    assert floor_of(module) == expected
