"""Every route with good and bad inputs through FastAPI's TestClient: the numbers equal the Predictor's, and every
refusal is a JSON error naming the field (never a traceback)."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from conftest import CLASSES, LABELS, jpeg_bytes, png_bytes, wav_bytes
from fastapi.testclient import TestClient

from polymodal import __version__
from polymodal.inference import Predictor
from polymodal.inference.retrieval import EmbeddingIndex
from polymodal.inference.serve import ServeLimits, ServeSettings, create_app


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    predictor = Predictor(classifier_dir)
    app = create_app(predictor, ServeSettings(max_batch=4, max_wait_ms=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, predictor


@pytest.fixture(scope="module")
def aligner(align_dir, index_dir):
    predictor = Predictor(align_dir)
    index = EmbeddingIndex.load(index_dir)
    app = create_app(predictor, ServeSettings(max_batch=4, max_wait_ms=1), index=index,
                     index_info={"modality": "photo"})
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, predictor, index


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["status"] == status
    assert "Traceback" not in body["message"] and "/tmp/" not in body["message"]
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------------------------- info routes


def test_health_and_model_description(classifier):
    client, _ = classifier
    assert client.get("/health").json() == {"status": "ok", "queue_depth": 0}
    info = client.get("/v1/model").json()
    assert info["task"] == "classification" and info["head_task"] == "multiclass"  # the recorded task + its head
    assert info["architecture"] == "MultimodalModel"
    assert info["labels"] == LABELS and info["routes"] == ["/v1/predict"]
    by_name = {m["name"]: m for m in info["modalities"]}
    assert {n: m["kind"] for n, m in by_name.items()} == {"photo": "image", "voice": "audio", "caption": "text"}
    # the model's own caps are smaller than the server defaults here, so they are the effective limits
    assert by_name["photo"]["limits"] == {"max_image_pixels": 20_000}
    assert by_name["voice"]["limits"] == {"max_audio_seconds": 3.0}
    assert by_name["caption"]["limits"] == {"max_text_chars": 10_000, "max_tokens": 12}
    assert info["versions"]["polymodal"] == __version__ and info["versions"]["torch"] == torch.__version__
    assert info["batching"] == {"max_batch": 4, "max_wait_ms": 1} and info["auth"] is False and info["index"] is None


def test_openapi_documents_the_routes_and_both_body_forms(classifier):
    client, _ = classifier
    schema = client.get("/openapi.json").json()
    assert {"/health", "/v1/model", "/v1/predict", "/v1/embed", "/v1/retrieve", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/InputsRequest"}
    parts = body["multipart/form-data"]["schema"]["properties"]
    assert parts["photo"] == {"type": "string", "format": "binary"} and parts["caption"] == {"type": "string"}
    components = schema["components"]["schemas"]
    assert {"InputsRequest", "FileInput", "PredictResponse", "ErrorResponse", "ModelInfo"} <= set(components)
    assert client.get("/docs").status_code == 200


def test_page_is_self_contained(classifier):
    client, _ = classifier
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "/v1/predict" in html and 'id="label"' in html
    assert "http://" not in html and "https://" not in html and "<link" not in html  # no CDN, nothing fetched


# ---------------------------------------------------------------------------------------------- /v1/predict


def test_predict_multipart_equals_the_predictor(classifier, tmp_path):
    client, predictor = classifier
    image, audio = png_bytes(seed=1), wav_bytes(seed=1)
    response = client.post("/v1/predict", files={"photo": ("a.png", image, "image/png"),
                                                 "voice": ("a.wav", audio, "audio/wav")},
                           data={"caption": "a small bird"})
    assert response.status_code == 200, response.text
    body = response.json()
    (tmp_path / "a.png").write_bytes(image)
    (tmp_path / "a.wav").write_bytes(audio)
    expected = predictor.predict(photo=str(tmp_path / "a.png"), voice=str(tmp_path / "a.wav"), caption="a small bird")
    assert body["label"] == expected.label and body["modalities"] == ["photo", "voice", "caption"]
    assert list(body["probabilities"]) == LABELS
    assert body["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert body["batch_size"] == 1


@pytest.mark.parametrize("inputs", [
    {"image": "png"},                      # one modality, by kind
    {"voice": "wav", "text": "a cat"},     # a subset, name and kind mixed
    {"caption": "a dog barks"},            # text only
    {"photo": "jpeg", "audio": "wav"},
])
def test_predict_json_base64_any_subset(classifier, tmp_path, inputs):
    client, predictor = classifier
    files = {"png": png_bytes(seed=2), "jpeg": jpeg_bytes(seed=2), "wav": wav_bytes(seed=2)}
    payload, sample = {}, {}
    for key, value in inputs.items():
        if value in files:
            payload[key] = {"base64": b64(files[value]), "filename": f"x.{value}"}
            path = tmp_path / f"{key}.{value}"
            path.write_bytes(files[value])
            sample[key] = str(path)
        else:
            payload[key] = sample[key] = value
    response = client.post("/v1/predict", json={"inputs": payload})
    assert response.status_code == 200, response.text
    expected = predictor.predict(sample)
    assert response.json()["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert response.json()["modalities"] == expected.modalities


def test_predict_json_accepts_plain_base64_and_data_urls(classifier):
    client, _ = classifier
    image = png_bytes(seed=3)
    plain = client.post("/v1/predict", json={"inputs": {"photo": b64(image)}}).json()
    url = client.post("/v1/predict", json={"inputs": {"photo": "data:image/png;base64," + b64(image)}}).json()
    unpadded = client.post("/v1/predict", json={"inputs": {"photo": b64(image).rstrip("=")}}).json()
    assert plain["probabilities"] == url["probabilities"] == unpadded["probabilities"]


def test_empty_text_is_an_absent_modality(classifier):
    client, _ = classifier
    body = client.post("/v1/predict", data={"caption": "   "}, files={"photo": ("a.png", png_bytes(), "image/png")})
    assert body.status_code == 200 and body.json()["modalities"] == ["photo"]


@pytest.mark.parametrize("kwargs, status, code, field", [
    ({"json": {"inputs": {"nose": "x"}}}, 422, "unknown_modality", "nose"),
    ({"files": {"smell": ("a.png", png_bytes(), "image/png")}}, 422, "unknown_modality", "smell"),
    ({"json": {"inputs": {}}}, 422, "missing_input", "inputs"),
    ({"json": {}}, 422, "invalid_request", "inputs"),
    ({"json": {"inputs": {"caption": 3}}}, 422, "invalid_request", "caption"),
    ({"json": {"inputs": {"photo": {"base64": "x", "url": "http://x"}}}}, 422, "invalid_request", "photo"),
    ({"json": {"inputs": {"photo": "not base64!"}}}, 422, "invalid_input", "photo"),
    ({"json": {"inputs": {"caption": {"base64": b64(b"hello")}}}}, 422, "wrong_type", "caption"),
    ({"files": {"caption": ("t.txt", b"hello", "text/plain")}}, 422, "wrong_type", "caption"),
    ({"data": {"photo": "a string, not a file"}}, 422, "wrong_type", "photo"),
    ({"files": {"photo": ("a.png", b"", "image/png")}}, 422, "invalid_input", "photo"),
    ({"json": {"inputs": {"photo": b64(png_bytes()), "image": b64(png_bytes())}}}, 422, "duplicate_modality", "image"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_json", "body"),
    ({"content": b"caption=x", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type",
     "Content-Type"),
])
def test_predict_bad_requests(classifier, kwargs, status, code, field):
    client, _ = classifier
    body = error_of(client.post("/v1/predict", **kwargs), status)
    assert (body["code"], body.get("field")) == (code, field)


@pytest.mark.parametrize("name, data, words", [
    ("garbage.png", b"this is not an image at all", "not a readable image"),
    ("cut.png", png_bytes(seed=5)[:-30], "corrupt"),                 # truncated PNG: the IEND chunk / CRC missing
    ("cut.jpg", jpeg_bytes(64, 64, seed=5)[:400], "Truncated"),      # truncated JPEG stream
    ("x.gif", b"GIF89a" + b"\x00" * 20, "not a readable image"),    # a GIF header with nothing behind it
])
def test_corrupt_image_is_422_naming_the_field(classifier, name, data, words):
    client, _ = classifier
    body = error_of(client.post("/v1/predict", files={"photo": (name, data, "image/png")}), 422)
    assert body["field"] == "photo" and body["code"] == "invalid_input"
    assert words in body["message"] and f"photo ({name})" in body["message"]


@pytest.mark.parametrize("data", [b"RIFF\x00\x00\x00\x00WAVEjunk", b"\x00" * 64, wav_bytes()[:30]])
def test_corrupt_audio_is_422_naming_the_field(classifier, data):
    client, _ = classifier
    body = error_of(client.post("/v1/predict", files={"audio": ("bad.wav", data, "audio/wav")}), 422)
    assert body["field"] == "audio" and "bad.wav" in body["message"]


def test_a_file_in_a_format_the_model_refuses(classifier_dir):
    predictor = Predictor(classifier_dir, overrides=["model.modalities.photo.processor.formats=[PNG]"])
    with TestClient(create_app(predictor)) as client:
        body = error_of(client.post("/v1/predict", files={"photo": ("a.jpg", jpeg_bytes(), "image/jpeg")}), 422)
    assert body["field"] == "photo" and "JPEG" in body["message"] and "PNG" in body["message"]


def test_wrong_method_and_unknown_route_are_json(classifier):
    client, _ = classifier
    assert error_of(client.get("/v1/predict"), 405)["code"] == "method_not_allowed"
    assert error_of(client.get("/v2/nothing"), 404)["code"] == "not_found"


def test_classifier_has_no_embed_or_retrieve(classifier):
    client, _ = classifier
    assert "alignment model" in error_of(client.post("/v1/embed", json={"inputs": {"caption": "x"}}), 400)["message"]
    assert error_of(client.post("/v1/retrieve", json={"inputs": {"caption": "x"}}), 400)["code"] == "unsupported"


# ------------------------------------------------------------------------------------- alignment: predict/embed


def test_alignment_predict_is_the_zero_shot_label(aligner, tmp_path):
    client, predictor, _ = aligner
    image = png_bytes(12, 10, seed=7)
    body = client.post("/v1/predict", files={"image": ("q.png", image, "image/png")}).json()
    (tmp_path / "q.png").write_bytes(image)
    expected = predictor.predict(photo=str(tmp_path / "q.png"))
    assert list(body["probabilities"]) == CLASSES and body["label"] == expected.label
    assert body["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    info = client.get("/v1/model").json()
    assert info["task"] == "alignment" and info["head_task"] is None and info["labels"] == CLASSES
    assert info["routes"] == ["/v1/predict", "/v1/embed", "/v1/retrieve"]
    assert info["index"] == {"items": 6, "dim": 16, "modality": "photo", "backend": "exact"}


def test_alignment_predict_refuses_text_and_points_to_embed(aligner):
    client, _, _ = aligner
    body = error_of(client.post("/v1/predict", json={"inputs": {"text": "a cat"}}), 422)
    assert body["field"] == "text" and "/v1/embed" in body["message"] and "/v1/retrieve" in body["message"]


def test_embed_equals_the_predictor_and_is_unit_norm(aligner, tmp_path):
    client, predictor, _ = aligner
    audio = wav_bytes(0.3, seed=8)
    response = client.post("/v1/embed", files={"voice": ("v.wav", audio, "audio/wav")}, data={"text": "a dog"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["embeddings"]) == {"voice", "caption"} and body["dim"] == 16
    (tmp_path / "v.wav").write_bytes(audio)
    expected = predictor.embed(voice=str(tmp_path / "v.wav"), caption="a dog")
    for name, vector in body["embeddings"].items():
        assert vector == pytest.approx(expected[name].tolist(), abs=1e-6)
        assert float(torch.tensor(vector).norm()) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- /v1/retrieve


def test_retrieve_returns_the_indexs_top_k(aligner, gallery):
    client, predictor, index = aligner
    query = gallery[3].read_bytes()  # a gallery item itself: it must come back first, with cosine 1
    response = client.post("/v1/retrieve", files={"photo": ("q.png", query, "image/png")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query_modality"] == "photo" and [i["rank"] for i in body["items"]] == [1, 2, 3]
    assert body["items"][0]["id"] == "item3" and body["items"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores, rows = index.search(predictor.embed(photo=str(gallery[3]))["photo"], k=3)
    assert [i["id"] for i in body["items"]] == [index.ids[r] for r in rows[0].tolist()]
    assert [i["score"] for i in body["items"]] == pytest.approx(scores[0].tolist(), abs=1e-6)
    assert body["items"][0]["label"] == CLASSES[0] and body["items"][0]["source"] == "item3.png"


def test_retrieve_by_text_json(aligner):
    client, predictor, index = aligner
    body = client.post("/v1/retrieve", json={"inputs": {"text": "a cat"}, "k": 6}).json()
    assert len(body["items"]) == 6 and body["query_modality"] == "caption"
    scores, _ = index.search(predictor.embed(caption="a cat")["caption"], k=6)
    assert [i["score"] for i in body["items"]] == pytest.approx(scores[0].tolist(), abs=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    ({"json": {"inputs": {"text": "a cat"}, "k": 0}}, "k"),
    ({"json": {"inputs": {"text": "a cat"}, "k": "many"}}, "k"),
    ({"data": {"text": "a cat", "k": "-1"}}, "k"),
    ({"json": {"inputs": {"text": "a cat", "photo": b64(png_bytes())}}}, "inputs"),
    ({"json": {"inputs": {}}}, "inputs"),
])
def test_retrieve_bad_requests(aligner, kwargs, field):
    client, _, _ = aligner
    assert error_of(client.post("/v1/retrieve", **kwargs), 422)["field"] == field


def test_alignment_without_index_has_no_retrieve(align_dir):
    with TestClient(create_app(Predictor(align_dir))) as client:
        body = error_of(client.post("/v1/retrieve", json={"inputs": {"text": "a cat"}}), 400)
        assert "--index" in body["message"]
        assert client.get("/v1/model").json()["routes"] == ["/v1/predict", "/v1/embed"]


# ------------------------------------------------------------------------------------------- log and metrics


def test_access_log_is_one_json_line_per_request(classifier, caplog):
    client, _ = classifier
    with caplog.at_level("INFO", logger="polymodal.serve.access"):
        client.post("/v1/predict", json={"inputs": {"caption": "a cat"}})
        client.post("/v1/predict", json={"inputs": {"nose": "x"}})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "polymodal.serve.access"]
    assert [(line["route"], line["status"]) for line in lines] == [("/v1/predict", 200), ("/v1/predict", 422)]
    assert lines[0]["batch_size"] == 1 and lines[1]["batch_size"] is None
    assert all(line["latency_ms"] > 0 and line["method"] == "POST" for line in lines)


def test_metrics_are_prometheus_text(classifier_dir):
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(Predictor(classifier_dir))) as client:
        for _ in range(3):
            client.post("/v1/predict", json={"inputs": {"caption": "a cat"}})
        client.post("/v1/predict", json={"inputs": {"nose": "x"}})
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("polymodal_requests_total", (("route", "/v1/predict"), ("status", "200")))] == 3
    assert samples[("polymodal_requests_total", (("route", "/v1/predict"), ("status", "422")))] == 1
    assert samples[("polymodal_batch_size_count", (("op", "predict"),))] == 3
    assert samples[("polymodal_batch_size_sum", (("op", "predict"),))] == 3
    assert samples[("polymodal_request_latency_seconds_count", (("route", "/v1/predict"),))] == 4
    assert samples[("polymodal_queue_depth", ())] == 0


def test_an_unexpected_error_is_a_json_500_without_traceback(classifier_dir, caplog):
    predictor = Predictor(classifier_dir)
    app = create_app(predictor)

    def broken(samples):
        raise RuntimeError("secret internal detail")

    predictor.predict_batch = broken  # a bug in the model code
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level("ERROR"):
        response = client.post("/v1/predict", json={"inputs": {"caption": "a cat"}})
        assert client.get("/health").status_code == 200  # still serving
    body = error_of(response, 500)
    assert body["code"] == "internal_error" and "secret" not in response.text
    assert "secret internal detail" in caplog.text  # the server log has it


def test_non_finite_model_outputs_are_a_500_naming_the_cause(classifier_dir):
    from polymodal.inference.predictor import NonFiniteModelError

    predictor = Predictor(classifier_dir)

    def overflowing(samples):
        raise NonFiniteModelError("model runs/x gave non-finite outputs (NaN/inf) for this input: retrain it")

    predictor.predict_batch = overflowing
    with TestClient(create_app(predictor)) as client:
        body = error_of(client.post("/v1/predict", json={"inputs": {"caption": "a cat"}}), 500)
    assert body["code"] == "model_error" and "non-finite" in body["message"]


def test_limits_are_reported_with_the_server_settings(classifier_dir):
    limits = ServeLimits(max_image_pixels=1000, max_audio_seconds=1.5, max_text_chars=50)
    with TestClient(create_app(Predictor(classifier_dir), ServeSettings(limits=limits))) as client:
        info = client.get("/v1/model").json()
    by_name = {m["name"]: m["limits"] for m in info["modalities"]}
    assert by_name["photo"] == {"max_image_pixels": 1000} and by_name["voice"] == {"max_audio_seconds": 1.5}
    assert by_name["caption"]["max_text_chars"] == 50 and info["limits"]["max_text_chars"] == 50


def test_read_of_bytes_helpers():  # guards the helpers the other tests rely on
    assert io.BytesIO(png_bytes()).read(8) == b"\x89PNG\r\n\x1a\n" and wav_bytes()[:4] == b"RIFF"
