"""Generation from raw inputs with a saved model of a generation task (captioning, vqa, transcription, chat).

    predictor = GenerationPredictor("runs/vqa/best")
    predictor.generate("what color is the circle?", image="scene.png")            # → "red"
    for piece in predictor.generate("describe the picture.", image="x.png", stream=True): print(piece, end="")
    conversation = predictor.conversation(); conversation.attach("image", "x.png"); conversation.ask("what is it?")

Attachments are file paths, arrays or (wave, rate) pairs, turned into the model's inputs by the processors its
config records (``model.modalities.<name>.encoder``: the same processing as in training). A prompt that does not
hold an attachment's placeholder (``<image>`` / ``<audio>``) gets it in front, image before audio, as in the
generation manifests. Decoding options default to those saved with the model (the run's ``generate`` section) and
go to Hugging Face ``generate`` (max_new_tokens, num_beams, do_sample, temperature, top_k, top_p,
repetition_penalty, stop_strings).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ConfigError
from ..data.errors import DataError


def load_generation_model(path: str | os.PathLike | nn.Module) -> nn.Module:
    """A saved generation model (model directory or run directory with best/), or the model itself. Raises
    ConfigError when the directory holds a model of another task."""
    if isinstance(path, nn.Module):
        return path
    from ..tasks import load_model

    directory = Path(path)
    if not (directory / "config.json").is_file() and (directory / "best" / "config.json").is_file():
        directory = directory / "best"
    model = load_model(directory)
    if not hasattr(model, "generate_text"):
        raise ConfigError(f"{directory} holds a {getattr(model, 'task_name', '?')} model, which does not generate "
                          "text; use `polymodal predict` for it")
    return model


class GenerationPredictor:
    """Text from prompts + attachments with a generation model (see module doc). ``device``: where it runs."""

    def __init__(self, model: str | os.PathLike | nn.Module, device: str = "cpu"):
        self.model = load_generation_model(model).to(device).eval()
        self.device = device
        self._processors: dict[str, Any] | None = None

    @property
    def processors(self) -> dict[str, Any]:
        if self._processors is None:
            from ..data import build_processors

            self._processors = build_processors({name: att.encoder for name, att in self.model.config.modalities.items()
                                                 if att.encoder is not None})
        return self._processors

    @property
    def modalities(self) -> list[str]:
        return list(self.model.config.modalities)

    def decoding(self, **options: Any) -> dict[str, Any]:
        """The saved decoding defaults updated with ``options`` (None values ignored)."""
        from ..tasks.predictions import decoding_options

        return decoding_options(self.model, **options)

    @property
    def columns(self) -> dict[str, str]:
        """Attachment modality → the row field holding it (its encoder's ``column``, else its name), as in training."""
        return {name: (att.encoder.column if att.encoder is not None else None) or name
                for name, att in self.model.config.modalities.items()}

    def dataset(self, rows: list[Any], *, base_dir: str | os.PathLike | None = None, source: str = "sample",
                on_error: str = "raise") -> Any:
        """Row-like samples (the generation manifest format, docs/DATA.md §4: ``messages`` or ``prompt``, one field
        per attachment modality holding a path / array or a list of them) → a ``generation.data.GenerationDataset``
        of processed samples, relative paths read from ``base_dir``. A ``prompt`` row without its attachments'
        placeholders gets them in front (as :meth:`generate` does); a ``messages`` row must hold them. Raises
        DataError naming ``source``, the row number and id (``on_error="skip"``: bad rows are left out and listed
        in the dataset's ``skipped``)."""
        from ..generation.data import GenerationDataset

        columns = self.columns
        prepared = []
        for row in rows:
            if isinstance(row, dict) and "messages" not in row and isinstance(row.get("prompt"), str):
                given = {name: row[column] if isinstance(row[column], list) else [row[column]]
                         for name, column in columns.items() if row.get(column) is not None}
                row = {**row, "prompt": self.with_placeholders(row["prompt"], given)}
            prepared.append(row)
        return GenerationDataset(prepared, self.processors, columns=columns, base_dir=base_dir, source=source,
                                 on_error=on_error)

    def process(self, attachments: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Raw attachments {modality: raw or [raw, ...]} → processed inputs. Raises DataError naming the modality."""
        from ..generation.data import attachment_inputs

        unknown = sorted(set(attachments) - set(self.modalities))
        if unknown:
            raise DataError(f"this model reads {self.modalities} attachments, not {unknown}")
        return attachment_inputs(self.processors, attachments)

    def with_placeholders(self, prompt: str, attachments: dict[str, list[Any]]) -> str:
        """``prompt`` with the missing placeholders of ``attachments`` put in front (in the model's modality order)."""
        missing = []
        for name in self.modalities:
            token = self.model.placeholders[name]
            count = len(attachments.get(name) or [])
            missing += [token] * max(0, count - prompt.count(token))
        return "\n".join([*missing, prompt]) if missing else prompt

    def sample(self, messages: list[dict[str, Any]], attachments: dict[str, Any]) -> dict[str, Any]:
        return {"messages": messages, "attachments": self.process(attachments)}

    def generate(self, prompt: str, *, image: Any = None, audio: Any = None, attachments: dict[str, Any] | None = None,
                 stream: bool = False, **decoding: Any) -> str | Iterator[str]:
        """The answer to ``prompt`` about the attachments (``image`` / ``audio`` or ``attachments`` by modality
        name); with ``stream=True`` an iterator of text pieces. Raises DataError for unreadable inputs."""
        given = dict(attachments or {})
        for name, value in (("image", image), ("audio", audio)):
            if value is not None:
                given[name] = value
        given = {name: value if isinstance(value, list) else [value] for name, value in given.items()}
        messages = [{"role": "user", "content": self.with_placeholders(prompt, given)}]
        return self.chat(messages, given, stream=stream, **decoding)

    def chat(self, messages: list[dict[str, Any]], attachments: dict[str, list[Any]] | None = None, *,
             stream: bool = False, **decoding: Any) -> str | Iterator[str]:
        """The next assistant answer of a conversation whose placeholders match ``attachments`` in order."""
        sample = self.sample(messages, attachments or {})
        kwargs = self.decoding(**decoding)
        if stream:
            return self.model.stream(sample, **kwargs)
        return self.model.generate_text([sample], **kwargs)[0]

    def conversation(self) -> Conversation:
        return Conversation(self)


class Conversation:
    """A multi-turn conversation: :meth:`attach` adds an attachment to the next user turn (its placeholder goes in
    front of that turn's text), :meth:`ask` answers and remembers, :meth:`reset` starts over."""

    def __init__(self, predictor: GenerationPredictor):
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.attachments: dict[str, list[Any]] = {}
        self.pending: dict[str, list[Any]] = {}

    def attach(self, modality: str, raw: Any) -> None:
        """Attach a file / array to the next question. Raises DataError for a modality the model lacks or an
        unreadable input (checked now, not at the next question)."""
        if modality not in self.predictor.modalities:
            raise DataError(f"this model reads {self.predictor.modalities} attachments, not {modality!r}")
        self.predictor.processors[modality].check(raw)
        self.pending.setdefault(modality, []).append(raw)

    def ask(self, text: str, *, stream: bool = False, **decoding: Any) -> str | Iterator[str]:
        content = self.predictor.with_placeholders(text, self.pending)
        attachments = {m: self.attachments.get(m, []) + self.pending.get(m, [])
                       for m in set(self.attachments) | set(self.pending)}
        messages = [*self.messages, {"role": "user", "content": content}]
        answer = self.predictor.chat(messages, attachments, stream=stream, **decoding)
        pieces: list[str] = []

        def remember(text: str) -> None:
            self.messages = [*messages, {"role": "assistant", "content": text.strip()}]
            self.attachments, self.pending = attachments, {}

        if not stream:
            remember(answer)
            return answer

        def streamed() -> Iterator[str]:
            for piece in answer:
                pieces.append(piece)
                yield piece
            remember("".join(pieces))

        return streamed()
