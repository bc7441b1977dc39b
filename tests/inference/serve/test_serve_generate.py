"""POST /v1/generate with a tiny chat model (image + audio attachments) through FastAPI's TestClient and a real
uvicorn server: served greedy text equals ``Predictor(dir).generate`` / ``.chat`` on the same inputs, streamed
pieces concatenate to the non-streamed answer, stop strings cut it, every bad field is a 4xx naming the field,
the existing size limits apply, other tasks' routes refuse, and a client that leaves or times out frees the
worker (its generation is cancelled)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time

import pytest
import torch
from conftest import LoopbackServer, png_bytes, wav_bytes
from fastapi.testclient import TestClient

from polymodal.inference import Predictor
from polymodal.inference.serve import ServeLimits, ServeSettings, create_app
from polymodal.inference.serve.batching import DynamicBatcher
from polymodal.inference.serve.generation_worker import TextPieces

QUESTIONS = ["what digit is it?", "describe the picture.", "is the recording loud?"]


@pytest.fixture(scope="module")
def predictor(generation_dir):
    return Predictor(generation_dir)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, ServeSettings()), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """(png bytes, wav bytes, flac bytes) and the same files on disk for the Predictor."""
    import io

    import numpy as np
    import soundfile as sf

    root = tmp_path_factory.mktemp("media")
    png, wav = png_bytes(20, 24, seed=1, mode="RGB"), wav_bytes(0.4, seed=2)
    buffer = io.BytesIO()
    sf.write(buffer, (np.random.default_rng(3).standard_normal(2400) * 0.2).astype(np.float32), 8000, format="FLAC")
    flac = buffer.getvalue()
    paths = {}
    for name, data in (("x.png", png), ("x.wav", wav), ("x.flac", flac)):
        (root / name).write_bytes(data)
        paths[name] = str(root / name)
    return {"png": png, "wav": wav, "flac": flac, **paths}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_of(response, status, field=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["status"] == status and "Traceback" not in body["message"] and "/tmp/" not in body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


def events_of(response) -> list[dict]:
    """The data of each server-sent event (comments skipped), with its ``event`` name when it has one."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((line[len("event: "):] for line in lines if line.startswith("event: ")), None)
        data = json.loads("".join(line[len("data: "):] for line in lines if line.startswith("data: ")))
        events.append({**data, "event": name} if name else data)
    return events


def streamed(client, body) -> tuple[str, dict, list[dict]]:
    events = events_of(client.post("/v1/generate", json={**body, "stream": True}))
    pieces, final = events[:-1], events[-1]
    assert all(e["finish_reason"] is None and e["text"] for e in pieces)  # one event per non-empty piece
    assert final["text"] == "" and final["finish_reason"] in ("stop", "length")
    return "".join(e["text"] for e in pieces), final, pieces


@contextlib.contextmanager
def slow_decoder(predictor, seconds: float):
    """Every decoder forward sleeps ``seconds`` and can never pick the end-of-sequence token: a generation then
    lasts max_new_tokens × ``seconds``, long enough to be cancelled half-way. Yields an Event set at the first
    forward (a generation is running)."""
    model = predictor.model
    eos = model.tokenizer.eos_token_id
    started = threading.Event()

    def hook(module, args, output):
        started.set()
        time.sleep(seconds)
        output.logits[..., eos] = float("-inf")
        return output

    handle = model.decoder.register_forward_hook(hook)
    try:
        yield started
    finally:
        handle.remove()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# ------------------------------------------------------------------------------------------------ model info


def test_model_info_health_and_openapi_describe_a_generation_model(client, predictor):
    assert client.get("/health").json() == {"status": "ok", "queue_depth": 0}
    info = client.get("/v1/model").json()
    assert info["task"] == "chat" and info["routes"] == ["/v1/generate"] and info["labels"] == []
    assert info["architecture"] == "VisionLanguageModel"
    assert [(m["name"], m["kind"]) for m in info["modalities"]] == [("image", "image"), ("audio", "audio")]
    assert info["modalities"][0]["limits"] == {"max_image_pixels": 20_000}  # the processor's cap is the smaller
    assert info["decoding"] == predictor.generator.decoding() and info["decoding"]["max_new_tokens"] == 8
    assert info["limits"]["max_new_tokens"] == 512
    schema = client.get("/openapi.json").json()
    assert "/v1/generate" in schema["paths"] and "GenerateRequest" in schema["components"]["schemas"]
    assert "temperature" in schema["components"]["schemas"]["GenerateRequest"]["properties"]


def test_a_saved_default_over_the_server_cap_is_lowered_to_it(predictor):
    with TestClient(create_app(predictor, ServeSettings(limits=ServeLimits(max_new_tokens=3)))) as capped:
        assert capped.get("/v1/model").json()["decoding"]["max_new_tokens"] == 3
        answer = capped.post("/v1/generate", json={"prompt": QUESTIONS[0]}).json()
        assert answer["tokens"] <= 3
        assert answer["text"] == predictor.generate(QUESTIONS[0], max_new_tokens=3)


# --------------------------------------------------------------------------------------- served = Predictor


def test_greedy_answers_equal_the_predictors(client, predictor, media):
    cases = [
        ({"prompt": QUESTIONS[0], "image": b64(media["png"])}, {"image": media["x.png"]}, {}),
        ({"prompt": QUESTIONS[1], "image": "data:image/png;base64," + b64(media["png"]), "max_new_tokens": 12},
         {"image": media["x.png"]}, {"max_new_tokens": 12}),
        ({"prompt": QUESTIONS[2], "audio": {"base64": b64(media["wav"]), "filename": "x.wav"}},
         {"audio": media["x.wav"]}, {}),
        ({"prompt": QUESTIONS[2], "audio": b64(media["flac"])}, {"audio": media["x.flac"]}, {}),
        ({"prompt": QUESTIONS[0], "image": b64(media["png"]), "audio": b64(media["wav"]), "num_beams": 2,
          "repetition_penalty": 1.3}, {"image": media["x.png"], "audio": media["x.wav"]},
         {"num_beams": 2, "repetition_penalty": 1.3}),
        ({"prompt": "say something"}, {}, {}),  # no attachment at all
    ]
    texts = []
    for body, files, options in cases:
        answer = client.post("/v1/generate", json=body)
        assert answer.status_code == 200, answer.text
        answer = answer.json()
        expected = predictor.generate(body["prompt"], image=files.get("image"), audio=files.get("audio"), **options)
        assert answer["text"] == expected
        assert answer["finish_reason"] in ("stop", "length") and 1 <= answer["tokens"] <= options.get(
            "max_new_tokens", 8)
        assert answer["prompt_tokens"] > len(body["prompt"].split())  # attachments expand into many positions
        assert answer["timings"]["generate_ms"] > 0 and answer["timings"]["queue_ms"] >= 0
        texts.append(answer["text"])
    assert any(texts) and len(set(texts)) > 1  # a random decoder says different things for different inputs


def test_length_finish_reason_and_token_count(client, predictor):
    answer = client.post("/v1/generate", json={"prompt": QUESTIONS[1], "max_new_tokens": 1}).json()
    assert answer["tokens"] == 1 and answer["finish_reason"] in ("length", "stop")
    with slow_decoder(predictor, 0.0):  # no end-of-sequence token: only max_new_tokens ends it
        answer = client.post("/v1/generate", json={"prompt": QUESTIONS[1], "max_new_tokens": 5}).json()
        assert answer["tokens"] == 5 and answer["finish_reason"] == "length"


def test_messages_equal_predictor_chat(client, predictor, media):
    image, audio = predictor.model.placeholders["image"], predictor.model.placeholders["audio"]
    body = {"messages": [
        {"role": "system", "content": "answer in one word."},
        {"role": "user", "content": "what is this?", "image": b64(media["png"])},
        {"role": "assistant", "content": "a picture"},
        {"role": "user", "content": f"and this? {audio}", "attachments": {"audio": [b64(media["wav"])]}},
    ], "max_new_tokens": 6}
    expected = predictor.chat([
        {"role": "system", "content": "answer in one word."},
        {"role": "user", "content": f"{image}\nwhat is this?"},
        {"role": "assistant", "content": "a picture"},
        {"role": "user", "content": f"and this? {audio}"},  # its own placeholder: none added in front
    ], {"image": [media["x.png"]], "audio": [media["x.wav"]]}, max_new_tokens=6)
    answer = client.post("/v1/generate", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == expected
    # top-level files go with the last user turn
    top = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "image": b64(media["png"])}
    assert client.post("/v1/generate", json=top).json()["text"] == predictor.generate(QUESTIONS[0],
                                                                                       image=media["x.png"])


# ---------------------------------------------------------------------------------------------- streaming


def test_streamed_pieces_concatenate_to_the_answer(client, media):
    bodies = [{"prompt": q, "image": b64(media["png"]), "max_new_tokens": 16} for q in QUESTIONS]
    bodies.append({"prompt": QUESTIONS[2], "audio": b64(media["wav"])})
    # sampling: the same seed gives the same text, streamed or not
    bodies.append({"prompt": QUESTIONS[0], "do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95,
                   "seed": 7, "max_new_tokens": 16})
    many_pieces = 0
    for body in bodies:
        answer = client.post("/v1/generate", json=body).json()
        text, final, pieces = streamed(client, body)
        assert text == answer["text"] == final["full_text"]
        assert (final["tokens"], final["finish_reason"]) == (answer["tokens"], answer["finish_reason"])
        many_pieces += len(pieces) > 1
    assert many_pieces  # pieces arrive as they are decoded, not all at the end
    sampled = bodies[-1]
    again = client.post("/v1/generate", json=sampled).json()["text"]
    other = client.post("/v1/generate", json={**sampled, "seed": 8}).json()["text"]
    assert again == client.post("/v1/generate", json=sampled).json()["text"] and other != again


def test_errors_before_the_stream_starts_are_json_with_their_status(client, predictor, media):
    error_of(client.post("/v1/generate", json={"prompt": "x", "image": b64(media["png"][:40]), "stream": True}),
             422, "image")
    image = predictor.model.placeholders["image"]
    body = error_of(client.post("/v1/generate", json={"prompt": f"{image} {image} two?", "image": b64(media["png"]),
                                                      "stream": True}), 422, "prompt")
    assert "placeholder" in body["message"]


# ------------------------------------------------------------------------------------------------ stop strings


def test_stop_strings_cut_the_answer(client, predictor, media):
    body = {"prompt": QUESTIONS[0], "image": b64(media["png"]), "max_new_tokens": 24}
    full = client.post("/v1/generate", json=body).json()
    text = full["text"]
    candidates = [c for c in text[2:] if not c.isspace() and c != "\ufffd"]
    assert candidates, f"the random decoder said too little to test stop strings: {text!r}"
    for stop in (candidates[0], [candidates[-1], "zzz-never"], text[2:4]):
        answer = client.post("/v1/generate", json={**body, "stop": stop}).json()
        stops = [stop] if isinstance(stop, str) else stop
        expected = predictor.generate(QUESTIONS[0], image=media["x.png"], max_new_tokens=24, stop_strings=stops)
        assert answer["text"] == expected
        assert not any(s in answer["text"] for s in stops)
        assert text.startswith(answer["text"]) and len(answer["text"]) < len(text)
        assert answer["finish_reason"] == "stop" and answer["tokens"] <= full["tokens"]
        joined, final, _ = streamed(client, {**body, "stop": stop})
        assert joined == answer["text"] == final["full_text"] and final["finish_reason"] == "stop"


# ------------------------------------------------------------------------------------------------- bad input


BAD = [
    ({"prompt": "x", "temperature": 0.7}, 422, "temperature"),  # sampling option with greedy decoding
    ({"prompt": "x", "do_sample": True, "temperature": 0}, 422, "temperature"),
    ({"prompt": "x", "do_sample": True, "temperature": "hot"}, 422, "temperature"),
    ({"prompt": "x", "do_sample": True, "top_p": 0}, 422, "top_p"),
    ({"prompt": "x", "do_sample": True, "top_p": 1.5}, 422, "top_p"),
    ({"prompt": "x", "do_sample": True, "top_k": -1}, 422, "top_k"),
    ({"prompt": "x", "top_k": 5}, 422, "top_k"),
    ({"prompt": "x", "num_beams": 0}, 422, "num_beams"),
    ({"prompt": "x", "num_beams": 99}, 422, "num_beams"),
    ({"prompt": "x", "num_beams": 2, "stream": True}, 422, "num_beams"),
    ({"prompt": "x", "repetition_penalty": 0}, 422, "repetition_penalty"),
    ({"prompt": "x", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 1.5}, 422, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": "8"}, 422, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 513}, 422, "max_new_tokens"),  # over the server's limit
    ({"prompt": "x", "do_sample": "yes"}, 422, "do_sample"),
    ({"prompt": "x", "stream": 1}, 422, "stream"),
    ({"prompt": "x", "seed": -1}, 422, "seed"),
    ({"prompt": "x", "stop": [""]}, 422, "stop"),
    ({"prompt": "x", "stop": ["a"] * 9}, 422, "stop"),
    ({"prompt": "x", "stop": "s" * 101}, 422, "stop"),
    ({"prompt": "x", "stop": [3]}, 422, "stop.0"),
    ({"prompt": 3}, 422, "prompt"),
    ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, 422, "prompt"),
    ({"max_new_tokens": 4}, 422, "prompt"),
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "bot", "content": "x"}]}, 422, "messages.0.role"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, 422, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "x", "colour": "red"}]}, 422, "messages.0.colour"),
    ({"prompt": "x", "temperatur": 0.5}, 422, "temperatur"),  # a typo is not ignored
    ({"prompt": "x", "image": "%%% not base64"}, 422, "image"),
    ({"prompt": "x", "image": 7}, 422, "image"),
    ({"prompt": "x", "attachments": {"depth": "AAAA"}}, 422, "attachments.depth"),
    ({"prompt": "x", "image": "iVBORw0KGgo=", "attachments": {"image": "iVBORw0KGgo="}}, 422, "attachments.image"),
    ({"prompt": "x", "audio": b64(b"RIFF....WAVEfmt not really")}, 422, "audio"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD, ids=[f"{i}-{f}" for i, (_, _, f) in enumerate(BAD)])
def test_bad_fields_are_refused_naming_the_field(client, body, status, field):
    error = error_of(client.post("/v1/generate", json=body), status, field)
    assert field.split(".")[0] in error["message"] or field == "prompt"


def test_bad_bodies_and_files(client, media):
    error_of(client.post("/v1/generate", content=b"{not json", headers={"Content-Type": "application/json"}),
             422, "body")
    error_of(client.post("/v1/generate", data={"prompt": "x"}), 415, "Content-Type")
    error_of(client.post("/v1/generate", json=[1, 2]), 422, "body")
    corrupt = error_of(client.post("/v1/generate", json={"prompt": "x", "image": b64(media["png"][:60])}), 422, "image")
    assert corrupt["code"] == "invalid_input"
    named = error_of(client.post("/v1/generate", json={"prompt": "x", "image": [b64(media["png"]), {
        "base64": b64(b"GIF89a-broken"), "filename": "two.gif"}]}), 422, "image.1")
    assert "two.gif" in named["message"]
    # longer than the decoder's 256 positions: named, not an index error deep in the decoder
    long = error_of(client.post("/v1/generate", json={"prompt": "word " * 400}), 422, "prompt")
    assert "positions" in long["message"]


def test_oversize_inputs_get_the_existing_limit_errors(predictor, media):
    limits = ServeLimits(max_image_pixels=100, max_audio_seconds=0.2, max_text_chars=50, max_body_bytes=20_000)
    with TestClient(create_app(predictor, ServeSettings(limits=limits))) as capped:
        image = error_of(capped.post("/v1/generate", json={"prompt": "x", "image": b64(media["png"])}), 422, "image")
        assert image["code"] == "limit_exceeded" and image["limit"] == {"name": "max_image_pixels", "value": 100}
        assert "24×20 = 480 pixels" in image["message"]
        audio = error_of(capped.post("/v1/generate", json={"prompt": "x", "audio": b64(media["wav"])}), 422, "audio")
        assert audio["limit"] == {"name": "max_audio_seconds", "value": 0.2}
        text = error_of(capped.post("/v1/generate", json={"prompt": "y" * 51}), 422, "prompt")
        assert text["limit"]["name"] == "max_text_chars"
        turns = error_of(capped.post("/v1/generate", json={"messages": [{"role": "user", "content": "y" * 30},
                                                                        {"role": "user", "content": "y" * 30}]}),
                         422, "messages")
        assert "60 characters" in turns["message"]
        body = error_of(capped.post("/v1/generate", json={"prompt": "x", "image": b64(b"\0" * 30_000)}), 413, "body")
        assert body["limit"]["name"] == "max_body_bytes"
    with TestClient(create_app(predictor, ServeSettings(limits=ServeLimits(max_image_pixels=10**6)))) as loose:
        big = png_bytes(200, 200, seed=5)  # 40,000 pixels: over the model processor's own max_pixels=20,000
        error = error_of(loose.post("/v1/generate", json={"prompt": "x", "image": b64(big)}), 422, "image")
        assert error["limit"] == {"name": "max_pixels", "value": 20_000}


# --------------------------------------------------------------------------------------- routes of other tasks


def test_routes_of_other_tasks_refuse_clearly(client, classifier_dir, align_dir):
    for route, body in (("/v1/predict", {"inputs": {"text": "x"}}), ("/v1/embed", {"inputs": {"text": "x"}}),
                        ("/v1/retrieve", {"inputs": {"text": "x"}, "k": 2})):
        error = error_of(client.post(route, json=body), 400)
        assert error["code"] == "unsupported" and "POST /v1/generate" in error["message"] and "chat" in error["message"]
    for directory, hint in ((classifier_dir, "POST /v1/predict"), (align_dir, "/v1/embed")):
        with TestClient(create_app(Predictor(directory))) as other:
            error = error_of(other.post("/v1/generate", json={"prompt": "what?"}), 400)
            assert "does not generate text" in error["message"] and hint in error["message"]
            assert other.get("/v1/model").json()["decoding"] is None


def test_build_app_serves_a_generation_model(generation_dir):
    from polymodal.inference.serve.server import build_app

    with TestClient(build_app(generation_dir, ServeSettings())) as served:
        assert served.get("/v1/model").json()["routes"] == ["/v1/generate"]
        assert served.post("/v1/generate", json={"prompt": "hello"}).status_code == 200


# ------------------------------------------------------------------------------------------------ concurrency


def test_generations_run_one_at_a_time_and_the_queue_limit_gives_503(predictor):
    app = create_app(predictor, ServeSettings(limits=ServeLimits(max_queue=1)))
    results: dict[str, int] = {}
    with TestClient(app) as client, slow_decoder(predictor, 0.05) as started:
        def post(name: str) -> None:
            results[name] = client.post("/v1/generate", json={"prompt": name, "max_new_tokens": 60}).status_code

        first, second = (threading.Thread(target=post, args=(name,)) for name in ("first", "second"))
        first.start()
        assert started.wait(20)
        assert client.get("/health").json() == {"status": "ok", "queue_depth": 0}  # the loop answers meanwhile
        second.start()
        deadline = time.monotonic() + 20
        while app.state.batcher.depth == 0:  # the second waits behind the first
            assert time.monotonic() < deadline and second.is_alive()
            time.sleep(0.01)
        refused = error_of(client.post("/v1/generate", json={"prompt": "third"}), 503, "queue")
        assert refused["limit"] == {"name": "max_queue", "value": 1} and first.is_alive()
        first.join(60)
        second.join(60)
        assert results == {"first": 200, "second": 200}
        sizes = client.get("/metrics").text
        assert metric(sizes, 'polymodal_batch_size_count{op="generate"}') == 2
        assert metric(sizes, 'polymodal_batch_size_sum{op="generate"}') == 2  # never two in one batch
        assert metric(sizes, 'polymodal_generated_tokens_total') == 120


def test_a_timed_out_generation_is_cancelled_and_frees_the_worker(predictor):
    app = create_app(predictor, ServeSettings(limits=ServeLimits(timeout_s=0.5)))
    with TestClient(app) as client:
        with slow_decoder(predictor, 0.05):
            error = error_of(client.post("/v1/generate", json={"prompt": "x", "max_new_tokens": 200}), 504)
            assert error["limit"] == {"name": "timeout_s", "value": 0.5}
            deadline = time.monotonic() + 10
            while not metric(client.get("/metrics").text, 'polymodal_generations_total{finish_reason="cancelled"}'):
                assert time.monotonic() < deadline, "the abandoned generation still holds the worker"
                time.sleep(0.05)
        assert client.post("/v1/generate", json={"prompt": "x"}).status_code == 200


def test_a_client_that_disconnects_cancels_its_generation(predictor):
    import httpx

    app = create_app(predictor, ServeSettings(limits=ServeLimits(timeout_s=60)))
    with LoopbackServer(app) as server:
        def cancelled() -> float:
            return metric(httpx.get(server.url + "/metrics").text,
                          'polymodal_generations_total{finish_reason="cancelled"}')

        with slow_decoder(predictor, 0.05):
            # a stream read for one event, then closed
            with httpx.stream("POST", server.url + "/v1/generate", json={"prompt": "x", "max_new_tokens": 200,
                                                                          "stream": True}, timeout=30) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        break
            # a non-streamed request whose client gives up
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + "/v1/generate", json={"prompt": "y", "max_new_tokens": 200}, timeout=1.0)
            deadline = time.monotonic() + 15
            while cancelled() < 2:  # 200 tokens x 50 ms = 10 s each if they were not cancelled
                assert time.monotonic() < deadline, "a generation kept running after its client left"
                time.sleep(0.1)
        answer = httpx.post(server.url + "/v1/generate", json={"prompt": "x"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["text"] == predictor.generate("x")


def test_generate_never_shares_a_batch():
    sizes = []
    gate = threading.Event()

    def run(op, payloads):
        gate.wait(5)
        sizes.append((op, len(payloads)))
        return payloads

    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=50, op_max_batch={"generate": 1})
    futures = [batcher.submit("generate", i) for i in range(4)] + [batcher.submit("predict", i) for i in range(3)]
    gate.set()
    assert [f.result(5).value for f in futures] == [0, 1, 2, 3, 0, 1, 2]
    batcher.close()
    assert [n for op, n in sizes if op == "generate"] == [1, 1, 1, 1] and ("predict", 3) in sizes
    with pytest.raises(ValueError, match="op_max_batch"):
        DynamicBatcher(run, op_max_batch={"generate": 0})


# ---------------------------------------------------------------------------------------------- text pieces


class CharTokenizer:
    """Token id = one character (id 0: end of sequence, skipped like a special token)."""

    clean_up_tokenization_spaces = False

    def __init__(self, text: str):
        self.text = text

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.text[i - 1] for i in ids if i)


@pytest.mark.parametrize(("text", "stops"), [
    ("  hello world  ", []),
    ("hello world. bye", ["."]),
    ("ab ab abc abd", ["abd"]),  # the stop string's start is seen (and held back) twice before it completes
    ("one two three", ["thr", "two t"]),
    ("answer: yes\n\nnext", ["\n\n"]),
    ("almost a stop at the very end: ST", ["STOP"]),  # a held-back tail that never completes is sent at the end
    ("x\ufffdy", []),
])
def test_text_pieces_concatenate_to_the_decoded_answer(text, stops):
    tokenizer = CharTokenizer(text)
    ids = list(range(1, len(text) + 1))
    final = text
    for stop in stops:  # model.decode's cut, then strip
        final = final.split(stop, 1)[0]
    final = final.strip()
    pieces = TextPieces(tokenizer, stops)
    sent = [pieces.next(ids[:k]) for k in range(1, len(ids) + 1)]
    for k in range(len(sent)):
        shown = "".join(sent[:k + 1])
        assert final.startswith(shown)  # never a piece that the rest of the answer takes back
        assert not any(stop in shown for stop in stops)
    assert "".join(sent) + pieces.finish(final) == final


def test_word_level_pieces_for_tokenizers_that_clean_up_spaces():
    tokenizer = CharTokenizer("hello big world")
    tokenizer.clean_up_tokenization_spaces = True
    pieces = TextPieces(tokenizer, [])
    sent = [pieces.next(list(range(1, k + 1))) for k in range(1, 16)]
    assert [p for p in sent if p] == ["hello", " big"] and pieces.finish("hello big world") == " world"


def test_sampling_is_seeded_per_request_not_by_the_previous_request(client):
    body = {"prompt": QUESTIONS[1], "do_sample": True, "seed": 3, "max_new_tokens": 12}
    first = client.post("/v1/generate", json=body).json()["text"]
    client.post("/v1/generate", json={**body, "seed": 4})
    torch.manual_seed(123)  # the test process's RNG state does not matter either
    assert client.post("/v1/generate", json=body).json()["text"] == first


def test_generate_needs_the_api_key_when_one_is_set(predictor):
    with TestClient(create_app(predictor, ServeSettings(api_key="k3y"))) as locked:
        error_of(locked.post("/v1/generate", json={"prompt": "x"}), 401, "Authorization")
        answer = locked.post("/v1/generate", json={"prompt": "x"}, headers={"Authorization": "Bearer k3y"})
        assert answer.status_code == 200 and answer.json()["text"] == predictor.generate("x")
