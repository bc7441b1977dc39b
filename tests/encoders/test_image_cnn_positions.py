"""ImageCNN(positions=True): 2-D sin-cos positions projected into the tokens (what a language model reading the
tokens as a sequence needs to tell left from right)."""

from __future__ import annotations

import math

import torch

from polymodal.encoders.image import ImageCNN
from polymodal.encoders.layers import sincos_grid_features


def test_sincos_grid_features_by_hand():
    feats = sincos_grid_features(2, 3, num_frequencies=2)
    assert feats.shape == (6, 8)
    # token (row 1, col 2): y = 1.5 / 2, x = 2.5 / 3; layout [sin(y f0), sin(y f1), sin(x f0), sin(x f1), cos(...)]
    y, x = 0.75, 2.5 / 3
    expected = [math.sin(math.pi * y), math.sin(2 * math.pi * y), math.sin(math.pi * x), math.sin(2 * math.pi * x),
                math.cos(math.pi * y), math.cos(2 * math.pi * y), math.cos(math.pi * x), math.cos(2 * math.pi * x)]
    torch.testing.assert_close(feats[5], torch.tensor(expected), atol=1e-6, rtol=0)
    # cos(pi x) falls monotonically from left to right along a row: x is linearly readable
    row = sincos_grid_features(4, 4, 8)[:4, 16 + 8]
    assert bool((row[1:] < row[:-1]).all())


def test_positions_start_at_zero_and_learn():
    torch.manual_seed(0)
    plain = ImageCNN(channels=[8, 16])
    placed = ImageCNN(channels=[8, 16], positions=True)
    missing = placed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["positions.bias", "positions.weight"]
    pixels = {"pixel_values": torch.randn(2, 3, 16, 16)}
    plain.eval(), placed.eval()
    # zero-initialised projection: the same features as without positions at the start
    torch.testing.assert_close(placed.forward_features(pixels)[0], plain.forward_features(pixels)[0])
    placed.train()
    tokens, mask = placed.forward_features(pixels)
    assert tokens.shape == (2, 64, 16) and bool(mask.all())
    tokens.pow(2).sum().backward()
    assert placed.positions.weight.grad.abs().sum() > 0  # it trains
    # any input size: the grid features follow the feature map
    assert placed.forward_features({"pixel_values": torch.randn(1, 3, 24, 32)})[0].shape == (1, 12 * 16, 16)
