"""Dynamic batching changes nothing but speed: a batched result equals the one-by-one Predictor result, and one
bad sample in a batch fails only its own request."""

from __future__ import annotations

import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import jpeg_bytes, png_bytes, wav_bytes
from fastapi.testclient import TestClient

from polymodal.data import DataError
from polymodal.inference import Predictor
from polymodal.inference.serve import ServeSettings, create_app
from polymodal.inference.serve.engine import ModelRunner


def bad_idat_png() -> bytes:
    """A PNG whose every chunk CRC is right (so the header check and verify() pass) but whose pixel data is not
    zlib: it fails only when decoded, i.e. inside the batch."""
    data = png_bytes(12, 12, seed=9)
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    garbage = bytes(range(256))[:length] if length <= 256 else b"\xff" * length
    chunk = struct.pack(">I", length) + b"IDAT" + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    return data[:start] + chunk + data[start + 12 + length:]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {}
    for i in range(4):
        files[f"img{i}"] = root / f"img{i}.png"
        files[f"img{i}"].write_bytes(png_bytes(16 + i, 20, seed=20 + i))
        files[f"clip{i}"] = root / f"clip{i}.wav"
        files[f"clip{i}"].write_bytes(wav_bytes(0.2 + 0.1 * i, seed=20 + i))
    files["jpg"] = root / "x.jpg"
    files["jpg"].write_bytes(jpeg_bytes(seed=30))
    files["bad"] = root / "bad.png"
    files["bad"].write_bytes(bad_idat_png())
    return {key: str(path) for key, path in files.items()}


def mixed_samples(media):
    """Different subsets and text lengths, so the batch pads and masks differently from each single sample."""
    return [
        {"photo": media["img0"], "voice": media["clip0"], "caption": "a small bird on a branch"},
        {"photo": media["img1"]},
        {"voice": media["clip1"], "caption": "dog"},
        {"caption": "a cat sitting on a very long and winding garden wall"},
        {"photo": media["jpg"], "voice": media["clip2"]},
        {"photo": media["img2"], "caption": "cat"},
        {"voice": media["clip3"]},
        {"photo": media["img3"], "voice": media["clip0"], "caption": "bird"},
    ]


def test_a_batch_equals_one_by_one_predictions(classifier_dir, media):
    predictor = Predictor(classifier_dir)
    samples = mixed_samples(media)
    batched = ModelRunner(predictor).run("predict", samples)
    for sample, result in zip(samples, batched):
        single = predictor.predict(sample)
        assert result.label == single.label and result.modalities == single.modalities
        assert result.probabilities == pytest.approx(single.probabilities, abs=1e-6)


def test_batched_embeddings_equal_one_by_one(align_dir, media):
    predictor = Predictor(align_dir)
    samples = [{"photo": media["img0"]}, {"caption": "a dog"}, {"voice": media["clip1"], "caption": "a bird"},
               {"photo": media["jpg"], "voice": media["clip3"]}]
    batched = ModelRunner(predictor).run("embed", samples)
    for sample, result in zip(samples, batched):
        single = predictor.embed(sample)
        assert set(result) == set(single) == set(sample)
        for name in sample:
            torch.testing.assert_close(result[name], single[name], atol=1e-6, rtol=0)


def test_a_sample_that_fails_inside_a_batch_fails_alone(classifier_dir, media):
    predictor = Predictor(classifier_dir)
    good = mixed_samples(media)[:3]
    samples = [good[0], {"photo": media["bad"]}, good[1], {"photo": media["img0"] + ".missing"}, good[2]]
    results = ModelRunner(predictor).run("predict", samples)
    assert isinstance(results[1], DataError) and "bad.png" in str(results[1])
    assert isinstance(results[3], DataError) and "does not exist" in str(results[3])
    for index, sample in ((0, good[0]), (2, good[1]), (4, good[2])):
        assert results[index].probabilities == pytest.approx(predictor.predict(sample).probabilities, abs=1e-6)


def http_inputs(media):
    """The mixed samples as multipart uploads (files) + form fields (texts)."""
    requests = []
    for sample in mixed_samples(media):
        files = {k: (v.rsplit("/", 1)[-1], open(v, "rb").read()) for k, v in sample.items() if k != "caption"}
        data = {"caption": sample["caption"]} if "caption" in sample else {}
        requests.append((files, data))
    return requests


def test_concurrent_http_requests_are_batched_and_equal_single_predictions(classifier_dir, media):
    predictor = Predictor(classifier_dir)
    app = create_app(predictor, ServeSettings(max_batch=8, max_wait_ms=1000))
    requests = http_inputs(media)
    inner, calls = predictor.predict_batch, []

    def first_waits_for_the_rest(samples):  # hold the first forward pass until the other requests queue up
        calls.append(len(samples))
        deadline = time.monotonic() + 30
        while len(calls) == 1 and app.state.batcher.depth + len(samples) < len(requests):
            assert time.monotonic() < deadline, "the other requests never reached the queue"
            time.sleep(0.01)
        return inner(samples)

    predictor.predict_batch = first_waits_for_the_rest
    with TestClient(app) as client, ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client.post, "/v1/predict", files=files or None, data=data or None)
                   for files, data in requests]
        responses = [f.result(60) for f in futures]
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert sum(calls) == len(requests) and {b["batch_size"] for b in bodies} <= set(calls)
    assert len(calls) <= 2 and max(calls) > 1  # the first pass, then all the others together in ONE more
    assert "polymodal_batch_size_count" in metrics
    for body, sample in zip(bodies, mixed_samples(media)):
        single = predictor.predict(sample)
        assert body["label"] == single.label and body["modalities"] == single.modalities
        assert body["probabilities"] == pytest.approx(single.probabilities, abs=1e-6)


def test_a_corrupt_upload_in_a_concurrent_batch_gets_its_own_422(classifier_dir, media):
    predictor = Predictor(classifier_dir)
    app = create_app(predictor, ServeSettings(max_batch=4, max_wait_ms=1000))
    bad = open(media["bad"], "rb").read()
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/v1/predict", files={"photo": ("p.png", data)})
                   for data in (open(media["img0"], "rb").read(), bad, open(media["img1"], "rb").read(), bad)]
        responses = [f.result(60) for f in futures]
    assert [r.status_code for r in responses] == [200, 422, 200, 422]
    for response in responses[1::2]:
        error = response.json()["error"]
        assert error["field"] == "photo" and "/tmp/" not in error["message"], error
    expected = predictor.predict(photo=media["img1"])
    assert responses[2].json()["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
