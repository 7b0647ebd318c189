"""The packaged model (what the registry stores) reads every pixel format a user passes the same way, or refuses
it in one line: never a silently wrong number."""
import numpy as np
import pytest
import torch
from torch import nn

from trainables.export import ScoredClassifier


def model() -> ScoredClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    return ScoredClassifier(net, mean=[0.5, 0.4], std=[0.2, 0.3])


def test_integer_float_numpy_and_torch_pixels_give_the_same_logits():
    m = model()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 2, 4, 4))
    want = m(torch.as_tensor(pixels, dtype=torch.uint8))
    for images in (pixels.astype(np.uint8), pixels.astype(np.int64), torch.as_tensor(pixels),
                   pixels / 255.0, (pixels / 255.0).astype(np.float32), torch.as_tensor(pixels / 255.0)):
        torch.testing.assert_close(m(images), want)
        torch.testing.assert_close(m.score(images), m.score(torch.as_tensor(pixels, dtype=torch.uint8)))


@pytest.mark.parametrize("images, message", [
    (np.full((2, 2, 4, 4), 16.0), r"float pixels must be in \[0, 1\], got values from 16 to 16; .*/ 16"),
    (np.full((2, 2, 4, 4), np.nan, dtype=np.float32), r"float pixels must be in \[0, 1\]"),
    (np.full((2, 2, 4, 4), 300), r"integer pixels must be in 0..255, got values from 300 to 300"),
    (np.zeros((2, 3, 4, 4)), r"expected shape \(N, 2, H, W\), got \(2, 3, 4, 4\)"),
    (np.zeros((2, 4, 4)), r"expected shape \(N, 2, H, W\)"),
])
def test_out_of_range_or_misshaped_pixels_are_one_line(images, message):
    with pytest.raises(ValueError, match=message) as err:
        model()(images)
    assert "\n" not in str(err.value)
