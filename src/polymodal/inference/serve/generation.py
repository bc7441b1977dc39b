"""Text generation behind ``POST /v1/generate``: a JSON request → a checked :class:`GenerationJob`.

:meth:`JobBuilder.build` runs on a request thread: it validates the body (:class:`~.schemas.GenerateRequest`: types and
ranges, then the server's ``max_new_tokens`` / ``max_text_chars`` limits and option combinations that cannot
work), decodes each attachment's base64 and checks it like any served file (:meth:`~.inputs.InputSpec.file`:
header size caps, formats, corrupt files), and turns prompt / messages into the conversation the model's
:class:`~polymodal.inference.generate.GenerationPredictor` reads (placeholders in front of a turn's text for its
attachments, as ``polymodal generate`` and ``Conversation.attach`` do). Every refusal is a RequestError naming
the field.

The job's answer is :func:`.generation_worker.run_job`'s, on the batching worker.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .inputs import InputSpec, RawField, decode_base64, scrub
from .limits import RequestError, ServeLimits
from .schemas import MAX_STOP_CHARS, MAX_STOP_STRINGS, FileInput, GenerateRequest

MAX_ATTACHMENTS = 16  # files per request (each is also bounded by the body and per-file limits)
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p")
DECODING_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "num_beams",
                    "repetition_penalty")


def _invalid(message: str, field: str, code: str = "invalid_request", limit: dict[str, Any] | None = None):
    return RequestError(422, code, message, field, limit)


@dataclass
class GenerationJob:
    """One checked /v1/generate request, ready for :func:`run_job`."""

    messages: list[dict[str, Any]]
    attachments: dict[str, list[str]]  # modality → checked file paths, in placeholder order
    decoding: dict[str, Any]  # the model's defaults updated with the request's options (Hugging Face names)
    field: str  # "prompt" or "messages": where an error about the conversation points
    seed: int | None = None
    stream: bool = False
    tmpdir: Path | None = None
    shown: dict[str, str] = field(default_factory=dict)  # temp file path → what the client sent, for messages
    cancel: threading.Event = field(default_factory=threading.Event)
    # stream: called on the worker thread with ("start", None) when decoding starts and ("text", piece) per piece
    emit: Callable[[str, Any], None] | None = None
    enqueued: float = field(default_factory=time.perf_counter)

    def scrub(self, message: str) -> str:
        """``message`` with this job's temporary file paths replaced by the fields the client used."""
        for path, shown in self.shown.items():
            message = scrub(message, path, shown)
        return message

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


# ----------------------------------------------------------------------------------------------- requests


def parse_request(body: bytes) -> GenerateRequest:
    """A JSON body → a validated GenerateRequest; 422 naming the field (``temperature``, ``messages.0.role``)."""
    try:
        payload = json.loads(body or b"null")
    except (UnicodeDecodeError, ValueError) as err:
        raise _invalid(f"the request body is not valid JSON: {err}", "body", "invalid_json") from err
    try:
        return GenerateRequest.model_validate(payload)
    except ValidationError as err:
        # a union (str | list[str]) fails once per arm: the deepest location is the most telling ("stop.0")
        errors = [(error, [str(part) for part in error["loc"] if not _is_arm(str(part))]) for error in err.errors()]
        first, loc = max(errors, key=lambda pair: len(pair[1]))
        where = ".".join(loc) or "body"
        got = first.get("input")
        shown = f"{got!r:.80}" if not isinstance(got, (dict, list)) else type(got).__name__
        raise _invalid(f"{where}: {first['msg']} (got {shown}); see the GenerateRequest schema at /docs",
                       where) from err


def _is_arm(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "FileInput", "ChatMessage") or part.startswith(
        ("list[", "function-", "union[", "constrained-", "dict["))


def _files(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


class JobBuilder:
    """Turns GenerateRequests into GenerationJobs for one model (its InputSpec, generator and server limits)."""

    def __init__(self, generator: Any, spec: InputSpec, limits: ServeLimits, tmp_root: str | None = None):
        self.generator = generator
        self.spec = spec
        self.limits = limits
        self.tmp_root = tmp_root

    def defaults(self) -> dict[str, Any]:
        """The decoding defaults a request without options gets (saved with the model; max_new_tokens capped)."""
        decoding = self.generator.decoding()
        decoding["max_new_tokens"] = min(int(decoding.get("max_new_tokens") or 32), self.limits.max_new_tokens)
        return decoding

    def build(self, request: GenerateRequest) -> GenerationJob:
        """A checked job with its files on disk. Raises RequestError (422 naming the field); no file is left
        behind on a refusal."""
        decoding = self._decoding(request)
        job = GenerationJob(messages=[], attachments={}, decoding=decoding, seed=request.seed, stream=request.stream,
                            field="messages" if request.messages is not None else "prompt")
        try:
            self._conversation(request, job)
        except BaseException:
            job.cleanup()
            raise
        return job

    # ------------------------------------------------------------------------------------------ options

    def _decoding(self, request: GenerateRequest) -> dict[str, Any]:
        given = {key: getattr(request, key) for key in DECODING_OPTIONS if getattr(request, key) is not None}
        cap = self.limits.max_new_tokens
        if given.get("max_new_tokens", 0) > cap:
            raise _invalid(f"max_new_tokens={given['max_new_tokens']} is over the server's limit max_new_tokens={cap}; "
                           "ask for fewer tokens (or start the server with a higher --max-new-tokens)",
                           "max_new_tokens", "limit_exceeded", {"name": "max_new_tokens", "value": cap})
        decoding = {**self.defaults(), **given}
        if not decoding.get("do_sample"):
            for key in SAMPLING_OPTIONS:
                if key in given:
                    raise _invalid(f"{key} applies to sampling only; set do_sample=true with it (greedy and beam "
                                   "search decoding would ignore it)", key)
        if request.stream and int(decoding.get("num_beams") or 1) > 1:
            where = "num_beams" if "num_beams" in given else "stream"
            raise _invalid(f"stream=true needs num_beams=1 (beam search picks its answer at the end, so it cannot "
                           f"be streamed); this request decodes with num_beams={decoding['num_beams']}", where)
        if request.stop is not None:
            stops = [request.stop] if isinstance(request.stop, str) else list(request.stop)
            if not stops or len(stops) > MAX_STOP_STRINGS:
                raise _invalid(f"stop: give 1 to {MAX_STOP_STRINGS} stop strings, got {len(stops)}", "stop")
            for k, stop in enumerate(stops):
                if not stop or len(stop) > MAX_STOP_CHARS:
                    raise _invalid(f"stop[{k}]: a stop string must be 1 to {MAX_STOP_CHARS} characters, got "
                                   f"{len(stop)}", "stop")
            decoding["stop_strings"] = stops
        return decoding

    # ------------------------------------------------------------------------------------- conversation

    def _conversation(self, request: GenerateRequest, job: GenerationJob) -> None:
        if (request.prompt is None) == (request.messages is None):
            raise _invalid("give either prompt (a string) or messages (a conversation), not "
                           f"{'both' if request.prompt is not None else 'neither'}", "prompt")
        top = self._attachments(request, "")
        if request.prompt is not None:
            turns = [("prompt", "user", request.prompt, top)]
        else:
            messages = request.messages or []
            if messages[-1].role != "user":
                raise _invalid(f"messages[{len(messages) - 1}]: the conversation must end with a user turn (the one "
                               f"to answer), not a {messages[-1].role} turn", "messages")
            turns = [(f"messages.{i}", m.role, m.content, self._attachments(m, f"messages.{i}."))
                     for i, m in enumerate(messages)]
            last = turns[-1]
            turns[-1] = (last[0], last[1], last[2], last[3] + top)  # top-level files go with the question asked
        chars = sum(len(text) for _, _, text, _ in turns)
        if chars > self.limits.max_text_chars:
            raise _invalid(f"{job.field}: the text has {chars:,} characters, over the limit max_text_chars="
                           f"{self.limits.max_text_chars:,}", job.field, "limit_exceeded",
                           {"name": "max_text_chars", "value": self.limits.max_text_chars})
        count = sum(len(files) for *_, files in turns)
        if count > MAX_ATTACHMENTS:
            raise _invalid(f"the request has {count} attachments, more than {MAX_ATTACHMENTS}", job.field,
                           "limit_exceeded", {"name": "attachments", "value": MAX_ATTACHMENTS})
        for _, role, text, files in turns:
            given: dict[str, list[str]] = {}
            for key, name, value in files:
                path = self._file(key, name, value, job)
                given.setdefault(name, []).append(path)
                job.attachments.setdefault(name, []).append(path)
            job.messages.append({"role": role, "content": self.generator.with_placeholders(text, given)})

    def _attachments(self, source: Any, prefix: str) -> list[tuple[str, str, Any]]:
        """(field shown in errors, modality name, file data) of the image / audio / attachments of a request or
        message, in the model's modality order within each entry."""
        out = []
        entries = [(kind, f"{prefix}{kind}", getattr(source, kind)) for kind in ("image", "audio")]
        entries += [(key, f"{prefix}attachments.{key}", value) for key, value in (source.attachments or {}).items()]
        keys: dict[str, str] = {}  # modality → the field its files came under
        for key, label, value in entries:
            if value is None:
                continue
            try:
                name = self.spec.resolve(key)
            except RequestError as err:  # name the field as the client wrote it
                raise RequestError(err.status, err.code, f"{label}: {err.message}", label, err.limit) from err
            if self.spec.kinds[name] == "text":
                raise _invalid(f"{label}: {name!r} is a text modality; put text in the prompt", label)
            if name in keys:  # under a kind and under its name: their order would be a guess
                raise _invalid(f"{label}: {name!r} files are also given as {keys[name]}; give them under one key "
                               "(a list keeps their order)", label)
            keys[name] = label
            files = _files(value)
            for k, data in enumerate(files):
                out.append((label if len(files) == 1 else f"{label}.{k}", name, data))
        return out

    def _file(self, key: str, name: str, value: Any, job: GenerationJob) -> str:
        if job.tmpdir is None:
            job.tmpdir = Path(tempfile.mkdtemp(prefix="polymodal-serve-", dir=self.tmp_root))
        data, filename = (value.base64, value.filename) if isinstance(value, FileInput) else (value, None)
        raw = RawField(key, decode_base64(data, key), filename)
        path = self.spec.file(raw, name, job.tmpdir, stem=f"{name}{sum(map(len, job.attachments.values()))}")
        job.shown[path] = f"{key} ({filename})" if filename else key
        return path


__all__ = ["GenerationJob", "JobBuilder", "parse_request"]
