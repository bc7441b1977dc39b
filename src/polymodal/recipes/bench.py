"""``polymodal bench SUITE.yaml``: train + evaluate a grid and write a leaderboard (Markdown, CSV, HTML).

A suite file (see ``polymodal/data/builtin/bench_spoken_digits.yaml``)::

    name: spoken-digits
    base:                      # a Config (model / data / train / finetune) shared by every cell
      model: {modalities: {image: {...}, audio: {...}}, fusion: {dim: 64}}
      data: {name: spoken-digits}
      train: {epochs: 6}
    grid:
      fusion: [concat, gated]                       # model.fusion.name
      encoders:                                     # named encoder sets: modality → ModalityConfig overrides
        cnn: {image: {encoder: image_cnn}, audio: {encoder: audio_cnn}}
      finetune: [full, linear_probe]                # finetune.default
      seeds: [0, 1, 2]                              # train.seed
    quick:                     # applied with --quick: a smaller grid (names/values) and config overrides
      grid: {fusion: [concat], encoders: [cnn], finetune: [full], seeds: [0, 1]}
      data: {limit: 300}
      train: {epochs: 2}
    efficiency: {batch_sizes: [1, 32], repeats: 10}

Every (fusion, encoders, finetune) configuration is trained once per seed with ``recipes.train.train`` on loaders
prepared once (the train loader's shuffle generator is reseeded per cell, so a cell's result does not depend
on the cells before it). The leaderboard has one row per configuration: test accuracy and macro-F1 as mean ±
std over seeds (sample std, ddof=1), and the efficiency columns measured on the seed-0 model.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import load_yaml

BUILTIN_SUITES = {"spoken-digits": "bench_spoken_digits.yaml"}
SUITE_KEYS = {"name", "description", "base", "grid", "quick", "efficiency"}
GRID_KEYS = {"fusion", "encoders", "finetune", "seeds"}
COLUMNS = [
    "rank", "fusion", "encoders", "finetune", "seeds", "accuracy_mean", "accuracy_std", "macro_f1_mean",
    "macro_f1_std", "params_total", "params_trainable", "flops_per_sample", "latency_p50_ms", "latency_p95_ms",
    "throughput_samples_per_s", "size_mb", "train_seconds_mean",
]


class SuiteError(ValueError):
    """A bench suite file that cannot be used; the message names the file and the key."""


def builtin_suite_path(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "builtin" / BUILTIN_SUITES[name]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins; lists are replaced, not concatenated)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_suite(path: str | Path, quick: bool = False) -> dict[str, Any]:
    """Read and validate a suite (a built-in name such as ``spoken-digits`` works too); apply ``quick``."""
    source = Path(path)
    if not source.exists() and str(path) in BUILTIN_SUITES:
        source = builtin_suite_path(str(path))
    if not source.exists():
        raise FileNotFoundError(f"bench suite {str(path)!r} not found (built-in suites: {', '.join(BUILTIN_SUITES)})")
    try:
        suite = load_yaml(source.read_text()) or {}  # YAML 1.2 scalars, as for configs: 5e-5 is a number
    except yaml.YAMLError as err:
        raise SuiteError(f"{source}: not valid YAML: {err}") from err
    if not isinstance(suite, dict):
        raise SuiteError(f"{source}: a suite is a mapping with keys {sorted(SUITE_KEYS)}")
    unknown = set(suite) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{source}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(SUITE_KEYS)}")
    grid = dict(suite.get("grid") or {})
    if quick and suite.get("quick"):
        quick_section = dict(suite["quick"])
        quick_grid = quick_section.pop("grid", {}) or {}
        for key, value in quick_grid.items():
            if key == "encoders" and isinstance(value, list):  # names picked from the full grid's encoder sets
                sets = grid.get("encoders") or {}
                missing = [v for v in value if v not in sets]
                if missing:
                    raise SuiteError(f"{source}: quick.grid.encoders names {missing} not in grid.encoders {list(sets)}")
                grid["encoders"] = {v: sets[v] for v in value}
            else:
                grid[key] = value
        suite["base"] = _merge(suite.get("base") or {}, quick_section)
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise SuiteError(f"{source}: unknown grid key(s) {sorted(unknown)}; valid: {sorted(GRID_KEYS)}")
    grid.setdefault("fusion", [((suite.get("base") or {}).get("model") or {}).get("fusion", {}).get("name", "concat")])
    grid.setdefault("encoders", {"default": {}})
    grid.setdefault("finetune", ["full"])
    grid.setdefault("seeds", [0])
    for key in ("fusion", "finetune", "seeds"):
        if not isinstance(grid[key], list) or not grid[key]:
            raise SuiteError(f"{source}: grid.{key} must be a non-empty list, got {grid[key]!r}")
    if not isinstance(grid["encoders"], dict) or not grid["encoders"]:
        raise SuiteError(f"{source}: grid.encoders must map set names to {{modality: overrides}}")
    suite["grid"] = grid
    suite["source"] = str(source)
    suite["quick_mode"] = quick
    return suite


def cell_config(suite: dict[str, Any], fusion: str, encoders: str, finetune: str, seed: int, run_dir: Path):
    """The Config of one grid cell (ConfigError names the offending key)."""
    from ..config import Config, ConfigError, from_dict

    data = copy.deepcopy(suite.get("base") or {})
    model = data.setdefault("model", {})
    model.setdefault("fusion", {})["name"] = fusion
    modalities = model.setdefault("modalities", {})
    for name, override in (suite["grid"]["encoders"][encoders] or {}).items():
        if name not in modalities:
            raise SuiteError(f"{suite['source']}: grid.encoders.{encoders}.{name}: base.model.modalities has no "
                             f"modality {name!r} (it has {list(modalities)})")
        modalities[name] = _merge(modalities[name], override)
    data["finetune"] = _merge(data.get("finetune") or {}, {"default": finetune})
    data["train"] = _merge(data.get("train") or {}, {"seed": int(seed), "out_dir": str(run_dir), "progress": False})
    try:
        return from_dict(Config, data)
    except ConfigError as err:
        raise SuiteError(f"{suite['source']}, cell fusion={fusion} encoders={encoders} finetune={finetune}: {err}") from err


def _efficiency(model_dir: str, loader, settings: dict[str, Any]) -> dict[str, Any]:
    from ..evaluation.efficiency import measure_efficiency
    from ..models import MultimodalModel

    model = MultimodalModel.from_pretrained(model_dir)
    batch = next(iter(loader))
    return measure_efficiency(model, batch, tuple(settings.get("batch_sizes", (1, 32))),
                              warmup=int(settings.get("warmup", 2)), repeats=int(settings.get("repeats", 10)))


def run_bench(suite_path: str | Path, out: str | Path, quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train and evaluate every cell; write runs.csv, leaderboard.{md,csv,html} and bench.json to ``out``."""
    from ..files import atomic_write_text
    from .train import prepare, train

    started = time.perf_counter()
    suite = load_suite(suite_path, quick)
    grid = suite["grid"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = list(itertools.product(grid["fusion"], list(grid["encoders"]), grid["finetune"], grid["seeds"]))
    first = cell_config(suite, *cells[0], out / "runs" / "prepare")
    prepared = prepare(first)
    prep_seconds = time.perf_counter() - started
    if verbose:
        print(f"polymodal bench {suite.get('name', suite['source'])}{' (quick)' if quick else ''}: {len(cells)} runs "
              f"({len(grid['fusion'])} fusions × {len(grid['encoders'])} encoder sets × {len(grid['finetune'])} "
              f"fine-tuning × {len(grid['seeds'])} seeds); data ready in {prep_seconds:.1f}s")
    runs, efficiency = [], {}
    for fusion, encoders, finetune, seed in cells:
        name = f"{fusion}__{encoders}__{finetune}__seed{seed}"
        config = cell_config(suite, fusion, encoders, finetune, seed, out / "runs" / name)
        generator = getattr(prepared[1]["train"], "generator", None)
        if generator is not None:
            generator.manual_seed(int(seed))  # same shuffle order for a seed whatever ran before
        cell_started = time.perf_counter()
        summary = train(config, prepared=prepared, verbose=False)
        test = summary.get("test") or {}
        row = {
            "run": name, "fusion": fusion, "encoders": encoders, "finetune": finetune, "seed": int(seed),
            "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
            "params_total": summary["parameters"]["total"], "params_trainable": summary["parameters"]["trainable"],
            "best_epoch": (summary.get("fit") or {}).get("best_epoch"),
            "train_seconds": summary["train_seconds"], "wall_seconds": time.perf_counter() - cell_started,
            "run_dir": summary["run_dir"],
        }
        key = (fusion, encoders, finetune)
        if key not in efficiency and suite.get("efficiency", {}) is not False:
            efficiency[key] = _efficiency(summary["model_dir"], prepared[1]["test"], suite.get("efficiency") or {})
        runs.append(row)
        if verbose:
            print(f"  {name:48s} acc {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
                  f"{row['wall_seconds']:.1f}s")
    leaderboard = aggregate(runs, efficiency)
    wall = time.perf_counter() - started
    result = {
        "suite": suite.get("name"), "source": suite["source"], "quick": quick, "cells": len(cells),
        "wall_seconds": wall, "prepare_seconds": prep_seconds, "leaderboard": leaderboard, "runs": runs,
        "efficiency": {"|".join(k): v for k, v in efficiency.items()},
        "base": suite.get("base"), "grid": grid,
    }
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "runs.csv", to_csv(runs, list(runs[0])))
    atomic_write_text(out / "leaderboard.csv", to_csv(leaderboard, COLUMNS))
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(result))
    atomic_write_text(out / "leaderboard.html", leaderboard_html(result))
    if verbose:
        print()
        print(markdown_table(leaderboard))
        print(f"\nwall time {wall:.0f}s; leaderboard in {out}/leaderboard.md (.csv, .html)")
    return result


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: list[dict[str, Any]], efficiency: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (fusion, encoders, finetune): mean ± std over seeds + efficiency; sorted by accuracy."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in runs:
        groups.setdefault((row["fusion"], row["encoders"], row["finetune"]), []).append(row)
    board = []
    for key, rows in groups.items():
        acc_mean, acc_std = _mean_std([r["accuracy"] for r in rows])
        f1_mean, f1_std = _mean_std([r["macro_f1"] for r in rows])
        eff = efficiency.get(key) or {}
        board.append({
            "fusion": key[0], "encoders": key[1], "finetune": key[2], "seeds": len(rows),
            "accuracy_mean": acc_mean, "accuracy_std": acc_std, "macro_f1_mean": f1_mean, "macro_f1_std": f1_std,
            "params_total": rows[0]["params_total"], "params_trainable": rows[0]["params_trainable"],
            "flops_per_sample": eff.get("flops_per_sample"),
            "latency_p50_ms": (eff.get("latency_ms") or {}).get("p50"),
            "latency_p95_ms": (eff.get("latency_ms") or {}).get("p95"),
            "throughput_samples_per_s": eff.get("throughput_samples_per_s"),
            "size_mb": (eff.get("disk") or {}).get("mb"),
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rows),
        })
    board.sort(key=lambda r: (-(r["accuracy_mean"] or 0.0), -(r["macro_f1_mean"] or 0.0)))
    for rank, row in enumerate(board, 1):
        row["rank"] = rank
    return [{c: row.get(c) for c in COLUMNS} for row in board]


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _pm(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _display_rows(board: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["#", "fusion", "encoders", "fine-tuning", "seeds", "test accuracy", "macro-F1", "params",
              "trainable", "MFLOPs/sample", "latency p50 (ms)", "throughput (samples/s)", "size (MB)",
              "train time (s)"]
    rows = [[str(r["rank"]), r["fusion"], r["encoders"], r["finetune"], str(r["seeds"]),
             _pm(r["accuracy_mean"], r["accuracy_std"]), _pm(r["macro_f1_mean"], r["macro_f1_std"]),
             _num(r["params_total"], ","), _num(r["params_trainable"], ","),
             _num(None if r["flops_per_sample"] is None else r["flops_per_sample"] / 1e6, ".2f"),
             _num(r["latency_p50_ms"], ".2f"), _num(r["throughput_samples_per_s"], ",.0f"),
             _num(r["size_mb"], ".2f"), _num(r["train_seconds_mean"], ".1f")] for r in board]
    return header, rows


def markdown_table(board: list[dict[str, Any]]) -> str:
    header, rows = _display_rows(board)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * (len(header) - 5)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _setup_lines(result: dict[str, Any]) -> list[str]:
    import torch

    from .. import __version__

    base = result.get("base") or {}
    train_cfg, data_cfg = base.get("train") or {}, base.get("data") or {}
    command = f"polymodal bench {result['source'] if result['suite'] is None else result['suite']}" + (
        " --quick" if result["quick"] else "")
    return [
        f"Command: `{command}` (suite file `{Path(result['source']).name}`)",
        f"Data: {data_cfg.get('name') or 'manifests'}"
        + (f", {data_cfg['limit']} rows per split (data.limit)" if data_cfg.get("limit") else ", full splits")
        + f"; {train_cfg.get('epochs', '?')} epochs per run; test split metrics.",
        f"{result['cells']} runs in {result['wall_seconds']:.0f} s wall time "
        f"(inputs are processed once, during the first run, and shared) on CPU with {torch.get_num_threads()} threads; "
        f"polymodal {__version__}, torch {torch.__version__}.",
        "Accuracy / macro-F1: mean ± sample std over seeds. Efficiency (FLOPs from torch.utils.flop_counter, "
        "latency at batch 1, throughput at the largest batch size) measured on the seed-0 model of each row.",
    ]


def leaderboard_markdown(result: dict[str, Any]) -> str:
    title = f"# polymodal bench: {result['suite'] or Path(result['source']).stem}" + (" (quick)" if result["quick"] else "")
    return "\n\n".join([title, "\n".join(f"- {line}" for line in _setup_lines(result)),
                        markdown_table(result["leaderboard"])]) + "\n"


def leaderboard_html(result: dict[str, Any]) -> str:
    from ..evaluation.html import page, table

    header, rows = _display_rows(result["leaderboard"])
    body = [f"<h1>polymodal bench: {result['suite'] or ''}{' (quick)' if result['quick'] else ''}</h1>",
            "<ul>" + "".join(f"<li>{line.replace('`', '')}</li>" for line in _setup_lines(result)) + "</ul>",
            table(header, rows)]
    run_header = ["run", "seed", "accuracy", "macro_f1", "train_seconds"]
    body += ["<h2>Runs</h2>", table(run_header, [[r[c] for c in run_header] for r in result["runs"]])]
    return page(f"polymodal bench {result['suite'] or ''}", "\n".join(body))


__all__ = ["run_bench", "load_suite", "cell_config", "aggregate", "markdown_table", "leaderboard_markdown",
           "leaderboard_html", "SuiteError", "BUILTIN_SUITES"]
