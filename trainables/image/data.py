"""Image sources and near-OOD protocols.

A *source* is a labelled image set held as ``uint8`` arrays ``(N, C, H, W)`` with ``int64`` labels and class
names: scikit-learn's ``digits`` (embedded, offline), CIFAR-10/100 through torchvision (a local root, or a
download where the network allows), or any ImageFolder directory or ``.zip`` of one (``<split>/<class>/*.jpg``
or ``<class>/*.jpg``).

A *protocol* names the in-distribution (ID) data, optional auxiliary outliers (for outlier exposure and
distillation; never evaluated) and OOD test data, each split deterministically (seeded) into the parts it
needs: ID train/val/test, OOD val/test. Search stages score candidates on the *val* parts; the final model is
reported on the *test* parts. ID labels are remapped to ``0 .. num_classes-1``.

Where the OOD *test* images come from (the thesis, §4.4.1, reports the final numbers on the whole OOD test set):

* a cross-dataset protocol (``cifar10-vs-cifar100``): the OOD test part is the other dataset's **whole** test
  split; the OOD validation part the search scores on is a seeded sample of the other dataset's *training*
  split (as many images as half its test split), so validation and test never share an image;
* a class split with an official test set (``cifar10-split`` / ``imagefolder-split`` with ``test_path``): ID
  and OOD test parts are **all** images of the ID and OOD classes in ``test_path``; the OOD validation part is
  every OOD-class image of the training images;
* a class split without one (``digits``, or no ``test_path``): the OOD classes' images are the only OOD set, so
  they are split ``ood_val_fraction`` (0.5) for validation and the rest for test, disjoint.

Data budgets: :meth:`Protocol.train_subset` is the seeded, class-stratified part of the ID training images a
training with ``TrainConfig.train_fraction < 1`` uses (the search stages: 50 %, thesis §4.4.1).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from search_space.registry import Registry
from trainables.image.image_folder import ImageFolderFiles


@dataclass(frozen=True)
class LabelledImages:
    """``images``: uint8 ``(N, C, H, W)``; ``labels``: int64 ``(N,)`` indexing ``classes``."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def select(self, mask_or_index: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[mask_or_index], self.labels[mask_or_index], self.classes)

    def class_indices(self, names: Sequence[str | int], where: str) -> list[int]:
        """Class names (or indices) -> indices; unknown names are a ValueError naming ``where``."""
        out = []
        for name in names:
            if isinstance(name, int) and 0 <= name < len(self.classes):
                out.append(name)
            elif str(name) in self.classes:
                out.append(self.classes.index(str(name)))
            else:
                raise ValueError(f"{where}: unknown class {name!r}; valid: {', '.join(self.classes)}")
        return out


# --- sources -------------------------------------------------------------------------------------

def load_digits() -> LabelledImages:
    """scikit-learn's 1,797 8x8 grayscale digits, pixel values 0..16 rescaled to 0..255."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return LabelledImages(images, data.target.astype(np.int64), tuple(str(d) for d in range(10)))


def load_torchvision_cifar(name: str, root: str | os.PathLike, train: bool, download: bool = False) -> LabelledImages:
    """CIFAR-10 or CIFAR-100 (``name`` = 'cifar10' / 'cifar100') from a torchvision root."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise ValueError(f"{name}: not found under root {str(root)!r} ({err}); pass download=true where the "
                         "network allows, or a root holding the extracted dataset") from None
    return LabelledImages(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, np.int64),
                          tuple(ds.classes))




def load_image_folder(path: str | os.PathLike, split: str | None = None, image_size: int | None = None,
                      grayscale: bool = False) -> LabelledImages:
    """An ImageFolder directory or zip: ``[<split>/]<class>/<image>``; classes sorted by name.

    ``split`` picks a top-level folder (e.g. 'train'); by default a single top-level folder that holds class
    folders is entered automatically. Images must share one size unless ``image_size`` resizes them all.
    """
    from PIL import Image

    path = Path(path)
    folder = ImageFolderFiles(path)
    folder.check_folders()
    folder.warn_skipped()
    names = folder.images
    parts = [Path(n).parts for n in names]
    if split is not None:
        parts = [p for p in parts if len(p) == 3 and p[0] == split]
    elif parts and all(len(p) == 3 for p in parts) and len({p[0] for p in parts}) == 1:
        pass  # a single split folder such as train/<class>/<img>
    else:
        parts = [p for p in parts if len(p) == 2]
    if not parts:
        raise ValueError(f"path: no images in ImageFolder layout [<split>/]<class>/<image> under {str(path)!r}")
    parts.sort()
    classes = tuple(sorted({p[-2] for p in parts}))
    mode = "L" if grayscale else "RGB"
    images = []
    for p in parts:
        try:
            img = folder.open_image("/".join(p)).convert(mode)
        except OSError as err:  # a header that reads but pixels that do not (a truncated file)
            raise ValueError(f"path: {folder.where('/'.join(p))} is not a readable image ({err})") from None
        if image_size is not None and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        images.append(np.asarray(img))
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"path: images of different sizes under {str(path)!r}; set image_size to resize them")
    array = np.stack(images)
    array = array[:, None] if grayscale else array.transpose(0, 3, 1, 2)
    labels = np.asarray([classes.index(p[-2]) for p in parts], np.int64)
    return LabelledImages(np.ascontiguousarray(array), labels, classes)


# --- protocols -----------------------------------------------------------------------------------

@dataclass
class Protocol:
    """Tensors on the CPU (uint8 images NCHW, int64 labels); trainers move them to their device once.

    ``ood`` maps a split name ('val', 'test') to the OOD images of that split; ``aux`` may be None.
    """

    name: str
    num_classes: int
    id_train: tuple[torch.Tensor, torch.Tensor]
    id_val: tuple[torch.Tensor, torch.Tensor]
    id_test: tuple[torch.Tensor, torch.Tensor]
    ood: dict[str, torch.Tensor]
    aux: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.id_train[0].shape[1])

    @property
    def image_size(self) -> int:
        return int(self.id_train[0].shape[-1])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the ID training images in [0, 1] units, shape (C,)."""
        x = self.id_train[0].double() / 255.0
        return x.mean(dim=(0, 2, 3)).float(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).float()

    def training_labels(self, with_val: bool = False) -> torch.Tensor:
        """Labels of the ID training images, followed by those of the ID validation images if ``with_val``."""
        return torch.cat([self.id_train[1], self.id_val[1]]) if with_val else self.id_train[1]

    def train_subset(self, fraction: float, with_val: bool = False) -> np.ndarray | None:
        """Sorted indices of the seeded, class-stratified ``fraction`` of the ID training images (``with_val``:
        of the training then validation images), or None for ``fraction == 1`` (all of them).

        ``round(fraction · n)`` images, each class within one image of its share. Drawn from the protocol's seed
        (``info["seed"]``, the seed of its split) on a stream of its own: every training of a run with the same
        ``fraction`` (every candidate of every search stage) sees the same images."""
        fraction = float(fraction)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"train_fraction: expected a fraction in (0, 1], got {fraction!r}")
        labels = self.training_labels(with_val).numpy()
        n = len(labels)
        m = round(fraction * n)
        if m >= n:
            return None
        if m < 1:
            raise ValueError(f"train_fraction: {fraction} of {n} training images is no image")
        rng = np.random.default_rng([int(self.info.get("seed", 0)), 0x5EA2C])
        rank = np.empty(n)  # position within the class, as a fraction of the class: interleaves the classes
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            rank[members[rng.permutation(len(members))]] = (np.arange(len(members)) + 0.5) / len(members)
        order = np.lexsort((rng.random(n), rank))
        return np.sort(order[:m])

    def summary(self) -> dict:
        return {
            "protocol": self.name, "num_classes": self.num_classes, "image": [self.in_channels, self.image_size],
            "id_train": len(self.id_train[1]), "id_val": len(self.id_val[1]), "id_test": len(self.id_test[1]),
            "aux": 0 if self.aux is None else len(self.aux), **{f"ood_{k}": len(v) for k, v in self.ood.items()},
            **self.info,
        }


def _split_indices(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    bounds = np.round(np.cumsum(fractions) / sum(fractions) * n).astype(int)
    return np.split(order, bounds[:-1])


def _tensors(images: np.ndarray, labels: np.ndarray | None = None):
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x if labels is None else (x, torch.from_numpy(np.ascontiguousarray(labels)))


def class_split(source: LabelledImages, name: str, id_classes: Sequence, aux_classes: Sequence, ood_classes: Sequence,
                id_fractions: Sequence[float] = (0.7, 0.15, 0.15), ood_val_fraction: float = 0.5,
                train_limit: int | None = None, seed: int = 0,
                test_source: LabelledImages | None = None) -> Protocol:
    """ID / auxiliary / OOD classes of one source, disjoint; ID split train/val/test, OOD split val/test.

    ``id_fractions`` are relative sizes of ID train/val/test (stratified per class); ``train_limit`` caps the
    ID training set; all auxiliary images are training outliers.

    ``test_source`` (an official test set with the same class names, e.g. CIFAR-10's test images): the ID and
    OOD test parts are *all* its ID-class and OOD-class images; ``source`` then gives ID train/val (relative
    sizes ``id_fractions[:2]``) and the OOD validation part (all its OOD-class images). Without it, the OOD
    images are split ``ood_val_fraction`` / rest into validation / test.
    """
    ids = source.class_indices(id_classes, "id_classes")
    aux = source.class_indices(aux_classes, "aux_classes")
    ood = source.class_indices(ood_classes, "ood_classes")
    if not ids or not ood:
        raise ValueError("id_classes, ood_classes: both must name at least one class")
    overlap = (set(ids) & set(aux)) | (set(ids) & set(ood)) | (set(aux) & set(ood))
    if overlap:
        shared = sorted(source.classes[i] for i in overlap)
        raise ValueError(f"id_classes, aux_classes, ood_classes: must be disjoint, shared {shared}")
    rng = np.random.default_rng(seed)
    fractions = tuple(id_fractions) if test_source is None else tuple(id_fractions)[:2]
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in ids:  # stratified ID split
        members = np.flatnonzero(source.labels == c)
        for part, idx in zip(parts, _split_indices(len(members), fractions, rng)):
            part.append(members[idx])
    train, val, *test = (np.sort(np.concatenate(p)) for p in parts)
    if train_limit is not None and train_limit < len(train):
        train = np.sort(rng.choice(train, size=train_limit, replace=False))
    remap = np.full(len(source.classes), -1, np.int64)
    remap[ids] = np.arange(len(ids))
    ood_idx = np.flatnonzero(np.isin(source.labels, ood))
    aux_idx = np.flatnonzero(np.isin(source.labels, aux))

    def take(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensors(source.images[idx], remap[source.labels[idx]])

    info = {"id_classes": [source.classes[i] for i in ids], "aux_classes": [source.classes[i] for i in aux],
            "ood_classes": [source.classes[i] for i in ood], "seed": seed}
    if test_source is None:
        ood_val, ood_test = _split_indices(len(ood_idx), (ood_val_fraction, 1 - ood_val_fraction), rng)
        id_test = take(test[0])
        ood_parts = {"val": _tensors(source.images[ood_idx[np.sort(ood_val)]]),
                     "test": _tensors(source.images[ood_idx[np.sort(ood_test)]])}
    else:
        if test_source.images.shape[1:] != source.images.shape[1:]:
            raise ValueError(f"test_path: images of shape {test_source.images.shape[1:]} differ from the training "
                             f"images' {source.images.shape[1:]}")
        test_ids = test_source.class_indices(info["id_classes"], "test_path")
        test_ood = test_source.class_indices(info["ood_classes"], "test_path")
        test_remap = np.full(len(test_source.classes), -1, np.int64)
        test_remap[test_ids] = np.arange(len(test_ids))
        id_test_idx = np.flatnonzero(np.isin(test_source.labels, test_ids))
        id_test = _tensors(test_source.images[id_test_idx], test_remap[test_source.labels[id_test_idx]])
        ood_parts = {"val": _tensors(source.images[ood_idx]),
                     "test": _tensors(test_source.images[np.isin(test_source.labels, test_ood)])}
        info["test_source"] = "official"
    return Protocol(
        name=name, num_classes=len(ids), id_train=take(train), id_val=take(val), id_test=id_test, ood=ood_parts,
        aux=_tensors(source.images[aux_idx]) if len(aux_idx) else None, info=info,
    )


#: name -> builder(**options) -> Protocol.
PROTOCOLS: Registry = Registry("protocol")
register_protocol = PROTOCOLS.register


def make_protocol(name: str, **options) -> Protocol:
    """Build a registered protocol (any error: a one-line ``RegistryError``)."""
    return PROTOCOLS.build(name, **options)


@register_protocol("digits")
def digits_protocol(seed: int = 0, id_fractions=(0.7, 0.15, 0.15)) -> Protocol:
    """Embedded near-OOD split of scikit-learn digits: ID 0-5, auxiliary outliers 6-7, OOD test 8-9."""
    return class_split(load_digits(), "digits", ["0", "1", "2", "3", "4", "5"], ["6", "7"], ["8", "9"],
                       id_fractions=id_fractions, seed=seed)


CIFAR10_SPLIT = {"id": ["airplane", "automobile", "bird", "cat", "deer", "dog"], "aux": ["frog", "ship"],
                 "ood": ["horse", "truck"]}


def load_image_folder_part(path: str | os.PathLike, part: str, **options) -> LabelledImages:
    """The ``part`` folder (``train`` or ``test``) of an ImageFolder dir/zip that has one (e.g. a zip holding both
    ``train/<class>/`` and ``test/<class>/``), else the whole ``[<split>/]<class>/<image>`` layout."""
    try:
        return load_image_folder(path, split=part, **options)
    except ValueError as err:
        if "no images" not in str(err):
            raise
    return load_image_folder(path, **options)


@register_protocol("cifar10-split")
def cifar10_split_protocol(path: str | None = None, root: str | None = None, download: bool = False,
                           train_limit: int | None = None, seed: int = 0, id_fractions=(0.8, 0.1, 0.1),
                           test_path: str | None = None) -> Protocol:
    """CIFAR-10 class split (DESIGN.md, "Data"): ID = airplane..dog, aux = frog, ship, OOD = horse, truck.

    Images come from ``path`` (an ImageFolder directory or zip of the 50,000 training images; its ``train/``
    folder if it has one) or from a torchvision ``root`` (training split). The split is made inside the training
    images. ``test_path``: CIFAR-10's official test images as an ImageFolder dir or zip (``test/<class>/``
    layout, or ``<class>/``): the final numbers are then measured on all of its ID-class and OOD-class images,
    and the training images give ID train/val (``id_fractions[:2]``) and the OOD validation set.
    """
    if (path is None) == (root is None):
        raise ValueError("cifar10-split: give exactly one of path (ImageFolder dir/zip) or root (torchvision root)")
    source = (load_image_folder_part(path, "train") if path
              else load_torchvision_cifar("cifar10", root, train=True, download=download))
    test_source = load_image_folder_part(test_path, "test") if test_path else None
    return class_split(source, "cifar10-split", CIFAR10_SPLIT["id"], CIFAR10_SPLIT["aux"], CIFAR10_SPLIT["ood"],
                       id_fractions=id_fractions, train_limit=train_limit, seed=seed, test_source=test_source)


@register_protocol("imagefolder-split")
def imagefolder_split_protocol(path: str, id_classes: Sequence, ood_classes: Sequence, aux_classes: Sequence = (),
                               image_size: int | None = None, grayscale: bool = False, train_limit: int | None = None,
                               seed: int = 0, id_fractions=(0.7, 0.15, 0.15), test_path: str | None = None) -> Protocol:
    """Class split of any ImageFolder directory or zip; ``test_path``: an official test set with the same classes
    (as for ``cifar10-split``)."""
    source = load_image_folder(path, image_size=image_size, grayscale=grayscale)
    test_source = (load_image_folder_part(test_path, "test", image_size=image_size, grayscale=grayscale)
                   if test_path else None)
    return class_split(source, f"imagefolder:{Path(path).name}", id_classes, aux_classes, ood_classes,
                       id_fractions=id_fractions, train_limit=train_limit, seed=seed, test_source=test_source)


def _cross_dataset(id_name: str, ood_name: str, root: str, aux_path: str | None, download: bool,
                   train_limit: int | None, seed: int, val_fraction: float) -> Protocol:
    """ID = all classes of one CIFAR, OOD = the other's test split (all of it, for the final numbers); OOD
    validation = a seeded sample of the other's training split, half as many images as its test split (disjoint
    from the test images); aux = a user-supplied outlier folder."""
    rng = np.random.default_rng(seed)
    train = load_torchvision_cifar(id_name, root, train=True, download=download)
    test = load_torchvision_cifar(id_name, root, train=False, download=download)
    ood = load_torchvision_cifar(ood_name, root, train=False, download=download)
    ood_train = load_torchvision_cifar(ood_name, root, train=True, download=download)
    tr, va = _split_indices(len(train.labels), (1 - val_fraction, val_fraction), rng)
    if train_limit is not None and train_limit < len(tr):
        tr = rng.choice(tr, size=train_limit, replace=False)
    ood_val = rng.choice(len(ood_train.labels), size=min(len(ood_train.labels), len(ood.labels) // 2), replace=False)
    aux = None
    if aux_path:
        aux_set = load_image_folder(aux_path, image_size=train.images.shape[-1])
        aux = _tensors(aux_set.images)
    return Protocol(
        name=f"{id_name}-vs-{ood_name}", num_classes=len(train.classes),
        id_train=_tensors(train.images[np.sort(tr)], train.labels[np.sort(tr)]),
        id_val=_tensors(train.images[np.sort(va)], train.labels[np.sort(va)]),
        id_test=_tensors(test.images, test.labels),
        ood={"val": _tensors(ood_train.images[np.sort(ood_val)]), "test": _tensors(ood.images)},
        aux=aux, info={"seed": seed, "aux_path": aux_path, "id_classes": list(train.classes),
                       "ood_classes": list(ood.classes), "aux_classes": []},
    )


@register_protocol("cifar10-vs-cifar100")
def cifar10_vs_cifar100(root: str, aux_path: str | None = None, download: bool = False,
                        train_limit: int | None = None, seed: int = 0, val_fraction: float = 0.1) -> Protocol:
    """The paper's protocol: ID CIFAR-10, OOD CIFAR-100 test (all 10,000 images for the final numbers; the search
    scores on 5,000 CIFAR-100 training images); optional auxiliary outlier ImageFolder."""
    return _cross_dataset("cifar10", "cifar100", root, aux_path, download, train_limit, seed, val_fraction)


@register_protocol("cifar100-vs-cifar10")
def cifar100_vs_cifar10(root: str, aux_path: str | None = None, download: bool = False,
                        train_limit: int | None = None, seed: int = 0, val_fraction: float = 0.1) -> Protocol:
    """The reverse protocol: ID CIFAR-100, OOD CIFAR-10 test (all of it; the search scores on 5,000 CIFAR-10
    training images)."""
    return _cross_dataset("cifar100", "cifar10", root, aux_path, download, train_limit, seed, val_fraction)
