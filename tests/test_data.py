import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search_space.registry import RegistryError
from trainables.image.augment import normalise, random_crop_flip
from trainables.image.data import class_split, load_digits, load_image_folder, make_protocol

# Development data (never needed to run): $DCSOD_DATA_DIR, else ../shared/data next to the checkout.
DATA_DIR = Path(os.environ.get("DCSOD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CIFAR_ZIP = DATA_DIR / "cifar10-train-jpeg.zip"


def test_digits_protocol_split():
    p = make_protocol("digits", seed=0)
    x, y = p.id_train
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
    assert p.num_classes == 6 and p.in_channels == 1 and p.image_size == 8
    sizes = [len(p.id_train[1]), len(p.id_val[1]), len(p.id_test[1])]
    digits = load_digits()
    assert sum(sizes) == int(np.isin(digits.labels, range(6)).sum())
    assert len(p.aux) == int(np.isin(digits.labels, [6, 7]).sum())
    assert len(p.ood["val"]) + len(p.ood["test"]) == int(np.isin(digits.labels, [8, 9]).sum())
    for _, labels in (p.id_train, p.id_val, p.id_test):
        assert set(labels.tolist()) == set(range(6))  # stratified: every class in every part
    # parts are disjoint: no image appears twice across ID train/val/test
    rows = {bytes(img.numpy()) for part in (p.id_train, p.id_val, p.id_test) for img in part[0]}
    assert len(rows) >= sum(sizes) - 5  # digits has a handful of exact duplicate images


def test_protocol_is_deterministic_per_seed():
    a, b, c = make_protocol("digits", seed=1), make_protocol("digits", seed=1), make_protocol("digits", seed=2)
    assert torch.equal(a.id_train[0], b.id_train[0]) and torch.equal(a.ood["val"], b.ood["val"])
    assert not torch.equal(a.id_train[0], c.id_train[0])


def test_class_split_errors():
    digits = load_digits()
    with pytest.raises(ValueError, match="must be disjoint"):
        class_split(digits, "x", ["0", "1"], ["1"], ["9"])
    with pytest.raises(ValueError, match="id_classes: unknown class 'eleven'"):
        class_split(digits, "x", ["eleven"], [], ["9"])


def test_make_protocol_errors_name_the_protocol():
    with pytest.raises(RegistryError, match="^protocol 'cifar10-split': cifar10-split: give exactly one of path"):
        make_protocol("cifar10-split")
    with pytest.raises(RegistryError, match="^protocol 'cifar10-vs-cifar100': cifar10: not found under root"):
        make_protocol("cifar10-vs-cifar100", root="/nonexistent")


def _write_folder(root: Path, sizes=((8, 8),), split="train"):
    rng = np.random.default_rng(0)
    for name in ["cat", "dog", "eel"]:
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True)
        for i in range(4):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("split", ["train", None])
@pytest.mark.parametrize("as_zip", [False, True])
def test_image_folder_dir_and_zip(tmp_path, split, as_zip):
    _write_folder(tmp_path / "data", split=split)
    path = tmp_path / "data"
    if as_zip:
        path = tmp_path / "data.zip"
        with zipfile.ZipFile(path, "w") as z:
            for f in sorted((tmp_path / "data").rglob("*.png")):
                z.write(f, f.relative_to(tmp_path / "data"))
    images = load_image_folder(path)
    assert images.classes == ("cat", "dog", "eel")
    assert images.images.shape == (12, 3, 8, 8) and images.images.dtype == np.uint8
    assert np.bincount(images.labels).tolist() == [4, 4, 4]
    gray = load_image_folder(path, grayscale=True)
    assert gray.images.shape == (12, 1, 8, 8)
    p = make_protocol("imagefolder-split", path=str(path), id_classes=["cat", "dog"], ood_classes=["eel"],
                      id_fractions=(0.5, 0.25, 0.25))
    assert p.num_classes == 2 and p.aux is None and len(p.ood["val"]) + len(p.ood["test"]) == 4


def test_image_folder_sizes_and_errors(tmp_path):
    _write_folder(tmp_path / "d", sizes=((8, 8), (10, 12)))
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path / "d")
    assert load_image_folder(tmp_path / "d", image_size=9).images.shape == (12, 3, 9, 9)
    with pytest.raises(ValueError, match="no such file"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")


def _zip(folder: Path, target: Path, empty_dirs=()) -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
        for d in empty_dirs:
            z.writestr(f"{d}/", "")
    return target


@pytest.mark.parametrize("as_zip", [False, True])
def test_bad_image_folders_are_one_line_naming_the_file(tmp_path, as_zip):
    from trainables.image.image_folder import ImageFolderFiles

    def prepared(name):
        root = tmp_path / name
        _write_folder(root, split=None)
        return root

    def check(root, empty_dirs=()):
        path = _zip(root, tmp_path / f"{root.name}.zip", empty_dirs) if as_zip else root
        return path, lambda: ImageFolderFiles(path).check()

    # a non-image file is skipped with one warning, and the data loads
    root = prepared("notes")
    (root / "cat" / "README.txt").write_text("labels by hand")
    path, run = check(root)
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not images.*README.txt"):
        run()
    with pytest.warns(UserWarning):
        assert load_image_folder(path).images.shape == (12, 3, 8, 8)
    # an image file that is not an image: one line naming it, from the check and from the loader
    root = prepared("corrupt")
    (root / "dog" / "9.png").write_bytes(b"not a png at all")
    path, run = check(root)
    for call in (run, lambda: load_image_folder(path)):
        with pytest.raises(ValueError, match=r"dog/9.png is not a readable image") as err:
            call()
        assert "\n" not in str(err.value)
    # an empty class folder would shift the labels of every class after it
    root = prepared("empty")
    if not as_zip:
        (root / "bee").mkdir()
    path, run = check(root, empty_dirs=("bee",))
    for call in (run, lambda: load_image_folder(path)):
        with pytest.raises(ValueError, match=r"folder .*bee.* holds no images"):
            call()


def test_truncated_and_corrupt_zips_are_one_line(tmp_path):
    from trainables.image.image_folder import ImageFolderFiles

    _write_folder(tmp_path / "d", split=None)
    data = _zip(tmp_path / "d", tmp_path / "d.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.zip' is not a readable zip file"):
        ImageFolderFiles(tmp_path / "cut.zip").check()
    with pytest.raises(ValueError, match=r"cut.zip' is not a readable zip file"):
        load_image_folder(tmp_path / "cut.zip")
    with zipfile.ZipFile(tmp_path / "d.zip") as z:  # flip one byte inside the first member's stored data
        info = z.infolist()[0]
    flipped = bytearray(data)
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    flipped[at] ^= 0xFF
    (tmp_path / "flip.zip").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"flip.zip.*(corrupt|not a readable)"):
        ImageFolderFiles(tmp_path / "flip.zip").check()


@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason=f"{CIFAR_ZIP} not present (set DCSOD_DATA_DIR)")
def test_cifar10_split_from_zip():
    p = make_protocol("cifar10-split", path=str(CIFAR_ZIP), train_limit=20000)
    assert p.info["id_classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog"]
    assert p.id_train[0].shape == (20000, 3, 32, 32)
    assert len(p.id_val[1]) == len(p.id_test[1]) == 3000
    assert len(p.aux) == 10000 and len(p.ood["val"]) == len(p.ood["test"]) == 5000


def test_random_crop_flip_semantics():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop_flip(x, g, pad=0, flip=False), x)
    flips = [random_crop_flip(x, torch.Generator().manual_seed(s), pad=0) for s in range(8)]
    for out in flips:
        for b in range(2):
            assert torch.equal(out[b], x[b]) or torch.equal(out[b], x[b].flip(-1))
    assert any(not torch.equal(out, x) for out in flips)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    out = random_crop_flip(x, torch.Generator().manual_seed(3), pad=2, flip=False)
    for b in range(2):  # every crop is a 6x6 window of the zero-padded image
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    again = random_crop_flip(x, torch.Generator().manual_seed(3), pad=2, flip=False)
    assert torch.equal(out, again)


def test_normalise():
    x = torch.full((1, 2, 2, 2), 255, dtype=torch.uint8)
    y = normalise(x, torch.tensor([0.5, 1.0]), torch.tensor([0.5, 2.0]))
    assert torch.allclose(y[0, 0], torch.ones(2, 2)) and torch.allclose(y[0, 1], torch.zeros(2, 2))
