"""The alignment task: dual / multi-tower contrastive embedding (CLIP, SigLIP, ALBEF's ITM / MLM, ImageBind's
every-pair training) for retrieval and zero-shot classification.

Model: one encoder + projection per modality into one L2-normalised space (``models.AlignmentModel``). Objectives:
the weighted sum of the configured ``model.objectives`` over modality pairs; they are built by the aligner from the
config and live inside it because ITM / MLM carry trained heads and the logit scale is a parameter (ALBEF, BLIP), so
the model's output already holds the loss and its per-item terms. Validation: mean loss and mean R@1 (class-level
with labels, else instance-level) plus instance-level mean R@1. Test: retrieval in both directions for every pair +
zero-shot. Saved: the model section and the zero-shot record (class names + templates, config section
``zeroshot``), so Predictor labels an image or a recording with the classes it was evaluated with.

Labels are optional (pure pair data); when present, samples of the same label count as positives of each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError, RunConfig
from ..models.aligner import AlignmentModel
from ..registry import TASKS
from .base import PreparedData, Task


@TASKS.register("alignment")
class AlignmentTask(Task):
    """dual / multi-tower contrastive embedding (clip, siglip, itm, mlm): retrieval and zero-shot"""

    name = "alignment"
    report_kind = "alignment"

    def build_model(self, config: RunConfig, labels: list[str]) -> AlignmentModel:
        return AlignmentModel(config.model)

    def load_model(self, directory: Path, payload: dict[str, Any], map_location: str = "cpu", *,
                   trust_remote_code: bool = False) -> nn.Module:
        return AlignmentModel.from_pretrained(directory, map_location=map_location,
                                              trust_remote_code=trust_remote_code)

    def describe(self, model: nn.Module, config: RunConfig, labels: list[str]) -> str:
        objectives = " + ".join(f"{o.weight:g}·{o.name}" for o in config.model.objectives)
        counts = model.parameter_counts()
        return (f"alignment model: {', '.join(model.modality_names)} → {config.model.embed_dim}-d | {objectives} | "
                f"params {counts['total']:,} total, {counts['trainable']:,} trainable")

    def on_built(self, model: nn.Module, config: RunConfig, labels: list[str]) -> dict[str, Any]:
        class_names = default_class_names(config, labels) if labels else config.zeroshot.classnames
        model.zeroshot = zeroshot_record(config, class_names)  # saved with best/ for predict / Predictor
        return {"labels": labels, "class_names": class_names}

    def prepare_data(self, config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                     processors: dict[str, Any] | None = None) -> PreparedData:
        """Processors, loaders and the label list ([] for unlabelled pair data) of the configured splits.
        Raises DataError when training asks for no train split or the data provides none of ``splits``."""
        from ..data import MultimodalDataset, build_processors, collect_labels, load_split_rows, read_manifest
        from ..data.errors import DataError
        from ..data.manifest import validate_rows

        processors = processors or build_processors(config.model.modalities)
        rows_by_split = {}
        for split in splits:
            if config.data.name:
                rows = load_split_rows(config, split)
            else:
                path = getattr(config.data, split, None)
                rows = None if not path else read_manifest(path, config.model.modalities, config.data.label_column,
                                                           config.data.id_column, require_label=False,
                                                           limit=config.data.limit)
            if rows is not None:
                rows_by_split[split] = rows
        if "train" in splits and "train" not in rows_by_split:
            raise DataError("alignment training needs a train split: set data.name or data.train")
        if not rows_by_split:
            raise DataError(f"config.data provides none of the splits {list(splits)}")
        if config.data.name:  # a built-in set knows its labels; a small subset may miss some of them
            from ..data import get_dataset

            labels = list(get_dataset(config.data.name).labels)
        else:
            labels = collect_labels(rows_by_split.get("train") or [r for rows in rows_by_split.values() for r in rows])
        label_to_index = {label: i for i, label in enumerate(labels)}
        generator = torch.Generator().manual_seed(config.train.seed)
        loaders: dict[str, DataLoader | None] = {}
        for split, rows in rows_by_split.items():
            kept, problems = validate_rows(rows, processors, labels or None, config.data.on_error,
                                           require_label=False, source=f"{split} split")
            dataset = MultimodalDataset(kept, processors, label_to_index)
            dataset.skipped = problems
            is_train = split == "train"
            loaders[split] = DataLoader(
                dataset, batch_size=config.data.batch_size if is_train else config.data.eval_batch_size,
                shuffle=is_train, generator=generator if is_train else None, num_workers=config.data.num_workers,
                persistent_workers=config.data.num_workers > 0, collate_fn=dataset.collate)
        return PreparedData(processors, loaders, labels)

    def validate(self, model, loader, device, autocast=None, config=None) -> dict[str, float]:
        """Mean val loss, and (``eval.retrieval_metric``) mean R@1 over every retrieval direction (class-level
        with labels, else instance-level) → val_retrieval_R@1, plus the instance-level mean R@1 (the number
        ``polymodal eval`` reports as instance_mean_R@1) → val_instance_R@1."""
        from ..metrics.alignment import evaluate_alignment

        report = evaluate_alignment(model, loader, device=device, ks=(1,), with_loss=True, zeroshot=False,
                                    instance=True)
        metrics = {"loss": report["loss"]}
        if config is None or config.eval.retrieval_metric:
            metrics["retrieval_R@1"] = report["summary"]["mean_R@1"]
            metrics["instance_R@1"] = report["summary"]["instance_mean_R@1"]
        return metrics

    def test_metrics(self, model, loader, config, device="cpu", context=None) -> dict[str, Any]:
        """Retrieval (instance and class level) for every pair and direction + zero-shot on the class names."""
        from ..metrics.alignment import evaluate_alignment

        class_names = (context or {}).get("class_names")
        return evaluate_alignment(model, loader, device=device, ks=config.eval.ks, class_names=class_names,
                                  templates=config.eval.templates or None)

    def postprocessor(self, model, *, model_dir=None, threshold=0.5, classnames=None, templates=None):
        """Zero-shot label + probabilities of image / audio inputs against ``classnames`` × ``templates`` (default:
        the ``zeroshot`` record saved with the model), or their embeddings (``tasks.zeroshot``). ``threshold`` does
        not apply (zero-shot probabilities are a softmax over the classes)."""
        from .zeroshot import AlignmentPostprocessor

        return AlignmentPostprocessor(model, model_dir, classnames, templates)


def default_class_names(config: RunConfig, labels: list[str]) -> list[str]:
    """Zero-shot class names in label order: ``zeroshot.classnames`` (or ``eval.class_names``), else the words of
    the built-in spoken digits, else the labels. Raises ConfigError when the count differs from the labels'."""
    if config.eval.class_names is not None:
        if len(config.eval.class_names) != len(labels):
            raise ConfigError(f"eval.class_names has {len(config.eval.class_names)} names for {len(labels)} labels "
                              f"{labels}")
        return list(config.eval.class_names)
    if config.data.name == "spoken-digits":
        from ..data.builtin.spoken_digits import WORDS

        return [WORDS[int(label)] for label in labels]
    return list(labels)


def zeroshot_record(config: RunConfig, class_names: list[str] | None) -> dict[str, Any] | None:
    """What the model saves for zero-shot prediction: class names and, per non-text modality, the templates
    (configured or the kind's defaults). None when there are no class names (unlabelled pair data) or no text
    modality to embed them."""
    from ..metrics.zeroshot import default_templates

    kinds = {name: mcfg.kind for name, mcfg in config.model.modalities.items()}
    if not class_names or "text" not in kinds.values():
        return None
    templates = {name: list(config.eval.templates.get(name) or default_templates(kind))
                 for name, kind in kinds.items() if kind != "text"}
    return {"classnames": list(class_names), "templates": templates}
