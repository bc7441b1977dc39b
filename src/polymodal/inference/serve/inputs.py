"""Request bodies → one Predictor sample, checked against the server's limits before anything is decoded.

Both body forms give a list of (field, value) pairs: ``multipart/form-data`` (a file part per image / audio
modality, a plain field per text modality) and JSON (:class:`~.schemas.InputsRequest`, base64 file data).
:class:`InputSpec` then, for each field: resolves the modality (its name, or its kind when the model has one
modality of that kind), checks the value's type, applies the limits from the file header (image pixels, audio
seconds) or the string (text characters), writes files to a per-request temporary directory, and runs the
model processor's own cheap ``check`` (format allow-list, PNG chunk CRCs, truncated JPEG, unreadable audio) so
a corrupt file is refused here, naming its field, instead of inside a batch shared with other requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from ...data.errors import DataError
from ...data.image_decode import PixelCapExceeded, pixel_cap
from ..predictor import Predictor
from .limits import RequestError, ServeLimits
from .schemas import FileInput, InputsRequest

FILE_KINDS = ("image", "audio")
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)


@dataclass
class RawField:
    """One input as received: ``value`` is bytes for a file part / base64 data, str for a text value."""

    key: str
    value: bytes | str
    filename: str | None = None
    json: bool = False  # a JSON string: for an image / audio modality it is base64 data


@dataclass
class PreparedSample:
    """A Predictor sample (modality name → file path or text) and the temporary directory holding its files."""

    sample: dict[str, Any]
    tmpdir: Path | None = None
    fields: dict[str, str] = field(default_factory=dict)  # modality name → the field name the client used
    shown: dict[str, str] = field(default_factory=dict)  # modality name → "field (file name)" for messages

    def scrub(self, message: str) -> str:
        """``message`` with this request's temporary file paths replaced by what the client sent."""
        for name, shown in self.shown.items():
            message = scrub(message, self.sample[name], shown)
        return message

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def scrub(message: str, path: str | Path, shown: str) -> str:
    """``message`` with the server's temporary ``path`` replaced by what the client knows (field and file name)."""
    path = str(path)
    return message.replace(repr(path), repr(shown)).replace(path, shown)


def _unprocessable(code: str, message: str, field: str | None = None, limit: dict[str, Any] | None = None):
    return RequestError(422, code, message, field=field, limit=limit)


def decode_base64(text: str, key: str) -> bytes:
    """Standard base64 (a data: URL prefix, whitespace and missing padding tolerated) → bytes; 422 naming the field."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    body = "".join(body.split())
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as err:
        raise _unprocessable("invalid_input", f"field {key!r}: not valid base64 data ({err}); send the file's bytes "
                             "base64-encoded, or upload it as multipart/form-data", key) from err


def fields_from_json(body: bytes, model: type[InputsRequest] = InputsRequest) -> tuple[list[RawField], InputsRequest]:
    """A JSON body → its input fields (+ the validated request, for its other members such as ``k``)."""
    try:
        payload = json.loads(body or b"null")
    except (UnicodeDecodeError, ValueError) as err:
        raise _unprocessable("invalid_json", f"the request body is not valid JSON: {err}", "body") from err
    try:
        request = model.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        if len(loc) >= 2 and loc[0] == "inputs":  # a value of inputs: name the modality, not pydantic's union arm
            where, what = loc[1], (f"inputs.{loc[1]}: expected a string (a text, or base64 data of a file) or "
                                   f'{{"base64": ..., "filename": ...}}, got {first.get("input")!r:.80}')
        else:
            where = ".".join(loc) or "body"
            what = (f"{where}: {first['msg']} (expected e.g. "
                    '{"inputs": {"text": "a handwritten seven", "image": {"base64": "..."}}})')
        raise _unprocessable("invalid_request", what, where) from err
    fields = []
    for key, value in request.inputs.items():
        if isinstance(value, FileInput):
            fields.append(RawField(key, decode_base64(value.base64, key), value.filename))
        else:
            fields.append(RawField(key, value, json=True))
    return fields, request


class InputSpec:
    """What the loaded model accepts, per modality, and the checks that turn fields into a Predictor sample."""

    def __init__(self, predictor: Predictor, limits: ServeLimits, tmp_root: str | None = None):
        self.limits = limits
        self.tmp_root = tmp_root
        model = predictor.model
        if getattr(predictor, "generates", False):
            # a generation model's inputs are attachments, each with its encoder's processor (an attachment without
            # an encoder config is fed by the caller's own code: nothing a request could send)
            self.processors = predictor.generator.processors  # built now, once, not lazily from request threads
            self.kinds = {name: att.encoder.kind for name, att in model.config.modalities.items()
                          if att.encoder is not None}
        else:
            self.processors = model.processors  # built now, once, not lazily from several request threads
            self.kinds = {name: model.config.modalities[name].kind for name in model.modality_names}
        kinds = list(self.kinds.values())
        self.aliases = {kind: name for name, kind in self.kinds.items() if kinds.count(kind) == 1 and kind not in self.kinds}
        self.max_pixels, self.pixel_source = self._cap("image", lambda p: getattr(getattr(p, "config", None),
                                                                                  "max_pixels", None),
                                                       limits.max_image_pixels, "max_pixels")
        self.max_seconds, self.seconds_source = self._cap("audio", lambda p: getattr(getattr(p, "loader", None),
                                                                                     "max_seconds_file", None),
                                                          limits.max_audio_seconds, "max_seconds_file")

    def _cap(self, kind: str, read: Any, server: float, key: str) -> tuple[dict[str, float], dict[str, tuple[str, str]]]:
        """Per modality of ``kind``: the effective cap (server limit or the processor's, the smaller) and
        (limit name, where it is set)."""
        caps, sources = {}, {}
        server_key = "max_image_pixels" if kind == "image" else "max_audio_seconds"
        for name, modality_kind in self.kinds.items():
            if modality_kind != kind:
                continue
            own = read(self.processors[name])
            if own is not None and own < server:
                caps[name], sources[name] = own, (key, f"the model's {name} processor")
            else:
                caps[name], sources[name] = server, (server_key, f"server --{server_key.replace('_', '-')}")
        return caps, sources

    def describe(self) -> list[dict[str, Any]]:
        """Per modality: name, kind and effective limits (for GET /v1/model)."""
        out = []
        for name, kind in self.kinds.items():
            if kind == "image":
                limits = {"max_image_pixels": int(self.max_pixels[name])}
            elif kind == "audio":
                limits = {"max_audio_seconds": float(self.max_seconds[name])}
            else:
                limits = {"max_text_chars": self.limits.max_text_chars,
                          "max_tokens": getattr(self.processors[name], "max_length", None)}
            out.append({"name": name, "kind": kind, "limits": limits})
        return out

    def resolve(self, key: str) -> str:
        """A field name → the modality it feeds; 422 ``unknown_modality`` listing what the model takes."""
        if key in self.kinds:
            return key
        if key in self.aliases:
            return self.aliases[key]
        accepted = [*self.kinds, *self.aliases]
        raise _unprocessable("unknown_modality", f"unknown modality {key!r}: this model takes "
                             f"{', '.join(map(repr, accepted))}", key)

    # ----------------------------------------------------------------------------------------------- prepare

    def prepare(self, fields: list[RawField]) -> PreparedSample:
        """Fields → a checked sample with its files on disk. Raises RequestError (422) naming the field."""
        prepared = PreparedSample(sample={})
        try:
            for raw in fields:
                name = self.resolve(raw.key)
                if name in prepared.fields:
                    raise _unprocessable("duplicate_modality", f"modality {name!r} given twice (as "
                                         f"{prepared.fields[name]!r} and {raw.key!r}); send it once", raw.key)
                prepared.fields[name] = raw.key
                if self.kinds[name] == "text":
                    text = self._text(raw)
                    if text.strip():  # an empty text is an absent modality, as in a manifest
                        prepared.sample[name] = text
                else:
                    if prepared.tmpdir is None:
                        prepared.tmpdir = Path(tempfile.mkdtemp(prefix="polymodal-serve-", dir=self.tmp_root))
                    prepared.sample[name] = self._file(raw, name, prepared.tmpdir)
                    prepared.shown[name] = f"{raw.key} ({raw.filename})" if raw.filename else raw.key
            if not prepared.sample:
                raise _unprocessable("missing_input", "the request has no input: give at least one of the model's "
                                     f"modalities {list(self.kinds)} (a file for image / audio, a string for text)",
                                     "inputs")
        except BaseException:
            prepared.cleanup()
            raise
        return prepared

    def _text(self, raw: RawField) -> str:
        if isinstance(raw.value, bytes):
            raise _unprocessable("wrong_type", f"field {raw.key!r} is a text modality: send a string (a form field "
                                 "or a JSON string), not a file", raw.key)
        if len(raw.value) > self.limits.max_text_chars:
            raise _unprocessable("limit_exceeded", f"field {raw.key!r}: the text has {len(raw.value):,} characters, "
                                 f"over the limit max_text_chars={self.limits.max_text_chars:,}", raw.key,
                                 {"name": "max_text_chars", "value": self.limits.max_text_chars})
        return raw.value

    def file(self, raw: RawField, name: str, tmpdir: Path, stem: str | None = None) -> str:
        """One image / audio field → the path of its checked copy in ``tmpdir`` (named ``stem``, default the
        modality name: give distinct stems for several files of one modality). Raises RequestError (422) naming
        ``raw.key`` for a wrong type, bad base64, a corrupt file or one over a limit."""
        return self._file(raw, name, tmpdir, stem)

    def _file(self, raw: RawField, name: str, tmpdir: Path, stem: str | None = None) -> str:
        kind = self.kinds[name]
        if isinstance(raw.value, str) and raw.json:
            raw = RawField(raw.key, decode_base64(raw.value, raw.key), raw.filename)
        if isinstance(raw.value, str):
            raise _unprocessable("wrong_type", f"field {raw.key!r} is an {kind} modality: upload a file "
                                 "(multipart/form-data) or send base64 data in JSON, not a plain string", raw.key)
        if not raw.value:
            raise _unprocessable("invalid_input", f"field {raw.key!r}: the {kind} file is empty", raw.key)
        suffix = Path(raw.filename or "").suffix
        path = tmpdir / f"{stem or name}{suffix if _SAFE_SUFFIX.match(suffix) else ''}"
        path.write_bytes(raw.value)
        shown = f"{raw.key} ({raw.filename})" if raw.filename else raw.key
        if kind == "image":
            self._check_image(path, raw.key, name, shown)
        elif kind == "audio":
            self._check_audio(path, raw.key, name, shown)
        try:
            self.processors[name].check(str(path))  # the model's own checks: formats, corruption, its caps
        except DataError as err:
            raise _unprocessable("invalid_input", f"field {raw.key!r}: {scrub(str(err), path, shown)}", raw.key) from err
        return str(path)

    def _check_image(self, path: Path, key: str, name: str, shown: str) -> None:
        cap = int(self.max_pixels[name])
        try:
            with pixel_cap(cap), Image.open(path) as image:  # header only: no pixel is decoded here
                width, height = image.size
        except PixelCapExceeded as err:
            width, height = err.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise _unprocessable("invalid_input", f"field {key!r}: {shown} is not a readable image "
                                 f"({scrub(str(err), path, shown)})", key) from err
        if width * height > cap:
            limit, where = self.pixel_source[name]
            raise _unprocessable("limit_exceeded", f"field {key!r}: the image is {width}×{height} = "
                                 f"{width * height:,} pixels, over the limit {limit}={cap:,} ({where}); send a "
                                 "smaller image", key, {"name": limit, "value": cap})

    def _check_audio(self, path: Path, key: str, name: str, shown: str) -> None:
        cap = float(self.max_seconds[name])
        try:
            info = sf.info(str(path))  # header only
        except Exception as err:  # noqa: BLE001 - soundfile raises its own and RuntimeError types
            raise _unprocessable("invalid_input", f"field {key!r}: {shown} is not readable audio "
                                 f"({scrub(str(err), path, shown)})", key) from err
        if info.samplerate <= 0 or info.frames <= 0:
            raise _unprocessable("invalid_input", f"field {key!r}: {shown} holds no audio samples", key)
        seconds = info.frames / info.samplerate
        if seconds > cap:
            limit, where = self.seconds_source[name]
            raise _unprocessable("limit_exceeded", f"field {key!r}: the audio lasts {seconds:.2f} s, over the limit "
                                 f"{limit}={cap:g} s ({where}); send a shorter clip", key, {"name": limit, "value": cap})


__all__ = ["InputSpec", "PreparedSample", "RawField", "decode_base64", "fields_from_json"]
