"""Limits (body 413, pixels / seconds / characters 422, queue 503, timeout 504), bearer auth and the bind rule."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import jpeg_bytes, png_bytes, wav_bytes
from fastapi.testclient import TestClient

from polymodal.errors import PolymodalError
from polymodal.inference import Predictor
from polymodal.inference.serve import (
    ServeError,
    ServeLimits,
    ServeSettings,
    check_bind,
    create_app,
    is_loopback,
)


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status and "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
def limited(classifier_dir):
    limits = ServeLimits(max_body_bytes=300_000, max_image_pixels=600, max_audio_seconds=1.0, max_text_chars=50)
    with TestClient(create_app(Predictor(classifier_dir), ServeSettings(limits=limits))) as client:
        yield client


# ------------------------------------------------------------------------------------------------------ body


def test_body_over_the_limit_is_413_from_content_length(limited):
    body = error_of(limited.post("/v1/predict", files={"photo": ("big.png", b"\x00" * 400_000, "image/png")}), 413)
    assert body["field"] == "body" and body["limit"] == {"name": "max_body_bytes", "value": 300_000}
    assert "300,000" in body["message"]


def test_body_over_the_limit_is_413_when_streamed_without_length(limited):
    def chunks():  # chunked transfer: no Content-Length to check up front
        for _ in range(400):
            yield b"x" * 1000

    response = limited.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert error_of(response, 413)["code"] == "body_too_large"


def test_body_under_the_limit_passes(limited):
    assert limited.post("/v1/predict", json={"inputs": {"text": "x" * 50}}).status_code == 200


# ---------------------------------------------------------------------------------------- pixels, seconds, text


@pytest.mark.parametrize("make, kind", [(lambda: png_bytes(30, 30), "png"), (lambda: jpeg_bytes(25, 40), "jpeg")])
def test_image_over_the_server_pixel_limit_is_422_naming_field_and_limit(limited, make, kind):
    body = error_of(limited.post("/v1/predict", files={"image": (f"x.{kind}", make(), "image/png")}), 422)
    assert body["code"] == "limit_exceeded" and body["field"] == "image"
    assert body["limit"] == {"name": "max_image_pixels", "value": 600} and "max_image_pixels=600" in body["message"]


def test_image_limit_also_applies_to_base64_json(limited):
    data = base64.b64encode(png_bytes(40, 40)).decode()
    body = error_of(limited.post("/v1/predict", json={"inputs": {"photo": data}}), 422)
    assert body["field"] == "photo" and body["limit"]["name"] == "max_image_pixels"
    assert "1,600 pixels" in body["message"]


def test_image_at_the_limit_passes(limited):
    assert limited.post("/v1/predict", files={"image": ("x.png", png_bytes(20, 30), "image/png")}).status_code == 200


def test_the_models_own_smaller_cap_is_named_when_it_binds(classifier_dir):
    with TestClient(create_app(Predictor(classifier_dir))) as client:  # server default 16 M, model cap 20,000
        body = error_of(client.post("/v1/predict", files={"photo": ("x.png", png_bytes(150, 150), "image/png")}), 422)
    assert body["limit"] == {"name": "max_pixels", "value": 20_000} and "photo processor" in body["message"]


@pytest.mark.parametrize("seconds, rate", [(1.5, 8000), (1.2, 16000), (2.0, 44100)])
def test_audio_over_the_seconds_limit_is_422(limited, seconds, rate):
    body = error_of(limited.post("/v1/predict", files={"voice": ("a.wav", wav_bytes(seconds, rate), "audio/wav")}), 422)
    assert body["code"] == "limit_exceeded" and body["field"] == "voice"
    assert body["limit"] == {"name": "max_audio_seconds", "value": 1.0} and f"{seconds:.2f} s" in body["message"]


def test_audio_under_the_limit_passes(limited):
    assert limited.post("/v1/predict", files={"voice": ("a.wav", wav_bytes(0.9), "audio/wav")}).status_code == 200


@pytest.mark.parametrize("send", [
    lambda c, t: c.post("/v1/predict", json={"inputs": {"caption": t}}),
    lambda c, t: c.post("/v1/predict", data={"text": t}),
    lambda c, t: c.post("/v1/predict", data={"text": t}, files={"photo": ("x.png", png_bytes(10, 10), "image/png")}),
])
def test_text_over_the_character_limit_is_422(limited, send):
    body = error_of(send(limited, "é" * 51), 422)
    assert body["limit"] == {"name": "max_text_chars", "value": 50} and "51 characters" in body["message"]
    assert send(limited, "é" * 50).status_code == 200


def test_limits_must_be_positive():
    with pytest.raises(ServeError, match="max_text_chars"):
        ServeLimits(max_text_chars=0)
    with pytest.raises(ServeError, match="timeout_s"):
        ServeLimits(timeout_s=float("nan"))
    with pytest.raises(ServeError, match="--max-batch"):
        ServeSettings(max_batch=0)
    assert issubclass(ServeError, PolymodalError)


# ------------------------------------------------------------------------------------------- queue and timeout


class Gate:
    """Wraps predict_batch so the worker blocks until released: a slow or busy model."""

    def __init__(self, predictor):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.inner = predictor.predict_batch
        predictor.predict_batch = self

    def __call__(self, samples):
        self.entered.set()
        assert self.release.wait(20)
        return self.inner(samples)


def test_a_full_queue_is_503_with_retry_after(classifier_dir):
    predictor = Predictor(classifier_dir)
    gate = Gate(predictor)
    app = create_app(predictor, ServeSettings(max_batch=1, max_wait_ms=0, limits=ServeLimits(max_queue=1)))
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        send = lambda: client.post("/v1/predict", json={"inputs": {"text": "a cat"}})  # noqa: E731
        running = pool.submit(send)
        assert gate.entered.wait(10)  # the worker is busy with the first request
        waiting = pool.submit(send)
        deadline = time.monotonic() + 10
        while app.state.batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = send()  # the queue holds max_queue=1 already
        gate.release.set()
        assert running.result(10).status_code == 200 and waiting.result(10).status_code == 200
    body = error_of(refused, 503)
    assert body["code"] == "overloaded" and body["limit"] == {"name": "max_queue", "value": 1}
    assert refused.headers["retry-after"] == "1"


def test_a_request_past_its_timeout_is_504_and_the_server_recovers(classifier_dir):
    predictor = Predictor(classifier_dir)
    gate = Gate(predictor)
    app = create_app(predictor, ServeSettings(max_batch=1, limits=ServeLimits(timeout_s=0.3)))
    with TestClient(app) as client:
        slow = client.post("/v1/predict", json={"inputs": {"text": "a cat"}})
        gate.release.set()
        body = error_of(slow, 504)
        assert body["code"] == "timeout" and body["limit"] == {"name": "timeout_s", "value": 0.3}
        assert client.post("/v1/predict", json={"inputs": {"text": "a cat"}}).status_code == 200


# ------------------------------------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def secured(classifier_dir):
    with TestClient(create_app(Predictor(classifier_dir), ServeSettings(api_key="s3cret"))) as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                                     {"Authorization": "Basic czNjcmV0"}])
def test_without_the_right_bearer_token_v1_and_metrics_are_401(secured, headers):
    for method, path in (("get", "/v1/model"), ("post", "/v1/predict"), ("get", "/metrics")):
        response = getattr(secured, method)(path, headers=headers, **({"json": {"inputs": {"text": "x"}}}
                                                                         if method == "post" else {}))
        body = error_of(response, 401)
        assert body["code"] == "unauthorized" and "Bearer" in body["message"] and "s3cret" not in response.text
        assert response.headers["www-authenticate"] == "Bearer"


def test_with_the_bearer_token_everything_works(secured):
    headers = {"Authorization": "Bearer s3cret"}
    assert secured.get("/v1/model", headers=headers).json()["auth"] is True
    assert secured.post("/v1/predict", json={"inputs": {"text": "x"}}, headers=headers).status_code == 200
    assert secured.get("/metrics", headers=headers).status_code == 200


def test_page_health_and_docs_stay_open(secured):
    for path in ("/", "/health", "/docs", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


# ------------------------------------------------------------------------------------------------- bind rule


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "LOCALHOST"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.org", "my-host"])
def test_non_loopback_addresses(host):
    assert not is_loopback(host)


def test_the_default_is_loopback():
    assert check_bind(None, explicit=False, api_key=None) == ("127.0.0.1", None)


def test_a_non_loopback_host_is_refused_unless_explicit():
    with pytest.raises(ServeError, match="refusing to bind '0.0.0.0'.*--host"):
        check_bind("0.0.0.0", explicit=False, api_key="k")


def test_an_explicit_non_loopback_host_without_api_key_warns():
    host, warning = check_bind("0.0.0.0", explicit=True, api_key=None)
    assert host == "0.0.0.0" and "--api-key" in warning
    assert check_bind("0.0.0.0", explicit=True, api_key="k") == ("0.0.0.0", None)
    assert check_bind("127.0.0.1", explicit=True, api_key=None) == ("127.0.0.1", None)
