"""``polymodal serve``: load a model (and an index), check the bind address, run the app under uvicorn.

    polymodal serve runs/x                                   # http://127.0.0.1:8000  (page at /, API docs at /docs)
    polymodal serve runs/align --index runs/align/index      # + POST /v1/retrieve
    polymodal serve runs/x --host 0.0.0.0 --api-key "$KEY"   # on the network: explicit --host, bearer token
    polymodal serve runs/vqa --max-new-tokens 128            # a generation model: POST /v1/generate
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .limits import ServeError, ServeSettings, check_bind

log = logging.getLogger("polymodal.serve")
API_KEY_ENV = "POLYMODAL_API_KEY"


def require_serve_extra() -> None:
    """Raise ServeError naming the extra when FastAPI / uvicorn / python-multipart / prometheus_client are absent."""
    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("multipart", "python-multipart"),
                            ("prometheus_client", "prometheus_client")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ServeError(f"polymodal serve needs {', '.join(missing)}: pip install 'polymodal[serve]'")


def load_index(index_dir: str | os.PathLike, predictor: Any) -> tuple[Any, dict[str, Any]]:
    """The EmbeddingIndex in ``index_dir`` and its retrieval.json; ServeError when it cannot be searched with
    this model (a classifier, or embeddings of another width)."""
    from ..retrieval import RETRIEVAL_META, EmbeddingIndex

    if not predictor.can_embed:  # the model's task says whether it has an embedding space to search
        raise ServeError(f"--index {index_dir}: retrieval needs an alignment model (a shared embedding space); this "
                         f"is a {predictor.task_name} model")
    index = EmbeddingIndex.load(index_dir).build()  # build an approximate structure now, not on a first request
    meta_path = Path(index_dir) / RETRIEVAL_META
    try:
        info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as err:
        raise ServeError(f"{meta_path} cannot be read as JSON: {err}; rebuild the index") from err
    width = int(predictor.model.config.embed_dim)
    if index.dim != width:
        raise ServeError(f"--index {index_dir} holds {index.dim}-d embeddings but the model embeds into {width} "
                         "dimensions: build the index with this model (`polymodal retrieve index MODEL ...`)")
    return index, info


def build_app(model_dir: str | os.PathLike, settings: ServeSettings, index_dir: str | os.PathLike | None = None,
              overrides: list[str] | None = None, device: str = "cpu"):
    """Load the model (+ index) and return the FastAPI app; errors are PolymodalErrors naming the file."""
    require_serve_extra()
    from ...threads import apply_thread_policy
    from ..predictor import Predictor
    from .app import create_app

    predictor = Predictor(model_dir, device=device, overrides=overrides)
    # as for training (docs/PERFORMANCE.md): intra-op threads by model size when the CLI's thread policy is on
    apply_thread_policy(predictor.model)
    index, info = load_index(index_dir, predictor) if index_dir is not None else (None, None)
    return create_app(predictor, settings, index=index, index_info=info)


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.name == "polymodal.serve.access":
            return text  # already one JSON line
        line = json.dumps({"level": record.levelname.lower(), "logger": record.name, "message": text})
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)  # server side only, never sent to a client
        return line


def configure_logging(stream: Any = None) -> None:
    """polymodal.serve logs: one JSON line per record on stderr (access lines as they are)."""
    logger = logging.getLogger("polymodal.serve")
    if any(getattr(h, "_polymodal_serve", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_MessageOnly())
    handler._polymodal_serve = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run_server(model_dir: str | os.PathLike, host: str | None = None, port: int = 8000,
               index_dir: str | os.PathLike | None = None, settings: ServeSettings | None = None,
               overrides: list[str] | None = None, device: str = "cpu", host_explicit: bool | None = None) -> None:
    """Serve ``model_dir`` until interrupted. ``host`` None = 127.0.0.1; a non-loopback host must be explicit
    (``host_explicit``, default: True whenever ``host`` is given) and is warned about without an API key."""
    settings = settings or ServeSettings()
    explicit = host is not None if host_explicit is None else host_explicit
    bind, warning = check_bind(host, explicit, settings.api_key)
    if not 1 <= int(port) <= 65535:
        raise ServeError(f"--port must be 1..65535, got {port}")
    app = build_app(model_dir, settings, index_dir, overrides, device)
    configure_logging()
    if warning:
        log.warning(warning)
    import uvicorn

    log.info(f"serving {model_dir} on http://{bind}:{port} (page /, API docs /docs, metrics /metrics)")
    uvicorn.run(app, host=bind, port=int(port), access_log=False, log_level="warning", server_header=False)


__all__ = ["API_KEY_ENV", "build_app", "configure_logging", "load_index", "require_serve_extra", "run_server"]
