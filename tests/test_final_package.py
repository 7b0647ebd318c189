"""Packaging the final model from what the retrain worker saved (no data set loaded in the driver)."""
from types import SimpleNamespace

import torch

from pipelines.nas.final import MODEL_INFO_FILE, example_images, load_model_info, model_info, package
from search_space import SearchSpace, build_network
from trainables.image import make_protocol

CFG = {"protocol": "digits", "protocol_options": {"seed": 0}}


def test_model_info_survives_a_weights_only_round_trip_and_packages_a_scoring_model(tmp_path):
    protocol = make_protocol("digits", seed=0)
    info = model_info(protocol)
    assert info["examples"].dtype == torch.uint8 and info["examples"].shape == (4, 1, 8, 8)
    assert info["class_names"] == ["0", "1", "2", "3", "4", "5"] and info["num_classes"] == 6
    (tmp_path / "final").mkdir()
    torch.save(info, tmp_path / "final" / MODEL_INFO_FILE)
    run = SimpleNamespace(path=tmp_path)
    saved = load_model_info(run, {"protocol": "no-such-protocol"})  # read from the file, the protocol is not built
    torch.testing.assert_close(saved["mean"], info["mean"])

    genotype = SearchSpace().sample_many(1, seed=0)[0]
    net = build_network(genotype, 6, 1, 4)
    model = package(genotype.to_json(), net.state_dict(), saved, {"width": 4})
    images = example_images(saved)
    assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() <= 1.0
    net.eval()
    expected = net((images - info["mean"].reshape(1, -1, 1, 1)) / info["std"].reshape(1, -1, 1, 1))
    torch.testing.assert_close(model(images), expected)
    torch.testing.assert_close(model(saved["examples"]), expected)  # uint8 input is scaled the same way
    assert model.score(images).shape == (4,) and model.class_names == info["class_names"]


def test_run_directories_without_saved_info_fall_back_to_the_protocol(tmp_path):
    info = load_model_info(SimpleNamespace(path=tmp_path), CFG)
    assert info["num_classes"] == 6 and info["in_channels"] == 1 and len(info["examples"]) == 4


def test_ddp_retrain_on_two_ray_train_workers_with_teachers(ray_local, tmp_path):
    """final.workers = 2: gradient all-reduce over gloo, rank 0 saves weights and model info; a rerun reads the
    saved outcome instead of training again."""
    from pipelines.nas.final import retrain
    from trainables.image import TrainConfig, train_candidate
    from trainables.image.tune_trainable import TeacherBundle

    protocol = make_protocol("digits", seed=0)
    teacher = SearchSpace().sample(9)
    tiny = {"epochs": 1, "width": 4, "batch_size": 32, "flip": False, "scores": ["msp"]}
    weights = train_candidate(teacher, protocol, TrainConfig(**tiny))["state_dict"]
    bundle = TeacherBundle([teacher.to_json()], [weights], width=4)
    cfg = {**CFG, "seed": 0, "resources": {"cpu": 1, "gpu": 0}, "final": {"workers": 2}}
    genotype = SearchSpace().sample(3).to_json()
    run = SimpleNamespace(path=tmp_path)
    metrics, state_dict = retrain(run, cfg, genotype, {**tiny, "objective": "distill"}, bundle)
    assert metrics["world_size"] == 2 and 0.0 <= metrics["auroc_msp"] <= 1.0
    assert (tmp_path / "final" / MODEL_INFO_FILE).exists()
    build_network(SearchSpace().sample(3), 6, 1, 4).load_state_dict(state_dict)
    again, _ = retrain(run, {**cfg, "final": {"workers": 64}}, genotype, tiny, None)  # would fail if it trained
    assert again == metrics
