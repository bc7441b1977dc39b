"""`polymodal retrieve index` → `polymodal retrieve query` round trip, and the alignment demo's quick smoke run."""

import json

import numpy as np
import pytest
from PIL import Image

from polymodal.cli import main
from polymodal.config import RunConfig, from_dict
from polymodal.inference.retrieval import EmbeddingIndex
from polymodal.models import AlignmentModel

MODALITIES = {
    "image": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 8, "channels": 1},
              "options": {"channels": [8, 16]}},
    "text": {"kind": "text", "options": {"dim": 16, "depth": 1}},
}


@pytest.fixture()
def gallery(tmp_path):
    """A saved (untrained) image+text model and a manifest of 6 images, one listed twice."""
    config = from_dict(RunConfig, {"task": "alignment", "model": {"modalities": MODALITIES, "embed_dim": 16}})
    AlignmentModel(config.model).save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append({"id": f"item{i}", "image": f"im{i}.png", "label": "even" if i % 2 == 0 else "odd"})
    rows.append({"id": "copy0", "image": "im0.png", "label": "even"})
    (tmp_path / "gallery.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path


def test_index_then_query_round_trip(gallery, capsys):
    index_dir = gallery / "index"
    rc = main(["retrieve", "index", str(gallery / "model"), "--data", str(gallery / "gallery.jsonl"),
               "--modality", "image", "--out", str(index_dir)])
    assert rc == 0
    assert "indexed 6 image items" in capsys.readouterr().out  # the duplicate of im0 is stored once
    index = EmbeddingIndex.load(index_dir)
    assert len(index) == 6 and index.ids[0] == "item0"
    assert index.metadata[3]["label"] == "odd" and index.metadata[3]["source"].endswith("im3.png")

    # An image query finds itself first, with cosine 1.
    rc = main(["retrieve", "query", str(index_dir), "--image", str(gallery / "im3.png"), "--top", "3", "--json"])
    assert rc == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["id"] == "item3" and results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]

    # A text query goes through the text tower into the same space: scores are cosines in [-1, 1].
    rc = main(["retrieve", "query", str(index_dir), "--text", "an even picture", "--top", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("top 6 for text query")
    scores = [float(line.split()[1]) for line in out.splitlines()[1:]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_retrieve_errors_are_clear(gallery, capsys):
    rc = main(["retrieve", "index", str(gallery / "model"), "--data", str(gallery / "gallery.jsonl"),
               "--modality", "audio", "--out", str(gallery / "index")])
    assert rc == 2 and "'audio' is not one of the model's modalities" in capsys.readouterr().err
    rc = main(["retrieve", "index", str(gallery / "model"), "--data", "no-such-set", "--modality", "image",
               "--out", str(gallery / "index")])
    assert rc == 2 and "neither a manifest file nor a built-in data set" in capsys.readouterr().err
    main(["retrieve", "index", str(gallery / "model"), "--data", str(gallery / "gallery.jsonl"), "--modality", "image",
          "--out", str(gallery / "index")])
    capsys.readouterr()
    rc = main(["retrieve", "query", str(gallery / "index"), "--text", "x", "--image", str(gallery / "im0.png")])
    assert rc == 2 and "exactly one query" in capsys.readouterr().err
    rc = main(["retrieve", "query", str(gallery / "index"), "--audio", str(gallery / "missing.wav")])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    rc = main(["retrieve", "query", str(gallery / "index"), "--audio", str(gallery / "im0.png")])
    assert rc == 2 and "no audio modality" in capsys.readouterr().err


def test_demo_quick_smoke_is_above_chance(tmp_path):
    from polymodal.recipes.demos.align import run_alignment_demo

    result = run_alignment_demo(tmp_path / "demo", quick=True, epochs=4, limit=300)
    test = result["test"]
    assert (tmp_path / "demo" / "results.json").exists() and "audio → image" in (tmp_path / "demo" / "results.md").read_text()
    # A few dozen steps on 300 rows: text (which names the digit) → image must clearly beat chance, and the
    # averages over all six directions and both zero-shot modalities must be above chance (0.1 for 10 digits).
    text_to_image = test["retrieval"]["class"]["text_to_image"]
    assert text_to_image["R@1"] > text_to_image["chance"]["R@1"] + 0.1
    assert test["summary"]["mean_R@1"] > 0.15 and test["summary"]["mean_zeroshot_top1"] > 0.15
