"""The generation kind (captioning, vqa, transcription, chat): the task's metrics with their bootstrap CIs, VQA's
per-question-type results next to the question-only (blind) baseline, generation efficiency (tokens/s, time to
first token, peak CUDA memory) and example predictions; per-row predictions for predictions.json.

Every number comes from ``tasks.generation_eval.evaluate_generation`` — the function that writes a run's test
metrics after training — called with the run's ``generate`` section (decoding options, ``eval_samples``, METEOR),
the report's bootstrap resamples and seed. So ``metrics.json`` of ``polymodal eval`` is that function's result and
equals the run's own test metrics on the same split and settings.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from ..html import table as html_table
from ..kinds import REPORT_KINDS, ReportKind, SectionInput, degenerate_notes
from ..markdown import table as md_table

# Headline order over the four tasks (a report shows the ones its task has).
HEADLINE = ("vqa_accuracy", "exact_match", "wer", "cer", "cider_d", "bleu_1", "bleu_2", "bleu_3", "bleu_4",
            "rouge_l_coco", "meteor")
CONFIDENCE = 0.95  # generation_eval's percentile bootstrap (metrics.generation.MetricResult.bootstrap_ci)


def generate_section(data: SectionInput) -> Any:
    """The ``generate`` section to evaluate with: the evaluated RunConfig's (the run's config.yaml, else the
    decoding defaults saved with the model), bootstrap resamples from the report options."""
    from ....config import from_dict
    from ....config.generation import GenerateConfig

    config = data.context.get("config")
    section = getattr(config, "sections", {}).get("generate") if config is not None else None
    if section is None:
        section = from_dict(GenerateConfig, dict(getattr(data.model, "generation_defaults", None) or {}), "generate")
    return dataclasses.replace(section, bootstrap=data.options.bootstrap)


def train_rows(task: str, data: SectionInput) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(rows of the training split, None) for VQA's blind baseline, or (None, why not). The evaluated config's
    train split, else the one of the run's saved config (a ``--data`` manifest evaluation of a run)."""
    if task != "vqa":
        return None, None
    from ....tasks.generation import load_rows
    from ..loading import eval_config_for

    config, saved = data.context.get("config"), data.context.get("run_config") or {}
    try:
        loaded = load_rows(config, "train") if config is not None else None
        if loaded is None and saved.get("data"):
            loaded = load_rows(eval_config_for(data.model, None, "train", saved), "train")
    except (ValueError, OSError) as err:  # DataError / ConfigError are ValueErrors: a moved manifest, ...
        return None, f"the training rows could not be read ({err})"
    if loaded is None:
        return None, "no training data recorded (a model directory without its run): no blind baseline"
    return loaded[0], None


def _intervals(metrics: dict[str, dict[str, float]], resamples: int, seed: int) -> dict[str, Any]:
    intervals = {}
    for name, entry in metrics.items():
        if "ci_low" not in entry:
            continue
        interval: dict[str, Any] = {"point": entry["value"], "low": entry["ci_low"], "high": entry["ci_high"]}
        if entry["ci_high"] - entry["ci_low"] <= 0:
            interval.update(degenerate=True, note="degenerate: zero width (every resample gives the same value)")
        intervals[name] = interval
    return {"n_resamples": resamples, "confidence": CONFIDENCE, "seed": seed,
            "method": "percentile (resampling rows)", "intervals": intervals}


def generation_quality(data: SectionInput) -> dict[str, Any]:
    """{"generation": section, "predictions": per-row predictions} (see module doc)."""
    from ....tasks import task_of
    from ....tasks.generation_eval import evaluate_generation

    task = task_of(data.model).name
    generate = generate_section(data)
    rows, why_not = train_rows(task, data)
    result = evaluate_generation(task, data.model, data.batches, device=data.options.device, generate=generate,
                                 train_rows=rows, efficiency=data.options.efficiency, seed=data.options.seed,
                                 keep_rows=True)
    decoded = result.pop("rows")
    if why_not:
        result["blind_baseline_note"] = why_not
    section = {
        "task": task, "n": result["n"],
        "metrics": {name: entry["value"] for name, entry in result["metrics"].items()},
        "bootstrap": _intervals(result["metrics"], generate.bootstrap, data.options.seed),
        "source": "polymodal.tasks.generation_eval.evaluate_generation",
        "evaluate_generation": result,
    }
    predictions = {"task": task, "ids": [str(r["id"]) for r in decoded],
                   "predictions": [r["prediction"] for r in decoded],
                   "references": [r["references"] for r in decoded]}
    for key in ("question", "question_type"):
        if all(key in r for r in decoded):
            predictions[key + "s"] = [r[key] for r in decoded]
    return {"generation": section, "predictions": predictions}


def _per_type_rows(result: dict[str, Any]) -> list[list[Any]]:
    blind = result.get("blind_baseline") or {}
    by_type = (blind.get("question_type") or {}).get("per_type") or {}
    by_question = (blind.get("question") or {}).get("per_type") or {}
    chance = (blind.get("question_type") or {}).get("chance") or {}
    return [[name, entry["n"], entry["exact_match"], by_type.get(name), by_question.get(name), chance.get(name)]
            for name, entry in (result.get("per_type") or {}).items()]


def _blind_rows(result: dict[str, Any]) -> list[list[Any]]:
    metrics = result.get("metrics") or {}
    model = (metrics.get("exact_match") or {}).get("value")
    blind = result.get("blind_baseline") or {}
    return [["model (exact match)", model]] + [[f"blind baseline, majority answer per {by.replace('_', ' ')}",
                                                entry.get("accuracy")] for by, entry in blind.items()]


def _efficiency_rows(eff: dict[str, Any]) -> list[list[Any]]:
    rows = [["generated tokens", int(eff.get("generated_tokens") or 0)], ["tokens / s (batched, KV cache)",
                                                                 eff.get("tokens_per_second")],
            ["time to first token (ms, one prompt)", eff.get("time_to_first_token_ms")]]
    if eff.get("peak_memory_mb") is not None:
        rows.append(["peak CUDA memory (MB)", eff["peak_memory_mb"]])
    return rows


def _example_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [[e.get("id"), e.get("question", ""), e.get("prediction"), " | ".join(e.get("references") or [])]
            for e in result.get("examples") or []]


@REPORT_KINDS.register("generation", "text generation (captioning, vqa, transcription, chat): task metrics with "
                       "CIs, blind baseline, tokens/s, examples")
class GenerationReport(ReportKind):
    """Models of the generation tasks (``Task.report_kind == "generation"``)."""

    name = "generation"
    section = "generation"
    headline = HEADLINE

    def quality(self, data: SectionInput) -> dict[str, Any]:
        return generation_quality(data)

    def efficiency(self, data: SectionInput) -> dict[str, Any] | None:
        return None  # FLOPs of one forward pass do not describe decoding: the section holds tokens/s and TTFT

    def metrics(self, report: dict[str, Any]) -> dict[str, Any] | None:
        return (report.get(self.section) or {}).get("evaluate_generation")

    def interval_notes(self, report: dict[str, Any]) -> list[str]:
        section = report.get(self.section) or {}
        conf = section.get("bootstrap") or {}
        notes = []
        if conf.get("n_resamples"):
            notes.append(f"CIs: {int(round(100 * conf['confidence']))}% percentile bootstrap over the "
                         f"{section.get('n')} rows, {conf['n_resamples']} resamples, seed {conf['seed']}.")
        return notes + degenerate_notes(section)

    def console(self, report: dict[str, Any]) -> list[str]:
        result = (report.get(self.section) or {}).get("evaluate_generation") or {}
        lines = []
        for row in _per_type_rows(result):
            name, n, value, blind, *_ = row
            blind_text = "" if blind is None else f" (blind baseline {blind:.4f})"
            lines.append(f"{name:>14s}  {value:.4f}  n={n}{blind_text}")
        for by, entry in (result.get("blind_baseline") or {}).items():
            lines.append(f"blind baseline (majority answer per {by.replace('_', ' ')}): {entry['accuracy']:.4f}")
        if result.get("blind_baseline_note"):
            lines.append(f"note: {result['blind_baseline_note']}")
        eff = result.get("efficiency")
        if eff:
            lines.append(f"generation: {eff['tokens_per_second']:.0f} tokens/s, time to first token "
                         f"{eff['time_to_first_token_ms']:.1f} ms (this machine)")
        for example in (result.get("examples") or [])[:3]:
            lines.append(f"example {example.get('id')}: {example.get('prediction')!r} → references "
                         f"{example.get('references')}")
        return lines

    def markdown(self, report: dict[str, Any]) -> list[str]:
        section = report.get(self.section)
        if not section:
            return []
        result = section.get("evaluate_generation") or {}
        lines = [f"### Generation ({section['task']}, {section['n']} rows)", "",
                 f"Decoding: `{result.get('decoding')}`; metrics from `{section.get('source')}`.", ""]
        if result.get("per_type"):
            lines += ["### Per question type", "", md_table(
                ["question type", "n", "exact match", "blind (per type)", "blind (per question)", "chance"],
                _per_type_rows(result)), ""]
        if result.get("blind_baseline"):
            lines += ["### Blind (question-only) baseline", "", md_table(["", "accuracy"], _blind_rows(result)), ""]
        if result.get("blind_baseline_note"):
            lines += [f"- {result['blind_baseline_note']}", ""]
        if result.get("efficiency"):
            lines += ["### Generation efficiency", "", md_table(["measure", "value"],
                                                                _efficiency_rows(result["efficiency"])), ""]
        if result.get("examples"):
            lines += ["### Examples", "", md_table(["id", "question", "prediction", "references"],
                                                   [[str(c).replace("|", "\\|") for c in row]
                                                    for row in _example_rows(result)]), ""]
        return lines

    def html(self, report: dict[str, Any]) -> list[str]:
        section = report.get(self.section)
        if not section:
            return []
        result = section.get("evaluate_generation") or {}
        parts = [f"<h3>Generation ({html.escape(str(section['task']))}, {section['n']} rows)</h3>",
                 f"<p>Decoding: <code>{html.escape(str(result.get('decoding')))}</code></p>"]
        if result.get("per_type"):
            parts += ["<h3>Per question type</h3>", html_table(
                ["question type", "n", "exact match", "blind (per type)", "blind (per question)", "chance"],
                _per_type_rows(result))]
        if result.get("blind_baseline"):
            parts += ["<h3>Blind (question-only) baseline</h3>", html_table(["", "accuracy"], _blind_rows(result))]
        if result.get("blind_baseline_note"):
            parts.append(f"<p>{html.escape(result['blind_baseline_note'])}</p>")
        if result.get("efficiency"):
            parts += ["<h3>Generation efficiency</h3>", html_table(["measure", "value"],
                                                                   _efficiency_rows(result["efficiency"]))]
        if result.get("examples"):
            parts += ["<h3>Examples</h3>", html_table(["id", "question", "prediction", "references"],
                                                      _example_rows(result))]
        return parts


__all__ = ["GenerationReport", "generate_section", "generation_quality", "train_rows"]
