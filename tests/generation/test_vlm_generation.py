"""Generation through Hugging Face ``generate`` on expanded inputs_embeds: checked against reference decoders."""

from __future__ import annotations

import pytest
import torch

from .vlm_fixtures import clip, image, make_model

SAMPLES = [
    {"prompt": "<image>\nwhat is this?", "attachments": {"image": [image(0)]}},
    {"prompt": "describe the picture."},
    {"prompt": "<image> and <image>: is it round?", "attachments": {"image": [image(1), image(2)]}},
]


# untied, larger initial weights: a random model whose greedy outputs vary (a tied tiny one repeats one token)
VARIED = {"tie_word_embeddings": False, "initializer_range": 0.2}


@pytest.fixture(scope="module")
def model():
    return make_model(**VARIED)


def manual_greedy(model, sample, steps: int) -> list[int]:
    """argmax of a full forward pass per step: no cache, no generate."""
    batch = model.collator(for_generation=True)([sample])
    expanded = model.embed(batch)
    embeds, out = expanded.inputs_embeds, []
    table = model.decoder.get_input_embeddings()
    with torch.no_grad():
        for _ in range(steps):
            logits = model.decoder(inputs_embeds=embeds).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            if token == model.tokenizer.eos_token_id:
                break
            embeds = torch.cat([embeds, table(torch.tensor([[token]]))], 1)
    return out


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_greedy_equals_a_manual_argmax_loop(model, index):
    sample = SAMPLES[index]
    batch = model.collator(for_generation=True)([sample])
    generated = model.generate(batch, max_new_tokens=8, do_sample=False)[0].tolist()
    assert generated == manual_greedy(model, sample, 8)[: len(generated)]
    assert len(generated) == 8 or generated[-1] == model.tokenizer.eos_token_id


def test_kv_cache_does_not_change_greedy_output(model):
    batch = model.collator(for_generation=True)(SAMPLES)
    with_cache = model.generate(batch, max_new_tokens=8, do_sample=False, use_cache=True)
    without = model.generate(batch, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


@pytest.mark.parametrize("options", [
    {"do_sample": False},
    {"do_sample": False, "num_beams": 3},
    {"do_sample": False, "repetition_penalty": 1.5},
    {"do_sample": False, "num_beams": 2, "repetition_penalty": 1.3, "length_penalty": 0.5},
])
def test_without_attachments_equals_hugging_face_on_the_plain_lm(model, options):
    """Same decoder, same prompt ids: generate(inputs_embeds) through the VLM == generate(input_ids) on the LM."""
    sample = {"prompt": "what colour is it?"}
    batch = model.collator(for_generation=True)([sample])
    ours = model.generate(batch, max_new_tokens=6, **options)
    reference = model.decoder.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       max_new_tokens=6, pad_token_id=model.tokenizer.pad_token_id,
                                       eos_token_id=model.tokenizer.eos_token_id, **options)
    assert torch.equal(ours, reference[:, batch.input_ids.shape[1]:])


@pytest.mark.parametrize("options", [{"do_sample": False}, {"do_sample": False, "num_beams": 3}])
def test_left_padded_batch_equals_one_by_one(options):
    model = make_model(audio=True, **VARIED)
    samples = SAMPLES + [{"prompt": "<audio> <image>", "attachments": {"audio": [clip(0, 3)], "image": [image(5)]}}]
    batch = model.collator(for_generation=True)(samples)
    together = model.generate(batch, max_new_tokens=7, **options)
    for i, sample in enumerate(samples):
        alone = model.generate(model.collator(for_generation=True)([sample]), max_new_tokens=7, **options)[0]
        row = together[i, : alone.shape[0]]
        assert torch.equal(row, alone), i
        assert (together[i, alone.shape[0]:] == model.tokenizer.pad_token_id).all()


def test_sampling_is_seeded_and_respects_top_k_1(model):
    batch = model.collator(for_generation=True)(SAMPLES)
    torch.manual_seed(3)
    first = model.generate(batch, max_new_tokens=6, do_sample=True, temperature=0.8, top_p=0.9)
    torch.manual_seed(3)
    assert torch.equal(first, model.generate(batch, max_new_tokens=6, do_sample=True, temperature=0.8, top_p=0.9))
    greedy = model.generate(batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(batch, max_new_tokens=6, do_sample=True, top_k=1), greedy)


def test_max_new_tokens_and_stop_strings(model):
    batch = model.collator(for_generation=True)(SAMPLES[:1])
    full = model.generate(batch, max_new_tokens=10, do_sample=False)[0]
    assert full.shape[0] == 10 and model.generate(batch, max_new_tokens=3, do_sample=False).shape[1] == 3
    # stop on a word piece greedy decoding produces anyway, at step k: generation must end right there
    tokens = [model.tokenizer.decode([t]) for t in full.tolist()]
    k = next(k for k, piece in enumerate(tokens) if k and piece.isalpha() and piece not in "".join(tokens[:k]))
    stop = tokens[k]
    stopped = model.generate(batch, max_new_tokens=10, do_sample=False, stop_strings=[stop])[0]
    assert stopped.tolist() == full[: k + 1].tolist()
    before = model.tokenizer.decode(full[:k], skip_special_tokens=True).strip()
    assert model.decode(stopped.unsqueeze(0), stop) == [before]


def test_streaming_yields_the_same_text_as_generate(model):
    for sample in SAMPLES:
        streamed = "".join(model.stream(sample, max_new_tokens=8, do_sample=False))
        assert streamed.strip() == model.generate_text([sample], max_new_tokens=8, do_sample=False)[0]


def test_streaming_re_raises_generation_errors(model):
    with pytest.raises(ValueError):
        list(model.stream(SAMPLES[0], max_new_tokens=4, num_beams=2))  # HF streams only greedy / sampling
