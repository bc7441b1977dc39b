"""A self-contained HTML page for an evaluation report: tables + every plot embedded as a base64 PNG.

No external CSS, scripts or image files: the page can be mailed or attached to a paper's artifacts as is.
"""

from __future__ import annotations

import base64
import html
from typing import Any

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f8f8f8; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figcaption { font-size: .85em; color: #555; text-align: center; }
img { max-width: 100%; border: 1px solid #eee; }
.meta td { text-align: left; }
"""


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embed_png(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(title)
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def render_html(report: dict[str, Any]) -> str:
    """The report (as written to report.json) → one HTML document with embedded plots."""
    from .classification import format_report_table
    from .plots import render_plots
    from .report import _instance_definition, headline_rows, interval_notes

    meta = report["meta"]
    parts = [f"<h1>polymodal evaluation report ({html.escape(report['kind'])})</h1>"]
    parts.append(table(["", ""], [
        ["model", meta["model_dir"]], ["architecture", meta["architecture"]], ["task", meta["task"]],
        ["modalities", ", ".join(f"{k} ({v})" for k, v in meta["modalities"].items())],
        ["data", f"{meta['data']['source']} / {meta['data']['split']} ({meta['data']['num_samples']} samples)"],
        ["data fingerprint", meta["data"]["fingerprint"]], ["config hash", meta["config_hash"]],
        ["seed", meta["seed"]], ["training seed", meta["train_seed"]],
        ["versions", f"polymodal {meta['polymodal_version']}, torch {meta['torch_version']}, "
                     f"numpy {meta['numpy_version']}, python {meta['python_version']}"],
        ["device", f"{meta['device']}, {meta['torch_threads']} threads"], ["created", meta["created_utc"]],
        ["schema version", report["schema_version"]],
    ], "meta"))
    parts.append("<h2>Quality</h2>")
    parts.append(table(["metric", "value", "CI low", "CI high"], headline_rows(report)))
    parts += [f"<p class=\"note\">{html.escape(note)}</p>" for note in interval_notes(report)]
    quality = report.get("quality")
    if quality:
        parts.append(f"<pre>{html.escape(format_report_table(quality['classification_report']))}</pre>")
    retrieval = report.get("retrieval")
    if retrieval:
        for pair, metrics in retrieval["pairs"].items():
            parts.append(f"<h3>Retrieval {html.escape(pair)}</h3>")
            parts.append(f"<p>Instance level: {html.escape(_instance_definition(retrieval))}.</p>")
            parts.append(table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
    eff = report.get("efficiency")
    if eff:
        mem = eff["memory"]
        parts.append("<h2>Efficiency</h2>")
        parts.append(table(["measure", "value"], [
            ["parameters (total / trainable)", f"{eff['params']['total']:,} / {eff['params']['trainable']:,}"],
            ["FLOPs / sample", eff["flops_per_sample"]],
            ["latency batch 1, p50 / p95 (ms)", f"{eff['latency_ms']['p50']:.3f} / {eff['latency_ms']['p95']:.3f}"],
            [f"throughput batch {eff['throughput_batch_size']} (samples/s)", eff["throughput_samples_per_s"]],
            [f"peak memory MB ({mem['source']})", mem.get("peak_allocated_mb") or mem.get("peak_rss_mb")],
            ["size on disk (MB)", (eff.get("disk") or {}).get("mb")],
        ]))
    rob = report.get("robustness")
    if rob:
        parts.append("<h2>Robustness</h2>")
        if rob.get("removed"):
            parts.append(table(["modality removed", rob["metric"], "drop", "relative"],
                               [[n, r["value"], r["drop"], r["relative"]] for n, r in rob["removed"].items()]))
            parts.append(table(["modalities present", rob["metric"], "relative"],
                               [["+".join(s["modalities"]), s["value"], s["relative"]] for s in rob["subsets"]]))
            parts.append(table(["modality", "Shapley", "share", "drop when removed", "alone"],
                               [[n, c["shapley"], c["share"], c["drop_when_removed"], c["alone"]]
                                for n, c in rob["contribution"].items()]))
        if rob.get("corruptions"):
            parts.append(table(["corruption", "modality", "values by severity", "relative robustness"],
                               [[c["corruption"], "+".join(c["modalities"]),
                                 ", ".join(f"{s:g}: {v:.3f}" for s, v in zip(c["severities"], c["values"])),
                                 c["relative_robustness"]] for c in rob["corruptions"]]))
    plots = render_plots(report)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [embed_png(title, png) for title, png in plots.items()]
    else:
        parts.append("<p>matplotlib is not installed: no plots (pip install polymodal[plots]).</p>")
    return page(f"polymodal report: {meta['model_dir']}", "\n".join(parts))


__all__ = ["render_html", "table", "embed_png", "page"]
