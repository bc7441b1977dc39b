"""The CLI is one module per verb (polymodal/cli/<verb>.py with add_parser + run): every verb of `cli.VERBS` has
both, registers exactly its own name, and `main` runs the verb module's `run`; the old entry points
(`polymodal` script, `python -m polymodal`, `python -m polymodal.cli`) still reach the same parser."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import polymodal
from polymodal import cli
from polymodal.cli import VERBS, build_parser, main, verb_module
from polymodal.cli.common import VerbParser

PACKAGE = Path(polymodal.__file__).resolve().parent


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("verb,module", VERBS)
def test_each_verb_module_registers_its_own_verb(verb, module):
    mod = verb_module(verb)
    assert mod.__name__ == f"polymodal.cli.{module}" and callable(mod.add_parser) and callable(mod.run)
    sub = argparse.ArgumentParser().add_subparsers(parser_class=VerbParser)
    mod.add_parser(sub)
    assert list(sub.choices) == [verb]  # one verb per module, named as in VERBS
    assert "--debug" in sub.choices[verb].format_help()  # every verb takes --debug (VerbParser)


def test_parser_lists_every_verb_in_order_and_nothing_else():
    assert list(_subcommands(build_parser())) == [verb for verb, _ in VERBS]
    assert len({module for _, module in VERBS}) == len(VERBS)
    on_disk = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "__main__", "common"}
    assert on_disk == {module for _, module in VERBS}, "a module under cli/ that is no verb (or a verb without one)"


def test_main_runs_the_verb_modules_run(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(verb_module("runs"), "run", lambda args: seen.append(args.dir) or 7)
    assert main(["runs", "somewhere"]) == 7 and seen == ["somewhere"]
    assert main([]) == 0 and "COMMAND" in capsys.readouterr().out  # no verb: the help


def test_no_verb_module_shadows_a_builtin_used_by_the_package():
    """Importing cli.<module> binds the module as an attribute of the cli package: a verb module named like a
    builtin (`list`, `eval`) replaces that builtin inside cli/__init__.py, so __init__ must not use it."""
    import builtins

    used = {node.id for node in ast.walk(ast.parse((PACKAGE / "cli" / "__init__.py").read_text()))
            if isinstance(node, ast.Name)}
    shadowed = {module for _, module in VERBS if hasattr(builtins, module)}
    assert not shadowed & used, shadowed & used
    assert dict(VERBS)["list"] == "listing"  # `list` is used everywhere: its module has another name


def _absolute_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every polymodal import in ``path``, relative and lazy (in-function) ones included."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_the_library_never_imports_a_recipe_or_the_cli():
    """Imports point down: only cli/ imports recipes/; recipes/ never imports cli/; nothing else imports either
    (pipeline.py is the compat shim of recipes.train, kept for user code)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).parts
        if rel[0] in ("cli", "__main__.py", "pipeline.py"):
            continue
        upward = ("polymodal.cli",) if rel[0] == "recipes" else ("polymodal.cli", "polymodal.recipes")
        for line, module in _absolute_imports(path):
            if any(module == top or module.startswith(top + ".") for top in upward):
                bad.append(f"{'/'.join(rel)}:{line} imports {module}")
    assert not bad, bad
    # the resolver sees relative lazy imports (cli/train.py imports ..recipes.train inside run())
    assert "polymodal.recipes.train" in {module for _, module in _absolute_imports(PACKAGE / "cli" / "train.py")}


@pytest.mark.parametrize("entry", [["-m", "polymodal"], ["-m", "polymodal.cli"]])
def test_module_entry_points_reach_the_same_parser(entry):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, *entry, "retrieve", "query", "--help"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--backend-option KEY=VALUE" in done.stdout and "usage: " in done.stdout
    bad = subprocess.run([sys.executable, *entry, "nosuch"], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice: 'nosuch'" in bad.stderr


def test_console_script_points_at_the_package_main():
    import tomllib

    scripts = tomllib.loads((PACKAGE.parent.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"polymodal": "polymodal.cli:main"} and cli.main is main
