"""The study report: best trial, test result, trials table, parameter importance and the optimisation history
plot, written as ``study.json``, ``report.md``, ``report.html`` (plot embedded) and ``history.png``.

Importance is ``optuna.importance.get_param_importances`` with optuna's default evaluator (PED-ANOVA in optuna
>= 4.x; fANOVA, Hutter et al. ICML 2014, before) over the completed trials; it needs at least two completed
trials, and is left out (with the reason) when optuna cannot compute it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def trials_table(study, optuna) -> list[dict[str, Any]]:
    """One row per trial: number, state, value (pruned: the last reported value), params, epochs, seconds."""
    rows = []
    for trial in study.trials:
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        rows.append({
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": value,
            "params": dict(trial.params),
            "epochs": trial.user_attrs.get("epochs_run", len(trial.intermediate_values)),
            "seconds": trial.user_attrs.get("seconds"),
            "run_dir": trial.user_attrs.get("run_dir"),
            "note": trial.user_attrs.get("error") or ("interrupted" if trial.user_attrs.get("interrupted") else ""),
        })
    return rows


def importance(study, optuna) -> tuple[dict[str, float] | None, str | None]:
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = dict(optuna.importance.get_param_importances(study))
        note = "; ".join(str(w.message) for w in caught) or None  # e.g. "importances will be equal": say so
        return values, note
    except Exception as err:  # too few / identical trials, a missing optional dependency: report why
        return None, f"{type(err).__name__}: {err}"


def history_png(summary: dict[str, Any]) -> bytes | None:
    """Each trial's value (pruned ones hollow, at their last reported value) and the best so far; None
    without matplotlib."""
    from ..evaluation.plots import _figure, _png, matplotlib_available

    if not matplotlib_available():
        return None
    rows = [r for r in summary["trials"] if r["value"] is not None]
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    done = [r for r in rows if r["state"] == "complete"]
    pruned = [r for r in rows if r["state"] == "pruned"]
    ax.scatter([r["number"] for r in done], [r["value"] for r in done], label="complete", color="tab:blue")
    if pruned:
        ax.scatter([r["number"] for r in pruned], [r["value"] for r in pruned], label="pruned (last reported)",
                   facecolors="none", edgecolors="tab:gray")
    better = max if summary["direction"] == "maximize" else min
    best_x, best_y, current = [], [], None
    for row in sorted(done, key=lambda r: r["number"]):
        current = row["value"] if current is None else better(current, row["value"])
        best_x.append(row["number"])
        best_y.append(current)
    last = max(r["number"] for r in summary["trials"])
    if best_x and best_x[-1] < last:  # the best-so-far line runs to the last trial
        best_x.append(last)
        best_y.append(best_y[-1])
    ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(summary["metric"])
    ax.set_title("optimisation history")
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    keys = sorted({k for r in summary["trials"] for k in r["params"]})
    header = ["trial", "state", summary["metric"], *keys, "epochs", "seconds", "note"]
    rows = [[r["number"], r["state"], r["value"], *[r["params"].get(k) for k in keys], r["epochs"], r["seconds"],
             r["note"]] for r in summary["trials"]]
    return header, rows


def render_markdown(summary: dict[str, Any], importances, importance_note, has_plot: bool) -> str:
    best = summary["best"]
    lines = [f"# Study: {summary['study_dir']}", "",
             f"Objective: {summary['direction']} {summary['metric']} (validation split); "
             f"{summary['trials_finished']} trials finished.", "",
             "## Best trial", "",
             f"Trial {best['number']}: {summary['metric']} = {best['value']:.4f}; model: `{best['model_dir']}`", ""]
    lines += [f"- `{k}` = {_value(v)}" for k, v in best["params"].items()]
    lines += ["", "## Test split (evaluated once, best trial only)", ""]
    test = summary.get("test")
    if test:
        lines += [f"- {k}: {_value(v)}" for k, v in test.items()]
    else:
        lines.append("not evaluated (no test split, or evaluate_test off)")
    lines += ["", "## Trials", ""]
    header, rows = _rows(summary)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_value(c) for c in row) + " |" for row in rows]
    lines += ["", "## Parameter importance", ""]
    if importances:
        lines += [f"- `{k}`: {v:.3f}" for k, v in importances.items()]
        lines += [f"\nNote: {importance_note}"] if importance_note else []
    else:
        lines.append(f"not available ({importance_note})")
    if has_plot:
        lines += ["", "## Optimisation history", "", "![optimisation history](history.png)"]
    return "\n".join(lines) + "\n"


def render_html(summary: dict[str, Any], importances, importance_note, png: bytes | None) -> str:
    import html

    from ..evaluation.html import embed_png, page, table

    best = summary["best"]
    body = [f"<h1>Study {html.escape(summary['study_dir'])}</h1>",
            f"<p>Objective: {summary['direction']} {html.escape(summary['metric'])} (validation split); "
            f"{summary['trials_finished']} trials finished.</p>",
            "<h2>Best trial</h2>",
            table(["parameter", "value"], [[k, v] for k, v in best["params"].items()]),
            f"<p>Trial {best['number']}: {html.escape(summary['metric'])} = {best['value']:.4f}; model "
            f"<code>{html.escape(best['model_dir'])}</code></p>",
            "<h2>Test split (evaluated once, best trial only)</h2>"]
    test = summary.get("test")
    body.append(table(["metric", "value"], [[k, v] for k, v in test.items()]) if test else "<p>not evaluated</p>")
    body.append("<h2>Trials</h2>")
    header, rows = _rows(summary)
    body.append(table(header, rows))
    body.append("<h2>Parameter importance</h2>")
    body.append(table(["parameter", "importance"], [[k, v] for k, v in importances.items()]) if importances
                else f"<p>not available ({html.escape(str(importance_note))})</p>")
    if png:
        body += ["<h2>Optimisation history</h2>", embed_png("optimisation history", png)]
    return page(f"polymodal study {summary['study_dir']}", "\n".join(body))


def write_report(summary: dict[str, Any], study, optuna, study_dir: Path) -> dict[str, Path]:
    from ..files import atomic_write_text

    importances, note = importance(study, optuna)
    summary["importance"] = importances
    png = history_png(summary)
    paths = {"json": study_dir / "study.json", "markdown": study_dir / "report.md", "html": study_dir / "report.html"}
    if png is not None:
        paths["plot"] = study_dir / "history.png"
        tmp = paths["plot"].with_suffix(".png.tmp")
        tmp.write_bytes(png)
        tmp.replace(paths["plot"])
    atomic_write_text(paths["markdown"], render_markdown(summary, importances, note, png is not None))
    atomic_write_text(paths["html"], render_html(summary, importances, note, png))
    atomic_write_text(paths["json"], json.dumps({**summary, "paths": {k: str(v) for k, v in paths.items()}},
                                                indent=2, default=str))
    return paths


def format_summary(summary: dict) -> str:
    """The lines `polymodal tune` (and the tune demo) print: one row per trial, the best trial, test, report."""
    best = summary["best"]
    lines = ["", f"{'trial':>5}  {'state':9}  {summary['metric']:>12}  params"]
    for row in summary["trials"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.4f}"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        lines.append(f"{row['number']:>5}  {row['state']:9}  {value:>12}  {params}")
    lines.append(f"best: trial {best['number']} {summary['metric']} {best['value']:.4f}; model {best['model_dir']}")
    test = summary.get("test")
    if test:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
        lines.append(f"test (evaluated once): {shown}")
    lines.append("report: " + ", ".join(summary["paths"].values()))
    return "\n".join(lines)
