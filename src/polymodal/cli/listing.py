"""``polymodal list``: the registered components, fine-tuning strategies and presets (module named ``listing`` so
that it never shadows the builtin ``list`` in the cli package)."""

from __future__ import annotations

import argparse

KINDS = ["tasks", "encoders", "fusions", "connectors", "heads", "objectives", "datasets", "finetune", "presets"]


def add_parser(sub) -> None:
    lst = sub.add_parser("list", help="list registered tasks, encoders, fusions, connectors, heads, objectives, data "
                         "sets, fine-tuning strategies and presets")
    lst.add_argument("kind", nargs="?", choices=KINDS)


def run(args: argparse.Namespace) -> int:
    from ..config.finetune import STRATEGY_DESCRIPTIONS
    from ..presets import describe_presets
    from ..registry import CONNECTORS, DATASETS, ENCODERS, FUSIONS, HEADS, OBJECTIVES, TASKS

    # each registry imports the package that fills it on first read (registry.py): no load_all needed
    registries = {"tasks": TASKS, "encoders": ENCODERS, "fusions": FUSIONS, "connectors": CONNECTORS, "heads": HEADS,
                  "objectives": OBJECTIVES, "datasets": DATASETS}
    for kind, registry in registries.items():
        if args.kind and args.kind != kind:
            continue
        print(f"{kind}:" if kind != "tasks" else "tasks (the config's top-level `task:`):")
        for name, description in registry.describe().items():
            print(f"  {name:22s} {description}")
    if args.kind in (None, "finetune"):
        print("finetune (--finetune STRATEGY, finetune.default / finetune.encoders.<modality>):")
        for name, description in STRATEGY_DESCRIPTIONS.items():
            print(f"  {name:22s} {description}")
    if args.kind in (None, "presets"):
        print("presets (YAML files under polymodal/presets/<kind>/; CLIP: encoder option preset=NAME):")
        rows = [(f"{kind}/{name}", text) for kind, presets in describe_presets().items() for name, text in presets.items()]
        width = max([22, *(len(label) for label, _ in rows)])
        for label, description in rows:
            print(f"  {label:{width}s} {description}")
    return 0
