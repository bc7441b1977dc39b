"""``export_onnx(model_dir, out_dir)``: a saved polymodal model → ONNX graphs + the settings to feed them.

The export directory holds:

- ``classifier.onnx`` (a MultimodalModel: logits [B, C]) or ``<modality>.onnx`` per tower (an AlignmentModel:
  unit-norm embedding [B, E]); inputs per modality ``<name>.<key>`` (the processor's tensors) + ``<name>.present``
  [B] bool (see :mod:`.graphs`), dynamic batch axis and dynamic sequence / time axes for text and audio;
- ``processors.json``: every processor's options and resolved values, so a runtime without Python can
  preprocess (:func:`.inputs.processor_settings`); ``hf/<name>/`` tokenizer / feature-extractor files if any;
- ``manifest.json``: graphs with input / output names, dtypes and shapes, labels, the model's ``task``
  ("classification" / "alignment", as recorded in its config.json) and a classifier's ``head_task`` (multiclass /
  binary / multilabel), opset, precision, and the parity each graph reached against PyTorch when it was written.
  (Exports written before the task field held the head task, or "alignment", in ``task``; the runtime reads both.)

It is written into a temp folder next to ``out_dir`` and renamed into place, so a crash never leaves half an
export. :class:`.runtime.OnnxPredictor` runs it with onnxruntime.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter (torch.export)
refuses the encoders' data-dependent input checks (e.g. text token ids against the vocabulary); the tracer records
the path a valid input takes instead, and each graph is then run on other inputs (another batch size, other
lengths, absent modalities) and compared with PyTorch, so a path that does not hold for them fails the export
(``ExportError``) instead of shipping wrong numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import __version__
from ...errors import PolymodalError
from ...files import apply_plain_modes, make_temp_dir
from ...tasks import task_of
from ..predictor import check_finite_model, load_model
from .graphs import ClassifierGraph, GraphSpec, TowerGraph, describe_inputs, flatten_batch, onnx_dynamic_axes
from .inputs import check_sample_sets, make_batch, processor_settings, trace_samples

FORMAT = "polymodal-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROCESSORS_NAME = "processors.json"
DEFAULT_OPSET = 17  # LayerNormalization is native from 17; onnxruntime ≥ 1.18 runs it
DEFAULT_ATOL = 1e-4


class ExportError(PolymodalError):
    """A model (part) that cannot be exported or whose exported graph does not match PyTorch; says why."""


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime) modules, or ExportError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the onnx and onnxruntime packages ({err.name} is missing): "
            "pip install 'polymodal[export]'"
        ) from err
    return onnx, onnxruntime


def components(model: nn.Module, names: list[str]) -> str:
    """"image=image_vit, text=text_transformer, fusion=transformer": what an error names."""
    from ...encoders import resolve_encoder_name

    parts = [f"{name}={resolve_encoder_name(model.config.modalities[name])}" for name in names]
    fusion = getattr(getattr(model.config, "fusion", None), "name", None)
    if fusion and len(names) > 1:
        parts.append(f"fusion={fusion}")
    finetune = getattr(model, "finetune", None) or {}
    methods = sorted({finetune.get("default", "full"), *(finetune.get("encoders") or {}).values()} - {"full", "frozen"})
    if methods:
        parts.append(f"finetune={'+'.join(methods)}")
    return ", ".join(parts)


def entry_points(model: nn.Module) -> list[tuple[str, nn.Module, list[str], dict]]:
    """(entry, wrapper module, modalities, output spec) per graph to write."""
    names = list(model.modality_names)
    keys = {name: list(model.processors[name].empty()) for name in names}
    task = task_of(model).name
    if task == "alignment":
        embed_dim = int(model.config.embed_dim)
        return [(name, TowerGraph(model, name, keys[name]).eval(), [name],
                 {"name": "embedding", "dtype": "float32", "shape": ["batch", embed_dim],
                  "meaning": "unit-norm embedding; zeros where present is False"}) for name in names]
    if task != "classification":
        raise ExportError(f"a {task} model cannot be exported to ONNX yet (classification and alignment models can)")
    layout = [(name, keys[name]) for name in names]
    return [("classifier", ClassifierGraph(model, layout).eval(), names,
             {"name": "logits", "dtype": "float32", "shape": ["batch", len(model.labels)],
              "meaning": f"{model.task} logits before softmax / sigmoid, columns in the order of labels"})]


def _session(onnxruntime: Any, path: Path) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, torch.get_num_threads()))
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(session: Any, spec: GraphSpec, batch: Any) -> Any:
    """Run ``session`` on ``batch`` (a Batch holding the graph's modalities) → its first output, numpy."""
    feeds = {}
    for item in spec.inputs:
        tensor = batch.present[item.modality] if item.key == "present" else batch.inputs[item.modality][item.key]
        feeds[item.name] = tensor.numpy()
    return session.run(None, feeds)[0]


def _torch_output(wrapper: nn.Module, batch: Any) -> torch.Tensor:
    with torch.no_grad():
        return wrapper(*flatten_batch(batch, wrapper.layout))


def _export_graph(wrapper: nn.Module, spec: GraphSpec, args: tuple, path: Path, opset: int, what: str) -> None:
    try:
        with warnings.catch_warnings():
            # TracerWarnings name every Python branch the trace fixed; the check after export is what counts.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, args, str(path), input_names=spec.input_names, output_names=[o["name"] for o in spec.outputs],
                dynamic_axes=onnx_dynamic_axes(spec), opset_version=opset, dynamo=False, do_constant_folding=True,
            )
    except Exception as err:  # any tracer / symbolic failure: say which part and why, not a 40-line traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{what} cannot be exported to ONNX (opset {opset}): {type(err).__name__}: {first}") from err


def check_graph(session: Any, wrapper: nn.Module, spec: GraphSpec, model: nn.Module, what: str,
                atol: float) -> float:
    """Max abs difference between the graph and PyTorch over :func:`.inputs.check_sample_sets`; ExportError over
    ``atol``, or when the graph fails on them (e.g. a length the trace fixed)."""
    kinds = {name: model.config.modalities[name].kind for name in spec.modalities}
    worst = 0.0
    for samples in check_sample_sets(kinds, model.processors):
        batch = make_batch(model.processors, spec.modalities, samples)
        expected = _torch_output(wrapper, batch).numpy()
        try:
            got = run_graph(session, spec, batch)
        except Exception as err:
            raise ExportError(
                f"{what}: the exported graph fails on a batch of {len(samples)} unlike the traced one "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the model's code fixes a "
                "shape the tracer cannot keep symbolic"
            ) from err
        if got.shape != expected.shape:
            raise ExportError(f"{what}: the exported graph gives shape {got.shape}, PyTorch {expected.shape}")
        diff = float(abs(got - expected).max()) if expected.size else 0.0
        if not diff <= atol:  # also catches NaN
            raise ExportError(
                f"{what}: the exported graph differs from PyTorch by {diff:.3g} (> {atol:g}) on a batch of "
                f"{len(samples)} with absent modalities / other lengths: the model takes a data-dependent Python "
                "branch the tracer fixed at export time, so this part cannot be exported faithfully"
            )
        worst = max(worst, diff)
    return worst


def _modality_record(model: nn.Module, name: str) -> dict[str, Any]:
    """The modality's config as plain data, ``pretrained`` pointing at the copied hf/<name>/ files."""
    record = dataclasses.asdict(model.config.modalities[name])
    if record.get("pretrained"):
        record["pretrained"] = f"hf/{name}"
    return record


def _copy_hf_files(model_dir: Path, tmp: Path, names: list[str]) -> None:
    """Tokenizer / feature-extractor / HF config files (never weights: the graphs hold them)."""
    for name in names:
        source = model_dir / "hf" / name
        if not source.is_dir():
            continue
        shutil.copytree(source, tmp / "hf" / name,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt"))


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace a folder that holds something else, or any non-empty folder without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; give a folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST_NAME).is_file():
            raise ExportError(f"--out {out_dir} is a non-empty folder that is not a polymodal export; choose a new "
                              "or empty folder")
        if not overwrite:
            raise ExportError(f"--out {out_dir} already holds an export; pass overwrite=True (--overwrite) to "
                              "replace it")


def publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temp folder into place (replacing an old export only once the new one is complete)."""
    apply_plain_modes(tmp)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_graphs(model: nn.Module, model_dir: Path | None, tmp: Path, opset: int, verify: bool,
                 atol: float) -> dict[str, Any]:
    """Export every entry point of ``model`` into ``tmp`` and write manifest.json + processors.json there."""
    onnx, onnxruntime = require_onnx()
    task = task_of(model).name
    alignment = task == "alignment"
    names = list(model.modality_names)
    kinds = {name: model.config.modalities[name].kind for name in names}
    graphs, parity = {}, {}
    for entry, wrapper, modalities, output in entry_points(model):
        what = f"{entry} graph ({components(model, modalities)})"
        layout = wrapper.layout
        trace = make_batch(model.processors, modalities, trace_samples({m: kinds[m] for m in modalities},
                                                                       model.processors))
        spec = GraphSpec(entry=entry, file=f"{entry}.onnx", modalities=modalities,
                         inputs=describe_inputs(trace, layout, kinds), outputs=[output])
        path = tmp / spec.file
        try:  # a model that fails in PyTorch on its own processors' tensors is not an export problem: say so
            _torch_output(wrapper, trace)
        except Exception as err:
            raise ExportError(f"{what}: the model fails in PyTorch on its processors' inputs, so there is nothing to "
                              f"export: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
        _export_graph(wrapper, spec, flatten_batch(trace, layout), path, opset, what)
        onnx.checker.check_model(str(path))
        # The tracer drops inputs the graph never reads (e.g. the attention mask of a causal text tower that pools
        # at its end token): list only those the graph takes, so runtimes feed exactly them.
        taken = {value.name for value in onnx.load(str(path), load_external_data=False).graph.input}
        spec.inputs = [i for i in spec.inputs if i.name in taken]
        if verify:
            parity[entry] = check_graph(_session(onnxruntime, path), wrapper, spec, model, what, atol)
        graphs[entry] = spec.to_dict()
        graphs[entry]["bytes"] = path.stat().st_size
    settings = {name: processor_settings(name, kinds[name], model.processors[name]) for name in names}
    (tmp / PROCESSORS_NAME).write_text(json.dumps(settings, indent=2))
    if model_dir is not None:
        _copy_hf_files(model_dir, tmp, names)
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "polymodal_version": __version__,
        "torch_version": torch.__version__, "onnx_version": onnx.__version__, "exporter": "torchscript",
        "opset": opset, "precision": "fp32",
        "architecture": type(model).__name__, "task": task, "head_task": None if alignment else model.task,
        "labels": [] if alignment else list(model.labels),
        "modalities": {name: _modality_record(model, name) for name in names},
        "graphs": graphs, "processors": PROCESSORS_NAME,
        "parity": {"atol": atol, "max_abs_diff": parity} if verify else None,
    }
    if alignment:
        manifest["alignment"] = {"embed_dim": int(model.config.embed_dim), "logit_scale": float(model.logit_scale.detach()),
                                 "logit_bias": None if model.logit_bias is None else float(model.logit_bias.detach())}
        manifest["zeroshot"] = model.zeroshot
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_onnx(model_dir: str | os.PathLike | nn.Module, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                overwrite: bool = False, verify: bool = True, atol: float = DEFAULT_ATOL) -> dict[str, Any]:
    """Export a saved model (model or run directory, or a loaded model) to ``out_dir``; returns a report dict:
    ``{"out_dir", "architecture", "task", "head_task", "opset", "graphs": {entry: {"file", "bytes", "max_abs_diff"}},
    "bytes"}``.

    ``verify`` (default) runs each graph with onnxruntime on inputs unlike the traced ones and raises
    ExportError when it differs from PyTorch by more than ``atol`` (max abs difference of logits / embeddings).
    A model object passed in is put in eval mode (exports are for inference).
    Raises ExportError for a missing onnx / onnxruntime, an unusable ``out_dir`` (a non-empty folder needs
    ``overwrite`` and must be an earlier export), or a part that cannot export (the message names the graph, its
    encoders / fusion and the reason); FileNotFoundError-derived ExportError for a missing model.
    """
    require_onnx()
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, overwrite)
    if isinstance(model_dir, nn.Module):
        model, source = model_dir, None
    else:
        try:
            model, source = load_model(model_dir)
        except FileNotFoundError as err:
            raise ExportError(str(err)) from err
    check_finite_model(model, source or "(in memory)")
    model.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.tmp-")
    try:
        manifest = write_graphs(model, source, tmp, opset, verify, atol)
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_report(out_dir, manifest)


def export_report(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    parity = (manifest.get("parity") or {}).get("max_abs_diff", {})
    graphs = {entry: {"file": str(out_dir / g["file"]), "bytes": g["bytes"], "max_abs_diff": parity.get(entry)}
              for entry, g in manifest["graphs"].items()}
    return {"out_dir": str(out_dir), "architecture": manifest["architecture"], "task": manifest["task"],
            "head_task": manifest.get("head_task"),
            "opset": manifest["opset"], "precision": manifest["precision"], "graphs": graphs,
            "bytes": sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())}
