"""Data budgets (thesis §4.4.1, issue 13 item 3): the search stages train on a seeded 50 % of the ID training
images, the final retrain on all of them; the final numbers use the whole OOD test set where a protocol has one
(cifar10-split's optional official ``test_path``, the cross-dataset protocols' test split)."""
import zipfile

import fake_stages
import numpy as np
import pytest
import torch
from PIL import Image

import trainables.image.data
from pipelines.common.settings import ConfigError
from pipelines.nas.settings import check_data, load_config
from search_space import SearchSpace, build_network
from trainables.image import DeviceData, TrainConfig, make_protocol
from trainables.image.data import CIFAR10_SPLIT, LabelledImages
from trainables.image.train import CandidateTraining

TINY = {"epochs": 1, "width": 4, "batch_size": 32, "flip": False}


@pytest.fixture(scope="module")
def digits():
    return DeviceData(make_protocol("digits"), "cpu")


def rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.numpy()) for x in images}


# --- the subset ----------------------------------------------------------------------------------
def test_train_subset_is_a_seeded_stratified_half():
    p = make_protocol("digits")
    labels = p.id_train[1].numpy()
    index = p.train_subset(0.5)
    assert len(index) == round(0.5 * len(labels)) and len(set(index.tolist())) == len(index)
    for c in range(p.num_classes):  # each class within one image of its half
        assert abs((labels[index] == c).sum() - 0.5 * (labels == c).sum()) <= 1
    assert np.array_equal(index, make_protocol("digits").train_subset(0.5))  # deterministic
    assert not np.array_equal(index, make_protocol("digits", seed=1).train_subset(0.5))  # seeded by the protocol
    assert p.train_subset(1.0) is None
    with_val = p.train_subset(0.5, with_val=True)
    assert len(with_val) == round(0.5 * (len(labels) + len(p.id_val[1])))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="train_fraction"):
            p.train_subset(bad)


def test_a_search_training_sees_half_the_training_images(digits, monkeypatch):
    n = len(digits.train_y)
    half = CandidateTraining(SearchSpace().sample(0), digits, TrainConfig(**TINY, train_fraction=0.5))
    assert half.n_train == round(0.5 * n) and half.steps_per_epoch == half.n_train // 32
    subset = rows(digits.train_x[half.index])
    seen = []
    monkeypatch.setattr(half, "step", lambda images, labels, teacher_in=None: seen.append(images) or torch.zeros(()))
    half.train()
    seen = torch.cat(seen)
    assert len(seen) == half.steps_per_epoch * 32 and rows(seen) <= subset
    assert len(rows(seen)) > 0.9 * len(subset) - 32  # one epoch covers the subset (less the dropped partial batch)
    assert len(digits.evaluation_sets("val", 0.5)[4]) == half.n_train  # maha fits on the images it trained on
    full = CandidateTraining(SearchSpace().sample(0), digits, TrainConfig(**TINY))
    assert full.index is None and full.n_train == n
    with_val = CandidateTraining(SearchSpace().sample(0), digits,
                                 TrainConfig(**TINY, train_on_val=True, eval_split="test"))
    assert with_val.n_train == n + len(digits.protocol.id_val[1])
    with pytest.raises(ValueError, match="train_on_val"):
        TrainConfig(train_on_val=True)  # scored on the validation images it trained on


def test_subset_and_validation_images_train_with_cached_teachers(digits):
    teacher = build_network(SearchSpace().sample(5), num_classes=6, in_channels=1, width=4)
    distill = {"objective": "distill", "objective_args": {"temperature": 4.0}, "teacher_mode": "cached"}
    for extra in ({"train_fraction": 0.5}, {"train_on_val": True, "eval_split": "test"}):
        config = TrainConfig(**{**TINY, "batch_size": 128}, **distill, **extra)  # a few steps suffice
        run = CandidateTraining(SearchSpace().sample(6), digits, config, teachers=[teacher])
        assert len(run.cache.train) == len(run.train_y)  # the cache is indexed like the training set
        loss, _ = run.train()
        assert np.isfinite(loss)


# --- the pipeline's stages ------------------------------------------------------------------------
@pytest.fixture
def fake(monkeypatch):
    return fake_stages.install(monkeypatch)


def test_search_stages_train_on_the_search_fraction_and_the_final_on_everything(fake, tmp_path):
    flow = fake_stages.make_flow(tmp_path, "distill.iterations=1", "search.trials=2", "warmup.n=10")
    warmup = flow.warmup()
    records, teachers = flow.distill(warmup)
    flow.predictor(records)
    searched = flow.search(records, teachers)
    flow.final(records + searched, teachers)
    assert [s.name for s in fake.stages] == ["warmup", "distill-1", "search", "compare"]
    for stage in fake.stages[:3]:
        assert stage.train["train_fraction"] == 0.5, stage.name
        assert TrainConfig(**stage.train).eval_split == "val"
    (_, final, _, _), = fake.retrained
    assert final["train_fraction"] == 1.0 and final["train_on_val"] is True and final["eval_split"] == "test"
    assert fake.stages[3].train == final  # report.md's comparison retrains exactly like the final model
    assert final["epochs"] == flow.cfg["final"]["epochs"] and TrainConfig(**final)  # a valid TrainConfig


def test_search_fraction_and_train_on_val_settings(tmp_path):
    flow = fake_stages.make_flow(tmp_path, "search_fraction=1.0", "final.train_on_val=false")
    assert flow.warmup_train()["train_fraction"] == 1.0 and flow.distill_train()["train_fraction"] == 1.0
    assert flow.final_train(None)["train_on_val"] is False
    for sets, fragment in [(["search_fraction=0"], "search_fraction"), (["search_fraction=1.5"], "search_fraction"),
                           (["train.train_fraction=0.3"], "search_fraction"),
                           (["train.train_on_val=true"], "final.train_on_val"),
                           (["final.train_on_val=maybe"], "final.train_on_val")]:
        with pytest.raises(ConfigError, match=fragment):
            load_config("ci", sets)


# --- test sets ------------------------------------------------------------------------------------
def write_zip(path, split: str | None, per_class: int, offset: int) -> None:
    """An ImageFolder zip of the ten CIFAR-10 class names, 8x8 RGB images, each image unique (``offset``)."""
    names = CIFAR10_SPLIT["id"] + CIFAR10_SPLIT["aux"] + CIFAR10_SPLIT["ood"]
    with zipfile.ZipFile(path, "a") as z:
        for c, name in enumerate(sorted(names)):
            for i in range(per_class):
                image = np.full((8, 8, 3), offset + 10 * i + c, np.uint8)
                png = path.parent / "img.png"
                Image.fromarray(image).save(png)
                z.write(png, f"{split}/{name}/{i}.png" if split else f"{name}/{i}.png")


def test_cifar10_split_test_path_gives_the_final_test_numbers(tmp_path):
    train_zip, test_zip = tmp_path / "train.zip", tmp_path / "test.zip"
    write_zip(train_zip, "train", per_class=8, offset=0)
    write_zip(test_zip, "test", per_class=3, offset=100)
    official = trainables.image.data.load_image_folder(test_zip)
    name_of = {bytes(x): official.classes[y] for x, y in zip(official.images, official.labels)}
    p = make_protocol("cifar10-split", path=str(train_zip), test_path=str(test_zip))
    assert len(p.id_test[1]) == 3 * 6 and len(p.ood["test"]) == 3 * 2  # all of the official test images
    assert [name_of[bytes(x.numpy())] for x in p.id_test[0]] == [p.info["id_classes"][y] for y in p.id_test[1]]
    assert sorted(name_of[bytes(x.numpy())] for x in p.ood["test"]) == sorted(CIFAR10_SPLIT["ood"] * 3)
    assert len(p.ood["val"]) == 8 * 2 and not rows(p.ood["val"]) & rows(p.ood["test"])  # OOD val: training images
    assert len(p.id_train[1]) + len(p.id_val[1]) == 8 * 6  # the ID training images are all ID train/val now
    assert not (rows(p.id_train[0]) | rows(p.id_val[0])) & rows(p.id_test[0])
    both = tmp_path / "both.zip"  # one zip holding train/ and test/
    write_zip(both, "train", per_class=8, offset=0)
    write_zip(both, "test", per_class=3, offset=100)
    q = make_protocol("cifar10-split", path=str(both), test_path=str(both))
    assert torch.equal(q.ood["test"], p.ood["test"]) and torch.equal(q.id_train[0], p.id_train[0])
    without = make_protocol("cifar10-split", path=str(train_zip))  # no official test set: OOD split val/test
    assert len(without.ood["val"]) + len(without.ood["test"]) == 16
    assert not rows(without.ood["val"]) & rows(without.ood["test"])


def test_check_data_names_a_missing_test_path(tmp_path):
    import io
    import zipfile

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as z:  # a readable ImageFolder zip: only test_path is wrong
        z.writestr("train/airplane/0.png", png.getvalue())
    cfg = load_config("cifar10-split", [f"protocol_options.path={tmp_path / 'train.zip'}",
                                        f"protocol_options.test_path={tmp_path / 'missing.zip'}"])
    with pytest.raises(ConfigError, match="protocol_options.test_path"):
        check_data(cfg)


def test_cross_dataset_final_numbers_use_the_whole_ood_test_split(monkeypatch):
    def fake_cifar(name, root, train, download=False):
        n = 60 if train else 20  # every image unique: its pixels are its number
        offset = {("cifar10", True): 0, ("cifar10", False): 60, ("cifar100", True): 80, ("cifar100", False): 140}
        values = (np.arange(n) + offset[name, train]).astype(np.uint8)
        images = np.ascontiguousarray(np.broadcast_to(values[:, None, None, None], (n, 3, 4, 4)))
        return LabelledImages(images, np.arange(n, dtype=np.int64) % 3, ("a", "b", "c"))

    monkeypatch.setattr(trainables.image.data, "load_torchvision_cifar", fake_cifar)
    p = make_protocol("cifar10-vs-cifar100", root="unused")
    ood_test, ood_train = fake_cifar("cifar100", "", False), fake_cifar("cifar100", "", True)
    assert torch.equal(p.ood["test"], torch.from_numpy(ood_test.images))  # all of it
    assert len(p.ood["val"]) == 10 and rows(p.ood["val"]) <= rows(torch.from_numpy(ood_train.images))
