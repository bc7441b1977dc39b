"""Pydantic request / response models of the HTTP API (they are what ``/docs`` and ``/openapi.json`` show).

A JSON request names its inputs by modality name (or kind, when the model has one modality of that kind):
text modalities take a string, image / audio modalities take base64 data (a plain base64 string, a
``data:...;base64,`` URL, or ``{"base64": ..., "filename": ...}``). The same inputs can be sent as
``multipart/form-data``: a file part per image / audio modality and a plain field per text modality.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class FileInput(BaseModel):
    """An image or audio file in a JSON request."""

    model_config = ConfigDict(extra="forbid")
    base64: str = Field(description="the file's bytes, base64-encoded (standard alphabet, padding optional)")
    filename: str | None = Field(default=None, description="original file name, used only in messages")


class InputsRequest(BaseModel):
    """Inputs of one sample, keyed by modality name or kind; any subset of the model's modalities."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"inputs": {"text": "a handwritten seven", "image": {"base64": "iVBORw0KGgo...", "filename": "7.png"}}}]
    })
    inputs: dict[str, str | FileInput] = Field(
        description="modality name or kind → a string (text) or base64 file data (image / audio)")


class RetrieveRequest(InputsRequest):
    """One query input (any modality of the model) and how many gallery items to return."""

    k: int = Field(default=5, ge=1, le=1000, description="how many nearest items to return")


MAX_BEAMS = 8  # beams multiply the KV cache: a cap per request, like max_new_tokens
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 100

FileData = StrictStr | FileInput  # base64 (or a data: URL), or {"base64": ..., "filename": ...}
Attachment = FileData | list[FileData]  # one file, or several of the same modality (in order)


class ChatMessage(BaseModel):
    """One turn of a conversation; its attachments are read at this turn (their placeholders go in front of its
    text unless the text holds them, e.g. ``"<image> what is this?"``)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: StrictStr
    image: Attachment | None = Field(default=None, description="image(s) of this turn: base64 or a data: URL")
    audio: Attachment | None = Field(default=None, description="audio clip(s) of this turn: base64 WAV / FLAC")
    attachments: dict[str, Attachment] | None = Field(
        default=None, description="attachments by modality name (or kind), for models with other names")


class GenerateRequest(BaseModel):
    """``prompt`` (+ ``image`` / ``audio``) or ``messages``, and decoding options; unset options take the defaults
    saved with the model (``GET /v1/model`` shows them). Option names and meanings are Hugging Face ``generate``'s
    (``stop`` is its ``stop_strings``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "what color is the square?", "image": "data:image/png;base64,iVBORw0KGgo...", "max_new_tokens": 16},
        {"messages": [{"role": "user", "content": "describe the picture.", "image": "iVBORw0KGgo..."}],
         "do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 0, "stream": True},
    ]})
    prompt: StrictStr | None = Field(default=None, description="the question / instruction (one user turn)")
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=64,
                                               description="a conversation ending with a user turn (instead of prompt)")
    image: Attachment | None = Field(default=None, description="image(s) for the prompt (or the last user turn)")
    audio: Attachment | None = Field(default=None, description="audio clip(s) for the prompt (or the last user turn)")
    attachments: dict[str, Attachment] | None = Field(default=None, description="attachments by modality name")
    max_new_tokens: StrictInt | None = Field(default=None, ge=1, description="most new tokens (server cap: "
                                             "max_new_tokens in GET /v1/model limits)")
    do_sample: StrictBool | None = Field(default=None, description="sample (true) or greedy / beam search (false)")
    temperature: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=100, allow_inf_nan=False,
                                                        description="sampling temperature (do_sample)")
    top_k: StrictInt | None = Field(default=None, ge=0, le=1_000_000, description="sample from the k likeliest "
                                    "tokens; 0 = off (do_sample)")
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1, allow_inf_nan=False,
                                                  description="nucleus sampling mass (do_sample)")
    num_beams: StrictInt | None = Field(default=None, ge=1, le=MAX_BEAMS, description="beam search width; 1 = off; "
                                        "not with stream")
    repetition_penalty: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=100, allow_inf_nan=False,
                                                               description="CTRL repetition penalty; 1 = off")
    stop: StrictStr | list[StrictStr] | None = Field(default=None, description=f"stop strings (at most "
                                                     f"{MAX_STOP_STRINGS}): the answer ends before the first one")
    seed: StrictInt | None = Field(default=None, ge=0, le=2**63 - 1, description="seed of the sampling RNG "
                                   "(do_sample): the same seed and options give the same text")
    stream: StrictBool = Field(default=False, description="answer as server-sent events (text/event-stream)")


class GenerateTimings(BaseModel):
    queue_ms: float = Field(description="from the request's arrival at the queue to the start of its generation")
    first_token_ms: float | None = Field(description="from the start of generation to the first new token "
                                         "(prefill: attachments encoded, prompt read)")
    generate_ms: float = Field(description="the whole generation, attachments decoded included")
    tokens_per_second: float | None = Field(description="new tokens / generate time")


class GenerateResponse(BaseModel):
    text: str = Field(description="the answer: special tokens removed, cut before the first stop string, stripped")
    tokens: int = Field(description="new tokens generated (the end-of-sequence token included when one ended it)")
    prompt_tokens: int = Field(description="tokens read by the decoder: the prompt with attachments expanded")
    finish_reason: Literal["stop", "length", "cancelled"] = Field(
        description="stop: end of sequence or a stop string; length: max_new_tokens reached")
    timings: GenerateTimings


class PredictResponse(BaseModel):
    label: str | list[str] = Field(description="the predicted label (multilabel: every label over the threshold)")
    probabilities: dict[str, float] = Field(description="label → probability, in the model's label order")
    modalities: list[str] = Field(description="the modalities the prediction used")
    batch_size: int = Field(description="how many requests shared this forward pass (dynamic batching)")


class EmbedResponse(BaseModel):
    embeddings: dict[str, list[float]] = Field(description="modality name → unit-norm embedding [E]")
    dim: int = Field(description="embedding width E")
    batch_size: int


class RetrievedItem(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity between the query and the item")
    id: str
    label: str | None = None
    source: str | None = Field(default=None, description="the item's file path or text, as indexed")


class RetrieveResponse(BaseModel):
    query_modality: str
    items: list[RetrievedItem]
    batch_size: int


class ModalityInfo(BaseModel):
    name: str
    kind: str = Field(description="image, audio or text")
    limits: dict[str, Any] = Field(description="the effective input limits of this modality")


class IndexInfo(BaseModel):
    items: int
    dim: int
    modality: str | None = Field(default=None, description="the modality the gallery was embedded with")
    backend: str


class ModelInfo(BaseModel):
    task: str = Field(description="the model's task, as recorded when it was saved: classification, alignment, or a "
                      "generation task (captioning, vqa, transcription, chat)")
    head_task: str | None = Field(default=None, description="a classifier's head: multiclass, binary or multilabel "
                                  "(null for a model without a classification head)")
    architecture: str
    modalities: list[ModalityInfo]
    labels: list[str] = Field(description="labels a prediction chooses from (alignment: zero-shot class names)")
    routes: list[str] = Field(description="the POST routes this model answers")
    limits: dict[str, Any]
    batching: dict[str, Any]
    index: IndexInfo | None = None
    decoding: dict[str, Any] | None = Field(default=None, description="a generation model's decoding defaults "
                                            "(a /v1/generate request's unset options)")
    auth: bool = Field(description="whether /v1/* needs an Authorization: Bearer token")
    versions: dict[str, str]


class HealthResponse(BaseModel):
    status: str
    queue_depth: int


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="stable error code, e.g. limit_exceeded, invalid_input, unknown_modality")
    message: str = Field(description="what is wrong and what to do, naming the field and the limit")
    field: str | None = None
    limit: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


__all__ = ["ChatMessage", "EmbedResponse", "ErrorResponse", "FileInput", "GenerateRequest", "GenerateResponse",
           "GenerateTimings", "HealthResponse", "InputsRequest", "ModelInfo",
           "PredictResponse", "RetrieveRequest", "RetrieveResponse", "RetrievedItem"]
