"""A self-contained HTML page for an evaluation report: tables + every plot embedded as a base64 PNG.

No external CSS, scripts or image files: the page can be mailed or attached to a paper's artifacts as is.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from .kinds import kind_for_report
from .summary import headline_rows, interval_notes

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
    """An HTML table; cells: None → "n/a", floats to 4 decimals, ints with thousands separators, text escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embed_png(title: str, png: bytes) -> str:
    """A <figure> with ``png`` inlined as a data URI and ``title`` as alt text and caption."""
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(title)
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


def page(title: str, body: str) -> str:
    """A complete HTML5 document with the inline stylesheet."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _provenance(report: dict[str, Any]) -> str:
    meta = report["meta"]
    return table(["", ""], [
        ["model", meta["model_dir"]], ["architecture", meta["architecture"]], ["task", meta["task"]],
        ["modalities", ", ".join(f"{k} ({v})" for k, v in meta["modalities"].items())],
        ["data", f"{meta['data']['source']} / {meta['data']['split']} ({meta['data']['num_samples']} samples)"],
        ["data fingerprint", meta["data"]["fingerprint"]], ["config hash", meta["config_hash"]],
        ["seed", meta["seed"]], ["training seed", meta["train_seed"]],
        ["versions", f"polymodal {meta['polymodal_version']}, torch {meta['torch_version']}, "
                     f"numpy {meta['numpy_version']}, python {meta['python_version']}"],
        ["device", f"{meta['device']}, {meta['torch_threads']} threads"], ["created", meta["created_utc"]],
        ["schema version", report["schema_version"]],
    ], "meta")


def _efficiency(eff: dict[str, Any]) -> list[str]:
    mem = eff["memory"]
    return ["<h2>Efficiency</h2>", table(["measure", "value"], [
        ["parameters (total / trainable)", f"{eff['params']['total']:,} / {eff['params']['trainable']:,}"],
        ["FLOPs / sample", eff["flops_per_sample"]],
        ["latency batch 1, p50 / p95 (ms)", f"{eff['latency_ms']['p50']:.3f} / {eff['latency_ms']['p95']:.3f}"],
        [f"throughput batch {eff['throughput_batch_size']} (samples/s)", eff["throughput_samples_per_s"]],
        [f"peak memory MB ({mem['source']})", mem.get("peak_allocated_mb") or mem.get("peak_rss_mb")],
        ["size on disk (MB)", (eff.get("disk") or {}).get("mb")],
    ])]


def _robustness(rob: dict[str, Any]) -> list[str]:
    parts = ["<h2>Robustness</h2>"]
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
    return parts


def render_html(report: dict[str, Any]) -> str:
    """The report (as written to report.json) → one HTML document with embedded plots."""
    from ..plots import render_plots

    meta = report["meta"]
    parts = [f"<h1>polymodal evaluation report ({html.escape(report['kind'])})</h1>", _provenance(report)]
    parts.append("<h2>Quality</h2>")
    parts.append(table(["metric", "value", "CI low", "CI high"], headline_rows(report)))
    parts += [f"<p class=\"note\">{html.escape(note)}</p>" for note in interval_notes(report)]
    kind = kind_for_report(report)
    if kind is not None:
        parts += kind.html(report)
    if report.get("efficiency"):
        parts += _efficiency(report["efficiency"])
    if report.get("robustness"):
        parts += _robustness(report["robustness"])
    plots = render_plots(report)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [embed_png(title, png) for title, png in plots.items()]
    else:
        parts.append("<p>matplotlib is not installed: no plots (pip install polymodal[plots]).</p>")
    return page(f"polymodal report: {meta['model_dir']}", "\n".join(parts))


__all__ = ["embed_png", "page", "render_html", "table"]
