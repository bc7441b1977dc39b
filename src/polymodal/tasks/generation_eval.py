"""Evaluation of the generation tasks: decode a split, score it with the task's metrics
(``metrics.generation``: COCO caption suite, VQA accuracy / exact match, WER) with bootstrap CIs, measure
generation efficiency, and (VQA) compare with the question-only baseline.

| task | metrics (``quick``: the per-epoch validation metric) |
|---|---|
| captioning | bleu_1…4, cider_d (quick), rouge_l_coco, meteor (when its Java jar runs) |
| vqa | vqa_accuracy (quick), exact_match, per question type; blind baseline (majority answer per question type and per exact question, from the train split) |
| transcription | wer (quick; lower is better), cer (character error rate), exact_match |
| chat | exact_match (quick) of the last answer, bleu_1…4, rouge_l_coco |
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

QUICK_METRIC = {"captioning": "cider_d", "vqa": "vqa_accuracy", "transcription": "wer", "chat": "exact_match"}


@torch.no_grad()
def token_mean_loss(model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> float:
    """Σ answer-token losses / Σ answer tokens over ``loader`` (model in eval mode, restored after): the same
    normalisation as training. Raises ValueError for an empty loader or one without answer tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    try:
        for batch in loader:
            batch = model.as_batch(batch).to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                output = model(batch)
            total += float(output.loss_sum)
            count += float(output.num_tokens)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the validation split has no answer tokens (empty loader or no assistant turns)")
    return total / count


@torch.no_grad()
def generate_split(model: nn.Module, loader: DataLoader, device: Any, generate_kwargs: dict[str, Any],
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Decode the last answer of each row: [{"id", "prediction", "references", + question / question_type}]."""
    was_training = model.training
    model.eval()
    collator = model.collator(for_generation=True)
    stops = generate_kwargs.get("stop_strings")
    out: list[dict[str, Any]] = []
    try:
        for batch in loader:
            samples = batch.samples[: None if limit is None else limit - len(out)]
            if not samples:
                break
            prompts = collator(samples).to(device)
            texts = model.decode(model.generate(prompts, **generate_kwargs), stops)
            for sample, text in zip(samples, texts):
                out.append({"id": sample.get("id"), "prediction": text, "references": list(sample["answers"]),
                            **{k: sample[k] for k in ("question", "question_type") if k in sample}})
            if limit is not None and len(out) >= limit:
                break
    finally:
        model.train(was_training)
    return out


def character_error_rate(predictions: list[str], references: list[list[str]]) -> Any:
    """Corpus CER → MetricResult("cer"): Σ character edits (S + D + I of jiwer's character alignment, spaces
    included) / Σ reference characters, after the WER normalisation (``metrics.generation.wer.normalize_transcript``)
    of both sides; jiwer's ``cer`` over the normalised corpus gives the same number. One reference per sample (the
    first); lower is better, can exceed 1. Raises MetricInputError when every reference is empty."""
    import numpy as np

    from ..metrics.generation.result import MetricResult
    from ..metrics.generation.wer import MetricInputError, _jiwer, normalize_transcript, wer_from_stats

    stats = []
    for prediction, refs in zip(predictions, references):
        ref, hyp = normalize_transcript(refs[0]), normalize_transcript(prediction)
        if not ref or not hyp:  # jiwer refuses empty strings; the alignment is trivial here
            stats.append((max(len(ref), len(hyp)), len(ref)))
            continue
        out = _jiwer().process_characters(ref, hyp)
        stats.append((out.substitutions + out.deletions + out.insertions, len(ref)))
    table = np.array(stats, dtype=np.float64).reshape(-1, 2)
    if table[:, 1].sum() == 0:
        raise MetricInputError("CER: every reference is empty, so CER is undefined (no reference characters)")
    return MetricResult("cer", float(wer_from_stats(table)), wer_from_stats(table[:, None, :]), table, wer_from_stats)


def task_metrics(task: str, predictions: list[str], references: list[list[str]], *,
                 with_meteor: bool = False) -> dict[str, Any]:
    """{name: MetricResult} of ``task`` (module table); METEOR only when asked (it starts a Java VM: seconds)."""
    from ..metrics import generation as gm

    if task == "captioning":
        return gm.caption_metrics(predictions, references, with_meteor=with_meteor)
    if task == "vqa":
        return gm.vqa_metrics(predictions, references)
    if task == "transcription":
        return {"wer": gm.word_error_rate(predictions, [r[:1] for r in references]),
                "cer": character_error_rate(predictions, references),
                "exact_match": gm.exact_match(predictions, references)}
    return {"exact_match": gm.exact_match(predictions, references), **gm.bleu(predictions, references),
            "rouge_l_coco": gm.rouge_l(predictions, references, definition="coco")}


def quick_metric(task: str, model: nn.Module, loader: DataLoader, device: Any, count: int,
                 generate_kwargs: dict[str, Any]) -> dict[str, float]:
    """The task's per-epoch metric (``QUICK_METRIC``) on the first ``count`` rows."""
    rows = generate_split(model, loader, device, generate_kwargs, limit=count)
    name = QUICK_METRIC.get(task, "exact_match")
    results = task_metrics(task, [r["prediction"] for r in rows], [r["references"] for r in rows])
    return {name: float(results[name].value)}


def _with_ci(result: Any, resamples: int, seed: int = 0) -> dict[str, float]:
    entry = {"value": float(result.value)}
    if resamples and result.aggregate is not None and len(result.per_sample) > 1:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate bootstrap (all resamples equal) is reported as such
            _, low, high = result.bootstrap_ci(n_resamples=resamples, seed=seed)
        entry.update(ci_low=float(low), ci_high=float(high))
    return entry


@torch.no_grad()
def generation_efficiency(model: nn.Module, loader: DataLoader, device: Any, generate_kwargs: dict[str, Any],
                          batches: int = 2) -> dict[str, float]:
    """tokens/s of batched generation (KV cache, the configured decoding) over ``batches`` batches, time to
    first token of one prompt (a 1-token generation: prompt encoding + the first step), peak accelerator memory
    (CUDA only). Wall-clock numbers: compare them on an idle machine only."""
    was_training = model.training
    model.eval()
    collator = model.collator(for_generation=True)
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens, seconds, first = 0, 0.0, None
    pad = model.tokenizer.pad_token_id
    try:
        for k, batch in enumerate(loader):
            if k >= batches:
                break
            prompts = collator(batch.samples).to(device)
            if first is None:
                single = collator(batch.samples[:1]).to(device)
                started = time.perf_counter()
                model.generate(single, **{**generate_kwargs, "max_new_tokens": 1})
                first = time.perf_counter() - started
            started = time.perf_counter()
            new = model.generate(prompts, **generate_kwargs)
            seconds += time.perf_counter() - started
            tokens += int((new != pad).sum()) if pad is not None else int(new.numel())
    finally:
        model.train(was_training)
    out = {"generated_tokens": float(tokens), "tokens_per_second": tokens / seconds if seconds else 0.0,
           "time_to_first_token_ms": 1000.0 * (first or 0.0)}
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def evaluate_generation(task: str, model: nn.Module, loader: DataLoader, *, device: Any = "cpu", generate: Any,
                        train_rows: list[dict[str, Any]] | None = None, examples: int = 5, efficiency: bool = True,
                        seed: int = 0, keep_rows: bool = False) -> dict[str, Any]:
    """The test report of a generation task: {"n", "metrics": {name: {value, ci_low, ci_high}}, "decoding",
    "per_type" (VQA), "blind_baseline" (VQA with train rows), "efficiency", "examples"} (+ "rows": every decoded
    row {id, prediction, references, ...} with ``keep_rows``). The one metric path of the generation tasks: the
    test metrics after training and ``polymodal eval`` both call it.

    ``generate``: the run's ``generate`` section (decoding options, ``eval_samples``, ``bootstrap`` resamples).
    ``efficiency``: measure tokens/s, time to first token, peak CUDA memory (None when False). ``seed``: the
    bootstrap resampling seed. CIs: 95% percentile bootstrap over rows."""
    kwargs = generate.generate_kwargs()
    rows = generate_split(model, loader, device, kwargs, limit=generate.eval_samples)
    if not rows:
        raise ValueError("the evaluation split has no rows to generate")
    predictions, references = [r["prediction"] for r in rows], [r["references"] for r in rows]
    results = task_metrics(task, predictions, references, with_meteor=generate.meteor)
    report: dict[str, Any] = {
        "n": len(rows),
        "metrics": {name: _with_ci(result, generate.bootstrap, seed) for name, result in results.items()},
        "decoding": kwargs,
    }
    if task == "vqa":
        per_type: dict[str, list[float]] = defaultdict(list)
        scores = results["exact_match"].per_sample
        for row, score in zip(rows, scores):
            per_type[row.get("question_type") or "all"].append(float(score))
        report["per_type"] = {t: {"exact_match": sum(v) / len(v), "n": len(v)} for t, v in sorted(per_type.items())}
        # The blind model learns from the training rows that ask a question; other rows of a mixed training set
        # (the built-in scenes set adds caption rows) tell a question-only model nothing.
        train_rows = [r for r in train_rows or [] if "question_type" in r and "question" in r]
        if train_rows and all("question_type" in r and "question" in r for r in rows):
            from ..data.builtin.generation_format import blind_baseline

            eval_rows = [{"question": r["question"], "question_type": r["question_type"],
                          "answers": r["references"]} for r in rows]
            report["blind_baseline"] = {
                by: {k: v for k, v in blind_baseline(train_rows, eval_rows, by=by).items() if k != "majority"}
                for by in ("question_type", "question")}
    report["efficiency"] = generation_efficiency(model, loader, device, kwargs) if efficiency else None
    report["examples"] = rows[:examples]
    if keep_rows:
        report["rows"] = rows
    return report
