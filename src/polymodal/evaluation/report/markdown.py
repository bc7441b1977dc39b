"""The report as Markdown (report.md): provenance, headline with CIs, the kind's tables, efficiency,
robustness and training curves. Works on the report as written to report.json (plain JSON types)."""

from __future__ import annotations

from typing import Any

from .kinds import kind_for_report
from .summary import headline_rows, headline_section, interval_notes


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: None → "n/a", floats to ``digits`` decimals, ints with thousands separators."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table with cells formatted by :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _provenance(report: dict[str, Any]) -> list[str]:
    meta = report["meta"]
    return [
        f"# polymodal evaluation report ({report['kind']})",
        "",
        f"- model: `{meta['model_dir']}` ({meta['architecture']}, task {meta['task']}, "
        f"modalities {', '.join(f'{k} ({v})' for k, v in meta['modalities'].items())})",
        f"- data: {meta['data']['source']} split `{meta['data']['split']}`, {meta['data']['num_samples']} samples, "
        f"fingerprint `{meta['data']['fingerprint'][:16]}`",
        f"- config hash `{meta['config_hash'][:16]}`, seed {meta['seed']} (training seed {meta['train_seed']})",
        f"- polymodal {meta['polymodal_version']}, torch {meta['torch_version']}, python {meta['python_version']}, "
        f"{meta['device']} with {meta['torch_threads']} threads; {meta['created_utc']}",
        f"- schema version {report['schema_version']}",
        "",
    ]


def _headline(report: dict[str, Any]) -> list[str]:
    conf = headline_section(report).get("bootstrap") or {}
    ci_title = f"{int(round(100 * conf.get('confidence', 0.95)))}% CI"
    lines = ["## Quality", "", table(["metric", "value", f"{ci_title} low", f"{ci_title} high"],
                                     headline_rows(report)), ""]
    notes = interval_notes(report)
    return lines + [f"- {note}" for note in notes] + ([""] if notes else [])


def _efficiency(eff: dict[str, Any]) -> list[str]:
    mem = eff["memory"]
    peak = mem.get("peak_allocated_mb") or mem.get("peak_rss_mb")
    return ["## Efficiency", "", table(["measure", "value"], [
        ["parameters (total)", eff["params"]["total"]],
        ["parameters (trainable)", eff["params"]["trainable"]],
        ["FLOPs / sample", eff["flops_per_sample"]],
        ["latency p50, batch 1 (ms)", eff["latency_ms"]["p50"]],
        ["latency p95, batch 1 (ms)", eff["latency_ms"]["p95"]],
        [f"throughput, batch {eff['throughput_batch_size']} (samples/s)", eff["throughput_samples_per_s"]],
        [f"peak memory (MB, {mem['source']})", peak],
        ["size on disk (MB)", (eff.get("disk") or {}).get("mb")],
        ["torch threads", eff["torch_threads"]],
        ["device", eff["device"]],
    ]), ""]


def _robustness(rob: dict[str, Any]) -> list[str]:
    lines = ["## Robustness", ""]
    if rob.get("removed"):
        lines += [f"Metric: {rob['metric']}; all modalities: {fmt(rob['full'])}.", ""]
        lines += [table(["modality removed", rob["metric"], "drop", "relative"],
                        [[n, r["value"], r["drop"], r["relative"]] for n, r in rob["removed"].items()]), ""]
        lines += [table(["modalities present", rob["metric"], "relative"],
                        [["+".join(s["modalities"]), s["value"], s["relative"]] for s in rob["subsets"]]), ""]
        lines += ["Modality contribution (Shapley values of the metric over the subset lattice):", "",
                  table(["modality", "Shapley", "share", "drop when removed", "alone"],
                        [[n, c["shapley"], c["share"], c["drop_when_removed"], c["alone"]]
                         for n, c in rob["contribution"].items()]), ""]
    if rob.get("corruptions"):
        lines += [table(["corruption", "modality", "severities", "values", "relative robustness"],
                        [[c["corruption"], "+".join(c["modalities"]), ", ".join(fmt(s, 0) for s in c["severities"]),
                          ", ".join(fmt(v, 3) for v in c["values"]), c["relative_robustness"]]
                         for c in rob["corruptions"]]), ""]
    for item in rob.get("skipped") or []:
        lines.append(f"- skipped {item['corruption']} on {item['modality']}: {item['reason']}")
    return lines


def _training(training: dict[str, Any]) -> list[str]:
    return ["", "## Training", "", f"Curves from `{training['source']}`:", "",
            table(["series", "points", "last"], [[k, len(v["value"]), v["value"][-1]]
                                                 for k, v in training["series"].items()]), ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: provenance, quality with CIs, the kind's tables, efficiency, robustness, training."""
    lines = _provenance(report) + _headline(report)
    kind = kind_for_report(report)
    if kind is not None:
        lines += kind.markdown(report)
    if report.get("efficiency"):
        lines += _efficiency(report["efficiency"])
    if report.get("robustness"):
        lines += _robustness(report["robustness"])
    if report.get("training"):
        lines += _training(report["training"])
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["fmt", "render_markdown", "table"]
