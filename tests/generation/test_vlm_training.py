"""Teacher forcing: answer-only loss as sum + count, token-normalised accumulation, stages, LoRA, overfitting."""

from __future__ import annotations

import pytest
import torch

from polymodal.data.errors import DataError
from polymodal.generation import IGNORE_INDEX
from polymodal.objectives.accumulation import combine

from .vlm_fixtures import CAPTIONS, clip, image, make_model

TRAIN = [
    {"prompt": "<image>\nwhat is this?", "answer": "a red square", "attachments": {"image": [image(0)]}},
    {"prompt": "what colour is it?", "answer": "yes"},
    {"prompt": "<image><image> is it round?", "answer": "no", "attachments": {"image": [image(1), image(2)]}},
]


def test_loss_is_the_sum_over_answer_tokens_only():
    model = make_model()
    batch = model.collator()(TRAIN)
    out = model(batch)
    tok = model.tokenizer
    answers = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in ("a red square", "yes", "no")]
    assert out.num_tokens.item() == sum(map(len, answers)) == model.loss_counts(batch)["lm"]
    # recompute by hand: at each row, the positions whose next token is an answer token
    log_probs = out.logits.float().log_softmax(-1)
    total = torch.tensor(0.0)
    for b, answer in enumerate(answers):
        real = out.attention_mask[b].bool()
        n = int(real.sum())
        logits_rows = log_probs[b][real]
        start = n - len(answer)  # the answer (+ eos) closes each sequence
        for j, token in enumerate(answer):
            total -= logits_rows[start + j - 1, token]
        assert out.labels[b][real][start:].tolist() == answer
        assert (out.labels[b][real][:start] == IGNORE_INDEX).all()
    assert torch.allclose(out.loss_sum, total, atol=1e-4)
    assert torch.allclose(out.loss, total / out.num_tokens, atol=1e-6)
    assert out.loss_terms["lm"].count == out.num_tokens.item()


def test_prompt_and_attachment_contents_change_logits_not_which_tokens_count():
    model = make_model()
    batch = model.collator()(TRAIN)
    other = model.collator()([{**TRAIN[0], "attachments": {"image": [image(9)]}}, *TRAIN[1:]])
    a, b = model(batch), model(other)
    assert a.num_tokens == b.num_tokens
    assert not torch.allclose(a.loss_sum, b.loss_sum)  # the image is read
    # gradients of the loss w.r.t. logits are zero wherever the next token is not an answer token
    logits = a.logits.detach().requires_grad_()
    from polymodal.generation import token_loss

    token_loss(logits, a.labels)[0].backward()
    predicts_answer = torch.zeros_like(a.labels, dtype=torch.bool)
    predicts_answer[:, :-1] = a.labels[:, 1:] != IGNORE_INDEX
    assert (logits.grad[~predicts_answer] == 0).all() and (logits.grad[predicts_answer].abs().sum(-1) > 0).all()


def test_accumulated_micro_batches_equal_one_batch():
    """Σ_i combine(terms_i, step counts) over micro-batches == the mean over all answer tokens of the step."""
    model = make_model()
    whole = model(model.collator()(TRAIN)).loss
    micro = [model.collator()(TRAIN[:1]), model.collator()(TRAIN[1:])]
    counts = {"lm": sum(model.loss_counts(m)["lm"] for m in micro)}
    accumulated = sum(combine(model(m).loss_terms, counts) for m in micro)
    assert torch.allclose(accumulated, whole, atol=1e-5)
    # averaging the micro-batch means instead would be wrong here (2 + 2 tokens vs 4 + 2 + 2)
    naive = sum(model(m).loss for m in micro) / 2
    assert not torch.allclose(naive, whole, atol=1e-3)


def test_cached_encoder_outputs_give_the_same_loss():
    model = make_model()
    batch = model.collator()(TRAIN)
    tokens = model.encoders["image"](**batch.attachments["image"])
    cached = model.collator()(TRAIN)
    cached.attachments["image"] = {"encoded_tokens": tokens.detach(),
                                   "encoded_mask": torch.ones(tokens.shape[:2], dtype=torch.bool)}
    assert torch.allclose(model(batch).loss_sum, model(cached).loss_sum, atol=1e-6)


def test_audio_and_image_together_with_a_resampler():
    model = make_model(connector="resampler", audio=True, connector_options={"num_tokens": 3, "heads": 2})
    samples = [{"prompt": "<audio> <image> same digit?", "answer": "yes",
                "attachments": {"audio": [clip(0, 5)], "image": [image(0)]}},
               {"prompt": "<audio>", "answer": "seven", "attachments": {"audio": [clip(1, 2)]}}]
    out = model(model.collator()(samples))
    # resampler: 3 tokens per image; audio mlp: one per real frame (5 and 2, padding frames dropped)
    prompt_lengths = [len(model.collator().encode(s)[0]) for s in samples]
    assert out.attention_mask.sum(1).tolist() == [prompt_lengths[0] - 2 + 3 + 5, prompt_lengths[1] - 1 + 2]
    assert torch.isfinite(out.loss)


def test_placeholder_without_attachment_in_batch_fails_loudly():
    model = make_model()
    batch = model.collator()(TRAIN[1:2])
    batch.input_ids[0, 2] = model.placeholder_ids["image"]
    with pytest.raises(DataError, match="<image> placeholders but no image attachments"):
        model(batch)


def test_stage_one_trains_only_the_connectors():
    model = make_model().configure_stage(1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("connectors.") for name in trainable)
    assert trainable == {f"connectors.{name}" for name, _ in model.connectors.named_parameters()}
    model.train()
    assert model.connectors.training and not model.decoder.training and not model.encoders["image"].training
    model(model.collator()(TRAIN)).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == name.startswith("connectors."), name
    model.configure_stage(2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("decoder.") for n in trainable) and not any(n.startswith("encoders.") for n in trainable)


def test_lora_stage_two_then_merge_gives_identical_outputs():
    model = make_model()
    batch = model.collator()(TRAIN)
    prompts = model.collator(for_generation=True)(TRAIN)
    model.apply_lora(r=4, alpha=8, init_lora_weights=False).configure_stage(2)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(name.startswith("connectors.") or "lora_" in name for name in trainable)
    assert any("lora_" in name for name in trainable)
    model.eval()
    adapted = model(batch).logits
    greedy = model.generate(prompts, max_new_tokens=6, do_sample=False)
    model.merge_lora()
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert torch.allclose(model(batch).logits, adapted, atol=1e-5)
    assert torch.equal(model.generate(prompts, max_new_tokens=6, do_sample=False), greedy)


def test_tiny_overfit_reaches_low_loss_and_greedy_reproduces_captions():
    """Four image/caption pairs with the same prompt: only the image tells the captions apart."""
    model = make_model(seed=1)
    samples = [{"prompt": "<image>", "answer": caption, "attachments": {"image": [image(10 + i)]}}
               for i, caption in enumerate(CAPTIONS)]
    batch = model.collator()(samples)
    model.configure_stage(2).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(150):
        optimizer.zero_grad()
        loss = model(batch).loss
        loss.backward()
        optimizer.step()
    model.eval()
    assert model(batch).loss.item() < 0.05
    prompts = [{k: v for k, v in s.items() if k != "answer"} for s in samples]
    assert model.generate_text(prompts, max_new_tokens=8, do_sample=False) == CAPTIONS
