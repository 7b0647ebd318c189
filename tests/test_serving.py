"""``mlflow models serve`` of a registered DCSOD model: integer pixels 0..255 and float pixels in [0, 1] posted as
JSON give the in-process model's logits and OOD scores; a batch that fits neither is HTTP 400 with our one-line
reason, never a 200 with wrong numbers."""
import numpy as np
import pytest
from servers import ModelServer
from test_export import PIXELS
from test_model_registry import register_tiny_model

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A started ``mlflow models serve`` of ``models:/tiny@champion`` and the in-process model it serves."""
    root = tmp_path_factory.mktemp("serving")
    uri, name, model = register_tiny_model(root)
    server = ModelServer(f"models:/{name}@champion", uri, root).start()
    try:
        yield server.wait(), model
    finally:
        server.stop()


def check_same(answer: dict, want: dict) -> None:
    """The served ``predictions`` equal :meth:`ScoredClassifier.outputs` (JSON carries float32 logits exactly)."""
    got = answer["predictions"]
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose(np.array(got["logits"], dtype=np.float32), want["logits"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["predicted_class"], want["predicted_class"])
    for key in ("score_msp", "score_energy"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)


def test_integer_and_float_pixels_give_the_in_process_answer(served):
    server, model = served
    want = model.outputs(PIXELS.astype(np.uint8))
    status, answer = server.invoke({"inputs": PIXELS.tolist()})  # JSON integers: 0..255
    assert status == 200, answer
    check_same(answer, want)
    status, answer = server.invoke({"inputs": (PIXELS / 255.0).tolist()})  # JSON floats: [0, 1]
    assert status == 200, answer
    check_same(answer, want)
    status, answer = server.invoke({"inputs": PIXELS.astype(float).tolist(), "params": {"pixels": "0-255"}})
    assert status == 200, answer  # 0..255 written with decimals, said so explicitly
    check_same(answer, want)


@pytest.mark.parametrize("payload, reason", [
    ({"inputs": (PIXELS / 16.0).tolist()}, "float pixels must be in [0, 1]"),
    ({"inputs": np.minimum(PIXELS, 1).tolist()}, "integer pixels whose maximum is 1 are ambiguous"),
    ({"inputs": PIXELS.tolist(), "params": {"pixels": "0..255"}}, "params pixels: expected one of auto"),
    ({"inputs": PIXELS[:, :, :4].tolist()}, None),  # 8x4 images: smaller than the network's minimum
])
def test_a_bad_batch_is_http_400_with_the_reason(served, payload, reason):
    server, _ = served
    status, answer = server.invoke(payload)
    assert status == 400, answer
    assert "predictions" not in answer
    if reason is not None:
        assert reason in answer["message"].splitlines()[-1]
