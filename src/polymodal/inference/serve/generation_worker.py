"""Text generation on the batching worker: a checked :class:`~.generation.GenerationJob` → its answer.

:func:`run_job` runs on the batching worker thread (one job at a time): the same steps as
``GenerationPredictor.chat`` (process attachments, collate, ``model.generate``, ``model.decode``), so a served
greedy answer equals ``Predictor(dir).generate(...)``, plus, for ``stream``, a streamer (:class:`JobStreamer`)
that hands out text pieces, and a stopping criterion (:class:`Cancelled`) that times the first token and ends
the generation at the next token once the job is cancelled (the client went away or timed out), so no abandoned
request keeps the worker busy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .generation import GenerationJob

log = logging.getLogger("polymodal.serve")


@dataclass
class GenerationOutcome:
    """What a finished job gives: the answer, token counts, why it ended and how long it took."""

    text: str
    tokens: int
    prompt_tokens: int
    finish_reason: str  # stop | length | cancelled
    timings: dict[str, float | None]




class Cancelled(StoppingCriteria):
    """Ends generation at the next token once ``event`` is set (a Hugging Face stopping criterion, called after
    every new token whatever the decoding, beam search included; a streamer is not). Its first call also gives
    the prompt length (attachments expanded) and the time of the first new token."""

    def __init__(self, event: threading.Event):
        self.event = event
        self.prompt_tokens = 0
        self.first_token_at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.prompt_tokens = int(input_ids.shape[-1]) - 1
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TextPieces:
    """New token ids → text pieces whose concatenation is the final answer (``model.decode``: cut before the
    first stop string, stripped). A piece is only handed out once later tokens cannot change it: text that may
    be the start of a stop string, trailing whitespace (the final strip), an incomplete UTF-8 character (U+FFFD)
    and, for a tokenizer that cleans up spaces on decoding, the last word are held back until they settle."""

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = stops
        self.word_level = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.sent = ""

    def settled(self, ids: list[int]) -> str:
        raw = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = raw
        for stop in self.stops:  # the same cut as model.decode
            cut = cut.split(stop, 1)[0]
        if len(cut) < len(raw):
            return cut.strip()  # a stop string was reached: this is the answer
        end = len(raw)
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(raw)), 0, -1):
                if raw.endswith(stop[:size]):
                    end = min(end, len(raw) - size)
                    break
        text = raw[:end].rstrip("\ufffd")
        if self.word_level:
            cut_at = max(text.rfind(" "), text.rfind("\n"))
            text = text[:cut_at + 1] if cut_at >= 0 else ""
        return text.strip()

    def next(self, ids: list[int]) -> str:
        return self._advance(self.settled(ids))

    def finish(self, final: str) -> str:
        if not final.startswith(self.sent):
            # a tokenizer whose decoding of a prefix is not a prefix of the whole: nothing can be retracted; the
            # final event's ``text`` holds the whole answer
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, final)
            return ""
        return self._advance(final)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece


class JobStreamer(BaseStreamer):
    """The Hugging Face streamer of a streamed job (greedy or sampling: Hugging Face refuses a streamer with beam
    search): the first ``put`` is the prompt (decoding starts: emit "start"), each later one a new token of the
    single sequence, turned into text pieces (emit "text")."""

    def __init__(self, job: GenerationJob, pieces: TextPieces):
        self.job = job
        self.pieces = pieces
        self.ids: list[int] = []
        self.started = False

    def put(self, value: torch.Tensor) -> None:
        if self.job.emit is None:
            return
        if not self.started:
            self.started = True
            self.job.emit("start", None)
            return
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        if not self.job.cancel.is_set():
            piece = self.pieces.next(self.ids)
            if piece:
                self.job.emit("text", piece)

    def end(self) -> None:
        pass


def run_job(generator: Any, job: GenerationJob) -> GenerationOutcome:
    """Generate the answer of ``job`` (on the worker thread). Raises DataError for attachments or a conversation
    the model cannot read, or a prompt too long for the decoder."""
    model = generator.model
    start = time.perf_counter()
    decoding = dict(job.decoding)
    stops = list(decoding.get("stop_strings") or [])
    # GenerationPredictor.chat: the same processing, collation and decoding as Predictor(dir).generate
    sample = generator.sample(job.messages, job.attachments)
    batch = model.collator(for_generation=True)([sample]).to(next(model.parameters()).device)
    streamer = JobStreamer(job, TextPieces(model.tokenizer, stops)) if job.stream else None
    watch = Cancelled(job.cancel)
    if streamer is not None:
        decoding["streamer"] = streamer
    if job.seed is not None:
        torch.manual_seed(job.seed)  # the worker is the only thread that draws from torch's RNG
    ids = model.generate(batch, stopping_criteria=StoppingCriteriaList([watch]), **decoding)
    text = model.decode(ids, decoding.get("stop_strings"))[0]
    new = [int(token) for token in ids[0].tolist()]
    eos = _eos_ids(model)
    ended = next((i for i, token in enumerate(new) if token in eos), None)
    tokens = len(new) if ended is None else ended + 1
    raw = model.tokenizer.decode(new, skip_special_tokens=True)
    if ended is not None or any(stop in raw for stop in stops):
        reason = "stop"
    elif tokens >= int(decoding["max_new_tokens"]):
        reason = "length"
    else:
        reason = "cancelled" if job.cancel.is_set() else "stop"
    if streamer is not None and job.emit is not None:
        tail = streamer.pieces.finish(text)
        if tail:
            job.emit("text", tail)
    elapsed = time.perf_counter() - start
    timings = {
        "queue_ms": round((start - job.enqueued) * 1000, 3),
        "first_token_ms": None if watch.first_token_at is None else round((watch.first_token_at - start) * 1000, 3),
        "generate_ms": round(elapsed * 1000, 3),
        "tokens_per_second": round(tokens / elapsed, 3) if elapsed > 0 and tokens else None,
    }
    return GenerationOutcome(text, tokens, watch.prompt_tokens, reason, timings)


def _eos_ids(model: Any) -> set[int]:
    ids = {model.tokenizer.eos_token_id}
    configured = getattr(getattr(model.decoder, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


__all__ = ["Cancelled", "GenerationOutcome", "JobStreamer", "TextPieces", "run_job"]
