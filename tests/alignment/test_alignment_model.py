"""AlignmentModel with the tiny from-scratch encoders: config, pairwise losses over present samples,
weighted objectives, logit scale, save/load, and that a few steps actually align a toy batch."""

import math

import pytest
import torch

from polymodal.config import AlignmentConfig, ConfigError, from_dict
from polymodal.models import AlignmentModel
from polymodal.objectives import clip_loss, siglip_loss
from polymodal.types import Batch

TINY = {
    "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [8, 16]},
              "processor": {"image_size": 16, "channels": 1}},
    "text": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0},
             "processor": {"max_length": 16}},
    "audio": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [8, 16]},
              "processor": {"n_mels": 16}},
}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def _config(modalities=("image", "text"), **extra):
    return from_dict(AlignmentConfig, {"modalities": {m: TINY[m] for m in modalities}, "embed_dim": 8, **extra})


def _batch(model, n=6, present=None, labels=None):
    gen = torch.Generator().manual_seed(0)
    inputs, flags = {}, {}
    for name in model.modality_names:
        if name == "image":
            inputs[name] = {"pixel_values": torch.randn(n, 1, 16, 16, generator=gen)}
        elif name == "audio":
            inputs[name] = {"features": torch.randn(n, 16, 20, generator=gen),
                            "feature_mask": torch.ones(n, 20, dtype=torch.bool)}
        else:
            processor = model.processors[name]
            inputs[name] = processor.collate([processor(f"a handwritten {WORDS[i % 8]}") for i in range(n)])
        flags[name] = torch.ones(n, dtype=torch.bool) if present is None else present[name]
    return Batch(inputs=inputs, present=flags, labels=labels)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="embed_dimm"):
        from_dict(AlignmentConfig, {"modalities": {"image": TINY["image"]}, "embed_dimm": 3})
    with pytest.raises(ConfigError, match="pairs\\[0\\].*'video'"):
        AlignmentModel(_config(pairs=[["image", "video"]]))
    with pytest.raises(ConfigError, match="objectives\\[0\\].*clipp"):
        AlignmentModel(_config(objectives=[{"name": "clipp"}]))
    with pytest.raises(ConfigError, match="objectives\\[0\\].*label_smoothing"):
        AlignmentModel(_config(objectives=[{"name": "clip", "options": {"label_smoothing": 2.0}}]))


def test_clip_forward_equals_loss_on_encoded_embeddings():
    model = AlignmentModel(_config()).eval()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.logit_bias is None
    batch = _batch(model)
    out = model(batch)
    img, txt = model.encode(batch, "image"), model.encode(batch, "text")
    assert torch.allclose(img.norm(dim=-1), torch.ones(6), atol=1e-5)
    expected = clip_loss(img, txt, 1 / 0.07)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.losses) == {"clip/image-text"}
    assert out.logits["image-text"].shape == (6, 6)


def test_siglip_defaults_and_logit_scale_projection():
    model = AlignmentModel(_config(objectives=[{"name": "siglip"}])).eval()
    assert model.logit_scale.item() == pytest.approx(math.log(10))
    assert model.logit_bias.item() == pytest.approx(-10.0)
    batch = _batch(model)
    img, txt = model.encode(batch, "image"), model.encode(batch, "text")
    assert model(batch).loss.item() == pytest.approx(siglip_loss(img, txt, 10.0, -10.0).item(), rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    # The cap is a projection after the optimizer step (clamp_parameters), never a clamp in forward.
    assert model.scale().item() == pytest.approx(math.exp(10.0), rel=1e-5)
    model.clamp_parameters()
    assert model.scale().item() == pytest.approx(100.0)


def test_three_modalities_use_only_samples_with_both_modalities():
    model = AlignmentModel(_config(("image", "text", "audio"))).eval()
    present = {"image": torch.tensor([1, 1, 1, 0, 1, 1]).bool(), "text": torch.tensor([1, 0, 1, 1, 1, 1]).bool(),
               "audio": torch.tensor([0, 1, 1, 1, 1, 0]).bool()}
    batch = _batch(model, present=present)
    out = model(batch)
    assert set(out.losses) == {"clip/image-text", "clip/image-audio", "clip/text-audio"}
    emb = {m: model.encode(batch, m) for m in present}
    assert torch.all(emb["image"][3] == 0)  # absent sample → zero embedding
    for a, b in model.pairs:
        rows = present[a] & present[b]
        expected = clip_loss(emb[a][rows], emb[b][rows], model.scale())
        assert out.losses[f"clip/{a}-{b}"].item() == pytest.approx(expected.item(), rel=1e-5)
    mean = sum(out.losses.values()) / 3
    assert out.loss.item() == pytest.approx(mean.item(), rel=1e-6)
    only = AlignmentModel(_config(("image", "text", "audio"), pairs=[["image", "audio"]])).eval()
    assert set(only(batch).losses) == {"clip/image-audio"}


def test_weighted_objectives_clip_itm_mlm_train_every_part():
    config = _config(objectives=[{"name": "clip", "weight": 1.0},
                                 {"name": "itm", "weight": 0.5, "options": {"width": 16, "heads": 2}},
                                 {"name": "mlm", "weight": 0.25, "options": {"width": 16, "heads": 2,
                                                                              "probability": 0.5}}])
    model = AlignmentModel(config)
    torch.manual_seed(0)
    out = model(_batch(model, labels=torch.arange(6)))
    parts = out.losses
    assert set(parts) == {"clip/image-text", "itm/image-text", "mlm/image-text"}
    expected = parts["clip/image-text"] + 0.5 * parts["itm/image-text"] + 0.25 * parts["mlm/image-text"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    for prefix in ("encoders.image", "encoders.text", "projections", "objectives.1.fusers", "objectives.2.heads"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_save_load_round_trip(tmp_path):
    model = AlignmentModel(_config(objectives=[{"name": "siglip"}], projection="mlp")).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)
    batch = _batch(model)
    model.save_pretrained(tmp_path / "m")
    loaded = AlignmentModel.from_pretrained(tmp_path / "m")
    assert loaded.logit_bias.item() == -3.0
    for modality in ("image", "text"):
        assert torch.allclose(loaded.encode(batch, modality), model.encode(batch, modality), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="config.json"):
        AlignmentModel.from_pretrained(tmp_path / "nothing")


def test_a_few_steps_align_a_toy_batch():
    model = AlignmentModel(_config())
    batch = _batch(model, n=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss = model(batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    model.eval()
    sims = model.encode(batch, "image") @ model.encode(batch, "text").T
    assert (sims.argmax(1) == torch.arange(8)).float().mean() >= 0.75
