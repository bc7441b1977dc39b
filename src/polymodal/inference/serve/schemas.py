"""Pydantic request / response models of the HTTP API (they are what ``/docs`` and ``/openapi.json`` show).

A JSON request names its inputs by modality name (or kind, when the model has one modality of that kind):
text modalities take a string, image / audio modalities take base64 data (a plain base64 string, a
``data:...;base64,`` URL, or ``{"base64": ..., "filename": ...}``). The same inputs can be sent as
``multipart/form-data``: a file part per image / audio modality and a plain field per text modality.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
    task: str = Field(description="the model's task, as recorded when it was saved: classification or alignment")
    head_task: str | None = Field(default=None, description="a classifier's head: multiclass, binary or multilabel "
                                  "(null for a model without a classification head)")
    architecture: str
    modalities: list[ModalityInfo]
    labels: list[str] = Field(description="labels a prediction chooses from (alignment: zero-shot class names)")
    routes: list[str] = Field(description="the POST routes this model answers")
    limits: dict[str, Any]
    batching: dict[str, Any]
    index: IndexInfo | None = None
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


__all__ = ["EmbedResponse", "ErrorResponse", "FileInput", "HealthResponse", "InputsRequest", "ModelInfo",
           "PredictResponse", "RetrieveRequest", "RetrieveResponse", "RetrievedItem"]
