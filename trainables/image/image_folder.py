"""What an ImageFolder directory or ``.zip`` holds, read without decoding a pixel, and its files' bytes.

>>> folder = ImageFolderFiles("cifar10-train.zip")      # doctest: +SKIP
>>> folder.images[:2], folder.skipped                   # doctest: +SKIP
(['train/airplane/0001.png', 'train/airplane/0002.png'], [])
>>> folder.check()                                      # doctest: +SKIP

Rules (the same for a directory and a zip): files whose suffix is not an image suffix are skipped (listed in
``skipped``; a warning names how many); a folder with no image anywhere below it is an error (an empty class
folder would silently shift every class index after it); an unreadable zip or image is an error naming the file.
Every error is a one-line ``ValueError``.
"""
from __future__ import annotations

import io
import os
import posixpath
import warnings
import zipfile
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class ImageFolderFiles:
    """The file listing of an ImageFolder ``path`` (directory or zip): ``images`` (POSIX paths relative to the
    root, sorted), ``skipped`` (other files) and ``empty_folders`` (folders without any image below them)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"path: no such file or directory: {str(self.path)!r}")
        self._zip = None
        if self.path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(self.path)
                entries = self._zip.namelist()
            except (zipfile.BadZipFile, OSError) as err:
                raise ValueError(f"path: {str(self.path)!r} is not a readable zip file ({_one_line(err)})") from None
            files = [n for n in entries if not n.endswith("/")]
            folders = {n.rstrip("/") for n in entries if n.endswith("/")}
        else:
            files, folders = [], set()
            for p in self.path.rglob("*"):
                (folders.add if p.is_dir() else files.append)(p.relative_to(self.path).as_posix())
        self.images = sorted(n for n in files if n.lower().endswith(IMAGE_SUFFIXES))
        self.skipped = sorted(n for n in files if not n.lower().endswith(IMAGE_SUFFIXES)
                              and not posixpath.basename(n).startswith("."))
        with_images = set()
        for name in self.images:
            parent = posixpath.dirname(name)
            while parent and parent not in with_images:
                with_images.add(parent)
                parent = posixpath.dirname(parent)
        folders |= {posixpath.dirname(n) for n in files if posixpath.dirname(n)}
        self.empty_folders = sorted(f for f in folders if f not in with_images
                                    and not any(part.startswith((".", "__MACOSX")) for part in f.split("/")))

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name`` (a member of :attr:`images`)."""
        try:
            return self._zip.read(name) if self._zip is not None else (self.path / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"path: {self.where(name)} cannot be read ({_one_line(err)})") from None

    def open_image(self, name: str):
        """The PIL image ``name`` (lazily decoded), or a one-line ``ValueError`` naming the file."""
        from PIL import Image, UnidentifiedImageError

        try:
            return Image.open(io.BytesIO(self.read(name)))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"path: {self.where(name)} is not a readable image ({_one_line(err)})") from None

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)

    def check(self) -> None:
        """Every rule of the module, without decoding pixels: a readable zip whose members' checksums hold, no
        empty folder, every image's header readable; skipped files give one warning."""
        if self._zip is not None:
            try:
                bad = self._zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ValueError(f"path: {str(self.path)!r} is not a readable zip file ({_one_line(err)})") from None
            if bad is not None:
                raise ValueError(f"path: {self.where(bad)} is corrupt (its checksum does not match)")
        self.check_folders()
        for name in self.images:
            self.open_image(name)
        self.warn_skipped()

    def check_folders(self) -> None:
        """The listing's rule alone (no file read): no folder without an image below it."""
        if self.empty_folders:
            raise ValueError(f"path: folder {self.where(self.empty_folders[0])!r} holds no images (an empty class "
                             "folder would shift every class index after it); remove it or add its images")

    def warn_skipped(self) -> None:
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} file(s) that are not images "
                          f"({', '.join(IMAGE_SUFFIXES)}), e.g. {self.skipped[0]!r}", stacklevel=3)
