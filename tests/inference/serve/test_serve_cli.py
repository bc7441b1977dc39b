"""`polymodal serve`: arguments, one-line errors before anything binds, and a real uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import png_bytes

from polymodal.cli import build_parser, main
from polymodal.cli.serve import settings_from_args
from polymodal.inference.serve import ServeError
from polymodal.inference.serve.server import run_server


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_defaults_are_loopback_and_batching_on():
    args = parse("runs/x")
    settings = settings_from_args(args)
    assert args.host is None and args.port == 8000 and args.index is None
    assert (settings.max_batch, settings.max_wait_ms, settings.api_key) == (16, 5.0, None)
    assert settings.limits.max_body_bytes == 16 * 2**20 and settings.limits.max_queue == 256


def test_every_limit_is_an_option():
    args = parse("m", "--max-batch", "1", "--max-wait-ms", "0", "--max-body-mb", "0.5", "--max-image-pixels", "100",
                 "--max-audio-seconds", "2.5", "--max-text-chars", "7", "--max-queue", "3", "--timeout-s", "1.5",
                 "--api-key", "k")
    s = settings_from_args(args)
    assert (s.max_batch, s.max_wait_ms, s.api_key) == (1, 0.0, "k")
    assert (s.limits.max_body_bytes, s.limits.max_image_pixels, s.limits.max_audio_seconds, s.limits.max_text_chars,
            s.limits.max_queue, s.limits.timeout_s) == (2**19, 100, 2.5, 7, 3, 1.5)


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("POLYMODAL_API_KEY", "from-env")
    assert settings_from_args(parse("m")).api_key == "from-env"
    assert settings_from_args(parse("m", "--api-key", "flag")).api_key == "flag"


@pytest.mark.parametrize("argv, words", [
    (["--max-batch", "0"], "--max-batch"), (["--max-wait-ms", "-1"], "--max-wait-ms"),
    (["--timeout-s", "nan"], "--timeout-s"), (["--port", "x"], "--port"),
])
def test_bad_options_are_one_line_usage_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "m", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_missing_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polymodal serve: error:") and "nothing" in err and "Traceback" not in err


def test_a_classifier_with_an_index_is_refused(capsys, classifier_dir, index_dir):
    assert main(["serve", str(classifier_dir), "--index", str(index_dir)]) == 2
    assert "retrieval needs an alignment model" in capsys.readouterr().err


def test_an_index_of_another_width_is_refused(tmp_path, align_dir):
    import torch

    from polymodal.inference.retrieval import EmbeddingIndex

    EmbeddingIndex(torch.randn(4, 8)).save(tmp_path / "idx")
    with pytest.raises(ServeError, match="8-d embeddings but the model embeds into 16"):
        run_server(align_dir, index_dir=tmp_path / "idx", port=1)  # refused before anything binds


def test_a_non_loopback_host_not_given_explicitly_is_refused_before_loading(tmp_path):
    with pytest.raises(ServeError, match="refusing to bind"):
        run_server(tmp_path / "not-even-loaded", host="0.0.0.0", host_explicit=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_server_answers_on_loopback_and_logs_json(classifier_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "POLYMODAL_API_KEY": "k3y", "OMP_NUM_THREADS": "1"}
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "polymodal", "serve", str(classifier_dir), "--port", str(port),
                                 "--max-wait-ms", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start in 90 s"
            time.sleep(0.2)
        headers = {"Authorization": "Bearer k3y"}
        response = httpx.post(base + "/v1/predict", files={"photo": ("a.png", png_bytes(), "image/png")},
                              headers=headers, timeout=30)
        assert response.status_code == 200 and response.json()["modalities"] == ["photo"]
        assert httpx.post(base + "/v1/predict", json={"inputs": {"text": "x"}}, timeout=30).status_code == 401
        assert "polymodal_requests_total" in httpx.get(base + "/metrics", headers=headers, timeout=30).text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if "route" in line]
    assert {"method", "route", "status", "latency_ms", "batch_size", "ts"} <= set(access[0])
    assert ("/v1/predict", 200, 1) in {(a["route"], a["status"], a["batch_size"]) for a in access}
    assert ("/v1/predict", 401) in {(a["route"], a["status"]) for a in access}
    assert any("serving" in line.get("message", "") for line in lines)


def test_a_missing_serve_extra_is_named(monkeypatch, capsys, classifier_dir):
    monkeypatch.setitem(sys.modules, "multipart", None)  # as if python-multipart were not installed
    assert main(["serve", str(classifier_dir)]) == 2
    err = capsys.readouterr().err
    assert "python-multipart" in err and "pip install 'polymodal[serve]'" in err
