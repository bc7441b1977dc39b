"""Registration is complete by construction: every ``@REGISTRY.register("name")`` in src/polymodal is reached.

The expected names are read from the source with ``ast`` (no import), so a component whose module nothing imports
fails here instead of surfacing as a KeyError in a user's config (as ``clip_vision`` / ``clip_text`` did). The
registries are read in a fresh interpreter after ``import polymodal`` only, so the imports pytest happened to
do while collecting other tests cannot hide a missing one.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import polymodal
from polymodal.registry import Registry

SRC = Path(polymodal.__file__).resolve().parent  # src/polymodal (editable install) or site-packages/polymodal


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` names (relative levels resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def registrations_in(path: Path, root: Path = SRC) -> list[tuple[str, str, str, str]]:
    """(registry module, registry attribute, registered name, where) for every ``X.register("name", ...)`` call
    in ``path`` (a file of the package at ``root``) whose X is a polymodal Registry: imported from a polymodal
    module, or created in this file."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    origins: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve_from(module, path.name == "__init__.py", node)
            if source == "polymodal" or source.startswith("polymodal."):
                for alias in node.names:
                    origins[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (isinstance(func, ast.Name) and func.id == "Registry") or (
                    isinstance(func, ast.Attribute) and func.attr == "Registry"):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        origins[target.id] = (module, target.id)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in origins):
            continue
        where = f"{path.relative_to(root.parent)}:{node.lineno}"
        if not node.args or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
            raise AssertionError(f"{where}: register() needs the name as a string literal, so that this contract "
                                 "can read it from the source")
        found.append((*origins[node.func.value.id], node.args[0].value, where))
    return found


def source_registrations() -> dict[tuple[str, str], dict[str, str]]:
    """{(registry module, attribute): {name: where}} over every module of the installed polymodal package."""
    table: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for path in sorted(SRC.rglob("*.py")):
        for registry_module, attribute, name, where in registrations_in(path):
            table[(registry_module, attribute)][name] = where
    return dict(table)


def registries_after_import_polymodal(keys: list[tuple[str, str]]) -> dict[str, dict]:
    """In a fresh interpreter: ``import polymodal`` and nothing else, then each registry's names and package."""
    code = (
        "import importlib, json, sys\n"
        "import polymodal\n"
        "out = {}\n"
        "for module, attribute in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        registry = getattr(importlib.import_module(module), attribute)\n"
        "        entry = {'type': type(registry).__name__, 'package': getattr(registry, 'package', None)}\n"
        "        entry['names'] = registry.names()\n"
        "    except Exception as err:\n"
        "        entry = {'error': f'{type(err).__name__}: {err}'}\n"
        "    out[module + '.' + attribute] = entry\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


SOURCE = source_registrations()


def test_the_source_scan_finds_every_registry_kind():
    """The scan itself works: the six registries of polymodal.registry and the names this issue was about."""
    kinds = {attribute for _, attribute in SOURCE}
    assert {"ENCODERS", "FUSIONS", "CONNECTORS", "HEADS", "OBJECTIVES", "DATASETS"} <= kinds
    encoders = SOURCE[("polymodal.registry", "ENCODERS")]
    assert {"clip_vision", "clip_text", "image_cnn", "hf"} <= set(encoders)
    assert "spoken-digits" in SOURCE[("polymodal.registry", "DATASETS")]


def test_every_registry_equals_its_register_calls_in_a_fresh_interpreter():
    keys = sorted(SOURCE)
    fresh = registries_after_import_polymodal([list(key) for key in keys])
    problems = []
    for module, attribute in keys:
        entry = fresh[f"{module}.{attribute}"]
        expected = SOURCE[(module, attribute)]
        if "error" in entry:
            problems.append(f"{module}.{attribute} ({len(expected)} register calls, e.g. "
                            f"{next(iter(expected.values()))}) cannot be read: {entry['error']}")
            continue
        if entry["type"] != "Registry":
            problems.append(f"{module}.{attribute} is a {entry['type']}, not a Registry")
            continue
        missing = sorted(set(expected) - set(entry["names"]))
        extra = sorted(set(entry["names"]) - set(expected))
        for name in missing:
            fix = (f"import its module in {entry['package'].replace('.', '/')}/__init__.py" if entry["package"] else
                   "give the registry the package that registers every entry: Registry(kind, package=...)")
            problems.append(f"{attribute}: {name!r} ({expected[name]}) is not registered after `import polymodal` "
                            f"and a read of the registry: {fix}")
        for name in extra:
            problems.append(f"{attribute}: {name!r} is registered but no register(\"{name}\") call was found in "
                            "the source")
    assert not problems, "\n".join(problems)


def test_the_registries_of_this_process_match_the_source_too():
    """Same check in the test process (whatever other tests imported): nothing registers out of the source."""
    for (module, attribute), expected in SOURCE.items():
        registry = getattr(importlib.import_module(module), attribute)
        assert isinstance(registry, Registry)
        assert set(registry.names()) == set(expected), attribute


def test_a_registry_loads_its_package_on_first_read_only():
    """Unit behaviour of the lazy load: register() never imports, get/names/in/describe import once."""
    registry = Registry("widget", package="tests_contracts_fake_widgets_package_that_does_not_exist")
    registry.register("first", "a widget")(object)  # registering must not trigger the import
    with pytest.raises(ModuleNotFoundError):
        registry.names()
    with pytest.raises(ModuleNotFoundError):  # a failed import is retried, not silently skipped
        registry.get("first")
    plain = Registry("gadget")  # no package: nothing to import, entries are whatever registered
    plain.register("only")(object)
    assert plain.names() == ["only"] and "only" in plain


def test_the_lazy_load_fills_a_registry_without_importing_its_package(tmp_path):
    code = (
        "import sys\n"
        "from polymodal.registry import ENCODERS\n"
        "assert 'polymodal.encoders' not in sys.modules\n"
        "assert 'clip_vision' in ENCODERS and 'polymodal.encoders.clip' in sys.modules\n"
        "print(ENCODERS.get('clip_text').__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "CLIPTextEncoder"


def test_the_ast_scan_resolves_relative_imports_and_local_registries(tmp_path):
    """The scanner on a synthetic package: relative and aliased imports, a Registry made in the file, and a
    ``register`` call on something that is not a polymodal registry (ignored)."""
    root = tmp_path / "polymodal"
    probe = root / "fusion" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from ..registry import FUSIONS as F\n"
        "from polymodal.registry import HEADS\n"
        "from ..registry import Registry\n"
        "LOCAL = Registry('thing')\n"
        "@F.register('alpha')\nclass A: ...\n"
        "@HEADS.register('beta', 'desc')\nclass B: ...\n"
        "LOCAL.register('gamma')(object)\n"
        "import atexit\natexit.register(print)\n"
    )
    found = {(m, a, n) for m, a, n, _ in registrations_in(probe, root)}
    assert found == {("polymodal.registry", "FUSIONS", "alpha"), ("polymodal.registry", "HEADS", "beta"),
                     ("polymodal.fusion.probe", "LOCAL", "gamma")}
    probe.write_text("from ..registry import FUSIONS\nNAME = 'x'\n@FUSIONS.register(NAME)\nclass A: ...\n")
    with pytest.raises(AssertionError, match="string literal"):
        registrations_in(probe, root)
