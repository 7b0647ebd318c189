"""The packaged model (what the registry stores) reads every pixel format a user passes the same way, or refuses
it in one line: never a silently wrong number."""
import numpy as np
import pytest
import torch
from torch import nn

from trainables.image.export import ScoredClassifier


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


def tiny_scored_classifier() -> ScoredClassifier:
    """A DCSODNet of width 4 for 1-channel 8x8 images, 6 classes (what the served flavour can rebuild)."""
    from search_space import SearchSpace, build_network

    torch.manual_seed(0)
    net = build_network(SearchSpace().sample_many(1, seed=0)[0], 6, 1, 4)
    return ScoredClassifier(net, mean=[0.3], std=[0.2], class_names=[str(i) for i in range(6)])


PIXELS = np.random.default_rng(1).integers(0, 256, (5, 1, 8, 8))


def same_pixels_every_format(pixels: np.ndarray) -> list:
    """``pixels`` (integers 0..255) as uint8, int64, float32 / float64 in [0, 1], numpy and torch."""
    unit = pixels / 255.0
    return [pixels.astype(np.uint8), pixels.astype(np.int64), unit.astype(np.float32), unit,
            torch.as_tensor(pixels.astype(np.uint8)), torch.as_tensor(pixels), torch.as_tensor(unit),
            torch.as_tensor(unit, dtype=torch.float32)]


def test_served_classifier_gives_identical_outputs_for_every_pixel_format():
    from trainables.image.export import OUTPUT_KEYS, ServedClassifier

    m = tiny_scored_classifier()
    served = ServedClassifier(m)
    want = m.outputs(PIXELS.astype(np.uint8))
    assert tuple(want) == OUTPUT_KEYS and want["logits"].shape == (5, 6) and want["score_msp"].shape == (5,)
    np.testing.assert_array_equal(want["predicted_class"], want["logits"].argmax(1))
    torch.testing.assert_close(torch.as_tensor(want["logits"]), m(PIXELS.astype(np.uint8)))
    torch.testing.assert_close(torch.as_tensor(want["score_energy"]), m.score(PIXELS.astype(np.uint8), "energy"))
    for images in [*same_pixels_every_format(PIXELS), PIXELS.tolist()]:
        got = served.predict(images, {"pixels": "auto"})
        for key in OUTPUT_KEYS:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} for {type(images)}")
    explicit = [(PIXELS.astype(np.float64), "0-255"), (PIXELS / 255.0, "0-1")]  # e.g. JSON's 128.0
    for images, scale in explicit:
        np.testing.assert_array_equal(served.predict(images, {"pixels": scale})["logits"], want["logits"])


@pytest.mark.parametrize("images, params, message", [
    (PIXELS / 16.0, None, r"float pixels must be in \[0, 1\], got values from [0-9.]+ to 15.9375"),
    (np.minimum(PIXELS, 1), None, r"maximum is 1 are ambiguous.*\"0-255\""),
    (PIXELS / 2.0, {"pixels": "0-255"}, r"pixels='0-255' needs whole numbers"),
    (PIXELS, {"pixels": "0-1"}, r"pixels='0-1' needs values in \[0, 1\], got values from [0-9]+ to 255"),
    (PIXELS, {"pixels": "0..255"}, r"params pixels: expected one of auto, 0-255, 0-1, got '0..255'"),
    (np.full((2, 1, 8, 8), np.nan), {"pixels": "0-255"}, r"must be in 0..255, got values from nan"),
    ([[[[1, 2]]], [[[3]]]], None, r"expected a numeric array \(N, 1, H, W\)"),
    ({"images": PIXELS}, None, r"expected an array \(N, C, H, W\)"),
])
def test_served_classifier_refuses_bad_pixels_in_one_line(images, params, message):
    from mlflow.exceptions import MlflowException

    from trainables.image.export import ServedClassifier

    with pytest.raises(MlflowException, match=message) as err:
        ServedClassifier(tiny_scored_classifier()).predict(images, params)
    assert "\n" not in err.value.message and err.value.get_http_status_code() == 400


def test_all_black_integer_images_are_not_ambiguous():
    from trainables.image.export import ServedClassifier

    m = tiny_scored_classifier()
    black = np.zeros((2, 1, 8, 8), dtype=np.int64)
    np.testing.assert_array_equal(ServedClassifier(m).predict(black)["logits"], m.outputs(black / 1.0)["logits"])


def test_served_files_rebuild_the_model_without_pickles(tmp_path):
    from trainables.image.export import SERVED_RECIPE, SERVED_WEIGHTS, load_served, save_served

    m = tiny_scored_classifier()
    save_served(m, tmp_path / "served")
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == sorted([SERVED_RECIPE, SERVED_WEIGHTS])
    again = load_served(tmp_path / "served")
    torch.testing.assert_close(again(PIXELS), m(PIXELS), rtol=0, atol=0)
    assert again.class_names == m.class_names
    with pytest.raises(ValueError, match="Sequential has none"):
        save_served(model(), tmp_path / "other")
