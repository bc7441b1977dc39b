"""Tiny saved models (a classifier, an alignment model + a gallery index, a chat model that reads images and audio)
and in-memory media files for the serving tests, and a real uvicorn server on loopback. Everything is built in
temp dirs; nothing is read from outside tests/."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install 'polymodal[serve]'")
pytest.importorskip("multipart", reason="python-multipart is not installed: pip install 'polymodal[serve]'")
pytest.importorskip("prometheus_client", reason="prometheus_client is not installed: pip install 'polymodal[serve]'")

from polymodal.config import ModelConfig, RunConfig, from_dict  # noqa: E402
from polymodal.inference import Predictor  # noqa: E402
from polymodal.inference.retrieval import EmbeddingIndex  # noqa: E402
from polymodal.models import AlignmentModel, MultimodalModel  # noqa: E402
from polymodal.models.aligner import AlignmentConfig  # noqa: E402
from polymodal.tasks import get_task  # noqa: E402

LABELS = ["bird", "cat", "dog"]
# Names differ from kinds on purpose: requests may use either ("photo" or "image").
CLASSIFIER_MODALITIES = {
    "photo": {"kind": "image", "processor": {"image_size": 16, "channels": 1, "max_pixels": 20_000}},
    "voice": {"kind": "audio", "processor": {"sample_rate": 8000, "max_seconds": 0.5, "max_seconds_file": 3.0,
                                             "n_mels": 16, "n_fft": 256, "hop_length": 80}},
    "caption": {"kind": "text", "processor": {"max_length": 12, "vocab_size": 512}},
}
CLASSES = ["cat", "dog", "bird"]
ALIGN_MODALITIES = {
    "photo": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
              "processor": {"image_size": 8, "channels": 1, "max_pixels": 5000}},
    "voice": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]},
              "processor": {"sample_rate": 8000, "max_seconds": 0.5, "n_mels": 16, "n_fft": 256, "hop_length": 80}},
    "caption": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2}, "processor": {"vocab_size": 256}},
}

# An untrained chat model (image + audio attachments, a 2-layer decoder with wide random logits so greedy decoding
# says something): built by its task like `polymodal train` does, in about two seconds on a CPU.
TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256, "initializer_range": 0.5}
CHAT_MODEL = {
    "modalities": {
        "image": {"encoder": {"kind": "image", "processor": {"image_size": 16, "max_pixels": 20_000},
                              "options": {"channels": [8, 16, 16]}}, "freeze_encoder": False},
        "audio": {"encoder": {"kind": "audio", "processor": {"sample_rate": 8000, "max_seconds": 0.5, "n_mels": 16,
                                                             "n_fft": 256, "hop_length": 80, "max_seconds_file": 3.0},
                              "options": {"channels": [8, 16]}}, "freeze_encoder": False},
    },
    "decoder": {"options": TINY_DECODER}, "tokenizer": {"vocab_size": 300},
}


def png_bytes(height: int = 20, width: int = 24, seed: int = 0, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(height: int = 20, width: int = 24, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.4, rate: int = 8000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    sf.write(buffer, (rng.standard_normal(int(seconds * rate)) * 0.2).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"modalities": CLASSIFIER_MODALITIES, "fusion": {"name": "gated", "dim": 16},
                                     "head": {"task": "multiclass", "labels": LABELS}})
    directory = tmp_path_factory.mktemp("classifier")
    MultimodalModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def align_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = AlignmentModel(from_dict(AlignmentConfig, {"modalities": ALIGN_MODALITIES, "embed_dim": 16}))
    model.zeroshot = {"classnames": CLASSES, "templates": {"photo": ["a photo of a {}."], "voice": ["someone says {}"]}}
    directory = tmp_path_factory.mktemp("align")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def gallery(tmp_path_factory):
    """Six small PNG files on disk: the items of the retrieval index."""
    root = tmp_path_factory.mktemp("gallery")
    paths = []
    for i in range(6):
        path = root / f"item{i}.png"
        path.write_bytes(png_bytes(10, 12, seed=100 + i))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, align_dir, gallery):
    """An index of the gallery's photo embeddings, as `polymodal retrieve index` writes it."""
    predictor = Predictor(align_dir)
    embeddings = predictor.embed_batch([{"photo": str(p)} for p in gallery])["photo"]
    metadata = [{"id": p.stem, "label": CLASSES[i % 3], "source": p.name} for i, p in enumerate(gallery)]
    directory = tmp_path_factory.mktemp("index")
    EmbeddingIndex(embeddings, ids=[p.stem for p in gallery], metadata=metadata).save(directory)
    (directory / "retrieval.json").write_text(json.dumps({"model_dir": str(align_dir), "modality": "photo"}))
    return directory


@pytest.fixture(scope="session")
def generation_dir(tmp_path_factory):
    """A saved chat model (task "chat": image and audio attachments) whose saved decoding default is 8 new tokens."""
    torch.manual_seed(0)
    config = from_dict(RunConfig, {"task": "chat", "data": {"name": "spoken-digits", "limit": 4}, "model": CHAT_MODEL,
                                   "generate": {"max_new_tokens": 8}})
    directory = tmp_path_factory.mktemp("chat")
    get_task("chat").build_model(config, []).save_pretrained(directory)
    return directory


class LoopbackServer:
    """uvicorn on 127.0.0.1 in a thread, for as long as the ``with`` block lasts."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
