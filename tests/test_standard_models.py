"""Standard CNNs as registered fixed models (``search_space.standard_models``) and the architecture mapping
(``search_space.architecture``): built, trained, scored and recorded like genotypes."""
import json
import math

import pytest
import torch

from search_space import (
    STANDARD_MODELS,
    Genotype,
    SearchSpace,
    StandardModel,
    arch_hash_of,
    architecture_json,
    build_model,
    count_params,
    describe_architecture,
    parse_architecture,
)
from search_space.registry import RegistryError

# The smallest valid depth of each entry, so that every entry runs in milliseconds.
SMALL = {"resnet": {"depth": 8}, "wide_resnet": {"depth": 10, "widen": 1}, "densenet_bc": {"depth": 10}}
ENTRIES = [pytest.param(name, id=name) for name in STANDARD_MODELS]


def small(name: str, **kwargs) -> torch.nn.Module:
    return STANDARD_MODELS.build(name, **{"width": 4, **SMALL.get(name, {}), **kwargs})


# ------------------------------------------------------------------------------------ every entry
@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 8, 8)], ids=["rgb32", "gray8"])
def test_forward_features_and_backward(name, shape):
    torch.manual_seed(0)
    model = small(name, num_classes=7, in_channels=shape[1])
    assert model.in_channels == shape[1]
    x = torch.randn(shape)
    assert model(x).shape == (2, 7)
    logits, features = model(x, return_features=True)
    assert logits.shape == (2, 7) and features.shape == (2, model.feature_dim)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ENTRIES)
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(0)
    model = small(name).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 32), (2, 1, 16, 16), (3, 32, 32)])
def test_bad_input_is_the_network_value_error(name, shape):
    with pytest.raises(ValueError, match=r"^x: expected shape \(N, 3, H, W\) with H, W >= 8, got "):
        small(name)(torch.zeros(shape))


@pytest.mark.parametrize("name", ENTRIES)
def test_width_scales_every_entry(name):
    assert count_params(small(name, width=8)) > count_params(small(name, width=4))


# ------------------------------------------------------------------------------------ the canonical models
# Published figures (M parameters, as printed in the papers) and the exact counts of the reference CIFAR
# implementations: ResNet option A (zero-padding shortcuts, 2,752 fewer parameters than our projections),
# the WRN authors' code, bamos/densenet.pytorch.
CANONICAL = [
    ("resnet", {"depth": 20}, 0.27, 269_722),
    ("resnet", {"depth": 110}, 1.7, 1_727_962),
    ("wide_resnet", {"depth": 16, "widen": 4}, 2.7, 2_748_890),
    ("wide_resnet", {"depth": 40, "widen": 2}, 2.2, 2_243_546),
    ("densenet_bc", {"depth": 100}, 0.8, 769_162),
]


@pytest.mark.parametrize("name, args, published, reference", CANONICAL,
                         ids=[f"{n}-{'-'.join(map(str, a.values()))}" for n, a, _, _ in CANONICAL])
def test_canonical_parameter_counts(name, args, published, reference):
    params = count_params(StandardModel(name, args).build(num_classes=10, in_channels=3, width=16))
    decimals = len(str(published).split(".")[1])
    assert round(params / 1e6, decimals) == published, params
    assert abs(params / reference - 1) < 0.03, (params, reference)


def test_canonical_models_are_the_defaults_at_width_16():
    assert count_params(STANDARD_MODELS.build("resnet")) == 272_474
    assert count_params(STANDARD_MODELS.build("densenet_bc")) == 769_162
    assert STANDARD_MODELS.build("densenet_bc", width=32).feature_dim > STANDARD_MODELS.build("densenet_bc").feature_dim


@pytest.mark.parametrize("name, depth, form", [("resnet", 21, "6n+2"), ("wide_resnet", 15, "6n+4"),
                                               ("densenet_bc", 99, "6n+4"), ("resnet", 2, "6n+2")])
def test_bad_depth_is_one_line_naming_the_entry_and_the_form(name, depth, form):
    for make in (lambda: STANDARD_MODELS.build(name, depth=depth), lambda: StandardModel(name, {"depth": depth})):
        with pytest.raises(RegistryError) as err:
            make()
        message = str(err.value)
        assert message.startswith(f"standard model {name!r}: depth: expected {form}") and "\n" not in message


@pytest.mark.parametrize("name, args, match", [
    ("resnet", {"depth": 20.0}, "depth: expected 6n\\+2"),
    ("wide_resnet", {"dropout": 1.5}, "dropout: expected a probability"),
    ("densenet_bc", {"compression": 0}, "compression: expected a fraction"),
    ("densenet_bc", {"growth": 0}, "growth: expected an integer >= 1"),
    ("resnet", {"width": 0}, "width: expected an integer >= 1"),
    ("resnet", {"dept": 20}, "unknown argument\\(s\\) dept; valid arguments: num_classes, in_channels, width, depth"),
    ("resnet", {"num_classes": 3}, "args may not set num_classes"),
    ("resnet", {"depth": [20]}, "JSON scalar values"),
    ("vgg", {}, "unknown 'vgg'; valid: resnet, "),
])
def test_bad_presets_fail_at_construction(name, args, match):
    with pytest.raises(RegistryError, match=match):
        StandardModel(name, args)


# ------------------------------------------------------------------------------------ identity and JSON
def test_json_round_trip_and_sorted_args():
    model = StandardModel("wide_resnet", {"widen": 4, "depth": 16})
    assert list(model.args) == ["depth", "widen"]
    text = model.to_json()
    assert text == '{"args":{"depth":16,"widen":4},"model":"wide_resnet"}'
    assert StandardModel.from_json(text) == model and StandardModel.from_dict(json.loads(text)) == model
    assert hash(StandardModel.from_json(text)) == hash(model) and len({model, StandardModel.from_json(text)}) == 1
    assert StandardModel.from_dict({"model": "resnet"}) == StandardModel("resnet", {})
    for bad, match in [("{oops", "malformed JSON"), ("[1]", "expected a JSON object"),
                       ('{"model":"resnet","depth":20}', "unknown field")]:
        with pytest.raises(ValueError, match=match):
            StandardModel.from_json(bad)


def test_arch_hash_is_readable_stable_and_distinct():
    assert StandardModel("resnet", {"depth": 20}).arch_hash == "resnet-depth20"
    assert StandardModel("wide_resnet", {"widen": 4, "depth": 16}).arch_hash == "wide_resnet-depth16-widen4"
    assert StandardModel("wide_resnet", {"depth": 16, "dropout": 0.3}).arch_hash == "wide_resnet-depth16-dropout0.3"
    assert StandardModel("resnet", {"depth": 20, "width": 8}).arch_hash == "resnet-depth20-width8"
    hashes = {StandardModel(n, a).arch_hash for n, a, _, _ in CANONICAL} | {StandardModel("resnet", {}).arch_hash}
    assert len(hashes) == len(CANONICAL) + 1
    assert all(h.replace("-", "").replace("_", "").replace(".", "").isalnum() for h in hashes)


def test_build_takes_the_callers_width_unless_args_fix_it():
    assert StandardModel("resnet", {"depth": 8}).build(6, 1, width=4).feature_dim == 16
    assert StandardModel("resnet", {"depth": 8, "width": 2}).build(6, 1, width=4).feature_dim == 8


def test_parse_architecture_keeps_genotypes_as_they_were():
    genotype = SearchSpace().sample(3)
    text = genotype.to_json()
    for value in (genotype, text, json.loads(text)):
        parsed = parse_architecture(value)
        assert isinstance(parsed, Genotype) and parsed == genotype
        assert arch_hash_of(value) == genotype.arch_hash and architecture_json(value) == text
    model = StandardModel("resnet", {"depth": 8})
    for value in (model, model.to_json(), model.to_dict()):
        assert parse_architecture(value) == model and arch_hash_of(value) == "resnet-depth8"
    for bad, match in [("{oops", "architecture: malformed JSON"), ("[1, 2]", "architecture: expected a JSON object"),
                       (3, "architecture: expected a Genotype, StandardModel"), ('{"cells": 1}', "^cells: ")]:
        with pytest.raises(ValueError, match=match):
            parse_architecture(bad)


def test_build_model_and_describe_cover_both_kinds():
    genotype = SearchSpace().sample(0)
    net = build_model(genotype.to_json(), num_classes=6, in_channels=1, width=4)
    assert type(net).__name__ == "DCSODNet" and net.feature_dim == 16
    info = describe_architecture(StandardModel("resnet", {"depth": 8}).to_json(), 6, 1, 8, 4)
    assert info["arch_hash"] == "resnet-depth8" and info["params"] == count_params(build_model(
        StandardModel("resnet", {"depth": 8}), 6, 1, 4)) and info["flops"] > 0
    assert describe_architecture(genotype, width=4)["arch_hash"] == genotype.arch_hash


# ------------------------------------------------------------------------------------ trained like genotypes
TINY = {"epochs": 1, "width": 4, "flip": False, "batch_size": 128}


def test_train_candidate_trains_and_records_a_standard_model():
    from trainables.image import TrainConfig, make_protocol, train_candidate

    model = StandardModel("resnet", {"depth": 8})
    r = train_candidate(model.to_json(), make_protocol("digits"), TrainConfig(**TINY))
    assert all(math.isfinite(r[k]) and 0 <= r[k] <= 1 for k in ("auroc_msp", "auroc_maha", "id_acc"))
    assert r["arch_hash"] == "resnet-depth8" and r["genotype"] == model.to_json()
    net = model.build(6, 1, width=4)
    net.load_state_dict(r["state_dict"])  # the weights are the standard model's
    assert r["params"] == count_params(net)


def test_candidate_trainable_takes_a_standard_model_config():
    from trainables.image.tune_trainable import candidate_trainable

    model = StandardModel("densenet_bc", {"depth": 10})
    config = {"genotype": model.to_json(), "protocol": "digits", "protocol_options": {},
              "train": {**TINY, "scores": ["msp", "maha"]}, "seed": 1, "stage": "baseline", "iteration": 0}
    r = candidate_trainable(config)
    assert r["error"] is None and r["arch_hash"] == "densenet_bc-depth10" and r["genotype"] == model.to_json()
    assert math.isfinite(r["auroc_msp"]) and r["stage"] == "baseline" and "state_dict" not in r
    diverged = candidate_trainable({**config, "train": {**config["train"], "lr": 1e12}})
    assert diverged["error"].startswith("diverged:") and diverged["arch_hash"] == "densenet_bc-depth10"
