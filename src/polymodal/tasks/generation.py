"""The generation tasks: ``captioning``, ``vqa``, ``transcription`` and ``chat`` — text generated from images,
audio and text by a vision/audio-language model (LLaVA / BLIP-2 / nanoVLM family; docs/GENERATION.md).

Model: encoders → one connector per attachment modality → a causal LM decoder (``generation.VisionLanguageModel``)
built from the ``model`` section (``config.generation.GenerationModelConfig``); a preset decoder gets a byte-level
BPE tokenizer trained on the training split's texts. Stages (LLaVA, arXiv:2304.08485 §4.2): ``model.stage: 1``
trains the connectors only; ``2`` adds the decoder, fully or through ``model.lora`` (merged into the saved
weights). Objective: next-token cross-entropy on answer tokens only, returned by the model as a sum + token count
(``loss_terms``) so the Trainer normalises over every answer token of an accumulated step. Validation: the mean
loss per answer token and one cheap generation metric on ``generate.validate_samples`` val rows. Test: the task's
metrics (``tasks.generation_eval``) with bootstrap CIs, generation efficiency and, for VQA, the blind baseline.

The four tasks differ only in their data (which built-in rows, which manifest fields matter) and metrics; one
class serves them, registered under each name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError, RunConfig
from ..registry import TASKS
from .base import PreparedData, Task

# The generation manifest's task name (data.builtin.generation_format.TASKS) of each task's built-in rows.
ROW_TASK = {"captioning": "caption", "vqa": "vqa", "transcription": "transcription", "chat": "chat"}
# Built-in generation sets and the tasks each provides rows for.
BUILTIN_SETS = {"scenes": ("captioning", "vqa"), "spoken-digits": ("captioning", "vqa", "transcription", "chat")}


def load_rows(config: RunConfig, split: str) -> tuple[list[dict[str, Any]], Path | None, str] | None:
    """(rows, the folder their relative paths are read from, a source name) of one split, or None when the config
    gives no such split. Built-in sets (``data.name``: scenes, spoken-digits) are made in memory; manifests
    (``data.<split>``) are JSON Lines. Raises DataError / ConfigError naming the set, task or file."""
    from ..data.errors import DataError

    name, task = config.data.name, config.task
    if name:
        if name not in BUILTIN_SETS:
            raise ConfigError(f"data.name: {name!r} is not a built-in generation set; choose one of "
                              f"{sorted(BUILTIN_SETS)} or give manifests (data.train / data.val / data.test)")
        if task not in BUILTIN_SETS[name]:
            raise ConfigError(f"data.name: the {name} set has no {task} rows (its tasks: {', '.join(BUILTIN_SETS[name])})")
        if name == "scenes":
            from ..data.builtin.scenes import DEFAULT_SIZES, scene_records, vqa_training_rows

            # data.limit caps each split (like every data set's limit); the set's own sizes otherwise
            size = DEFAULT_SIZES[split] if config.data.limit is None else min(config.data.limit, DEFAULT_SIZES[split])
            if task == "vqa" and split == "train":
                rows = vqa_training_rows(size)
            else:
                rows = scene_records(split, ROW_TASK[task], size)
        else:
            from ..data.builtin.spoken_digits_generation import generation_records

            rows = generation_records(split, ROW_TASK[task], config.data.limit)
        return rows, None, f"{name}/{ROW_TASK[task]}_{split}"
    path = getattr(config.data, split, None)
    if not path:
        return None
    from ..data.builtin.generation_format import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.{split}: manifest {path} not found")
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"data.{split}: {path} is not a JSON Lines manifest; generation manifests are .jsonl "
                        "(docs/DATA.md, 'Generation manifests')")
    rows = read_jsonl(path)
    if config.data.limit is not None:
        rows = rows[: config.data.limit]
    return rows, path.parent.resolve(), str(path)


def training_texts(rows: list[dict[str, Any]]) -> list[str]:
    """Every text of the rows (message contents, references) to train a preset decoder's tokenizer on."""
    texts: list[str] = []
    for row in rows:
        for message in row.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text"]
        for key in ("prompt", "answer"):
            if isinstance(row.get(key), str):
                texts.append(row[key])
        texts += [a for a in row.get("answers") or [] if isinstance(a, str)]
    return texts


def attachment_processors(config: RunConfig) -> dict[str, Any]:
    """One processor per attachment modality, from its encoder's ModalityConfig (kind + processor options)."""
    from ..data import build_processors

    missing = [name for name, att in config.model.modalities.items() if att.encoder is None]
    if missing:
        raise ConfigError(f"model.modalities.{missing[0]}.encoder: a task's model builds its encoders (and their "
                          "processors) from the config; give {kind: image | audio | text, ...}")
    return build_processors({name: att.encoder for name, att in config.model.modalities.items()})


class GenerationTask(Task):
    """Text generation from attachments (base of the four registered tasks)."""

    name: ClassVar[str] = ""
    report_kind = "generation"

    # ------------------------------------------------------------------------------------------ model

    def build_model(self, config: RunConfig, labels: list[str]) -> nn.Module:
        from ..generation import VisionLanguageModel

        spec = config.model
        if spec.init_from:
            model = VisionLanguageModel.from_pretrained(spec.init_from)  # stage 1 → stage 2: its tokenizer too
            model.train()
        else:
            tokenizer = None
            if not spec.decoder.pretrained:
                from ..decoders import train_tokenizer

                loaded = load_rows(config, "train")
                if loaded is None:
                    raise ConfigError("a preset decoder's tokenizer is trained on the train split: set data.name or "
                                      "data.train")
                tokenizer = train_tokenizer(training_texts(loaded[0]), spec.tokenizer.vocab_size,
                                            spec.tokenizer.min_frequency,
                                            [att.placeholder for att in spec.modalities.values()])
            model = VisionLanguageModel.build(spec.vlm_config(), tokenizer=tokenizer)
        if spec.stage == 1:
            model.configure_stage(1)
        else:
            if spec.lora is not None:
                model.apply_lora(r=spec.lora.r, alpha=spec.lora.alpha, dropout=spec.lora.dropout,
                                 target_modules=spec.lora.target_modules)
            model.configure_stage(2)
        model.task_name = self.name
        model.merge_lora_on_save = True  # best/ is a plain model directory even while LoRA trains
        model.generation_defaults = config.generate.generate_kwargs()
        return model

    def load_model(self, directory: Path, payload: dict[str, Any], map_location: str = "cpu", *,
                   trust_remote_code: bool = False) -> nn.Module:
        from ..generation import VisionLanguageModel

        model = VisionLanguageModel.from_pretrained(directory, map_location=map_location)
        model.task_name = self.name
        return model

    def describe(self, model: nn.Module, config: RunConfig, labels: list[str]) -> str:
        counts = model.parameter_counts()
        parts = ", ".join(f"{name} ({att.connector})" for name, att in config.model.modalities.items())
        decoder = config.model.decoder.pretrained or config.model.decoder.preset
        lora = " + LoRA" if config.model.lora is not None else ""
        return (f"{self.name} model: {parts} → {decoder}{lora} | stage {config.model.stage} | params "
                f"{counts['total']:,} total, {counts['trainable']:,} trainable")

    # ------------------------------------------------------------------------------------------ data

    def prepare_data(self, config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                     processors: dict[str, Any] | None = None) -> PreparedData:
        """Processors (one per attachment modality), loaders of SampleBatch per split, no labels. Raises DataError
        when training asks for no train split or a row is malformed (``data.on_error: skip`` skips it)."""
        from ..data.errors import DataError
        from ..generation.data import GenerationDataset

        processors = processors or attachment_processors(config)
        columns = {name: att.encoder.column or name for name, att in config.model.modalities.items()
                   if att.encoder is not None}
        generator = torch.Generator().manual_seed(config.train.seed)
        loaders: dict[str, DataLoader | None] = {}
        for split in splits:
            loaded = load_rows(config, split)
            if loaded is None:
                continue
            rows, base_dir, source = loaded
            dataset = GenerationDataset(rows, processors, columns=columns, base_dir=base_dir, source=source,
                                        on_error=config.data.on_error)
            is_train = split == "train"
            loaders[split] = DataLoader(
                dataset, batch_size=config.data.batch_size if is_train else config.data.eval_batch_size,
                shuffle=is_train, generator=generator if is_train else None, num_workers=config.data.num_workers,
                persistent_workers=config.data.num_workers > 0, collate_fn=dataset.collate)
        if "train" in splits and loaders.get("train") is None:
            raise DataError(f"{self.name} training needs a train split: set data.name or data.train")
        if not loaders:
            raise DataError(f"config.data provides none of the splits {list(splits)}")
        return PreparedData(processors, loaders, [])

    # ------------------------------------------------------------------------------------------ objective

    def prepare_batch(self, model: nn.Module, batch: Any) -> Any:
        """Processed samples → the model's GenerationBatch (tokenised once, before counting answer tokens)."""
        return model.as_batch(batch) if hasattr(model, "as_batch") else batch

    # ------------------------------------------------------------------------------------------ metrics

    def validate(self, model, loader, device, autocast=None, config=None) -> dict[str, float]:
        """Mean loss per answer token over the split, and the task's quick metric (``generation_eval``) on the
        first ``generate.validate_samples`` rows, decoded greedily."""
        from .generation_eval import quick_metric, token_mean_loss

        metrics = {"loss": token_mean_loss(model, loader, device, autocast)}
        count = 64 if config is None else config.generate.validate_samples
        if count:
            kwargs = {"max_new_tokens": 32} if config is None else config.generate.generate_kwargs()
            metrics.update(quick_metric(self.name, model, loader, device, count, kwargs))
        return metrics

    # ------------------------------------------------------------------------------------------ predictions

    def postprocessor(self, model, *, model_dir=None, threshold=0.5, classnames=None, templates=None):
        """Generated text per sample (:class:`~.predictions.GenerationPostprocessor`, the saved decoding defaults).
        Raises PredictionError for ``classnames`` / ``templates`` (zero-shot options of alignment models)."""
        from .predictions import GenerationPostprocessor, PredictionError

        if classnames or templates:
            raise PredictionError(f"--classes / --template (classnames / templates) apply to alignment models "
                                  f"(zero-shot); a {self.name} model generates text")
        return GenerationPostprocessor(model, self.name)

    def test_metrics(self, model, loader, config, device="cpu", context=None) -> dict[str, Any]:
        """The task's metrics on the test split with bootstrap CIs, per question type and against the blind
        baseline (VQA), generation efficiency, and a few examples."""
        from .generation_eval import evaluate_generation

        train = load_rows(config, "train") if self.name == "vqa" else None
        return evaluate_generation(self.name, model, loader, device=device, generate=config.generate,
                                   train_rows=None if train is None else train[0])


@TASKS.register("captioning")
class CaptioningTask(GenerationTask):
    """image or audio → a description (BLEU, CIDEr-D, ROUGE-L, METEOR)"""

    name = "captioning"


@TASKS.register("vqa")
class VqaTask(GenerationTask):
    """attachment + question → a short answer (VQA accuracy, exact match, blind baseline)"""

    name = "vqa"


@TASKS.register("transcription")
class TranscriptionTask(GenerationTask):
    """audio → its transcript (word error rate)"""

    name = "transcription"


@TASKS.register("chat")
class ChatTask(GenerationTask):
    """multi-turn conversations with image / audio attachments (exact match of the last answer)"""

    name = "chat"
