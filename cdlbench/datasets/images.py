"""User-supplied image sets: a folder of PNG/JPEG files, a `.npz` array file, or an EDM-style
dataset zip (PNG files plus an optional `dataset.json`, as for CIFAR-10 32x32, AFHQv2 and
FFHQ 64x64). Pixels are uint8 mapped to [-1, 1] by x / 127.5 - 1, returned as [N, C, H, W].

Labels (optional): `dataset.json` holding {"labels": [[relative_path, class], ...]} in the
folder or zip (EDM's format), or a `labels` array in the `.npz`.
Every problem (missing path, unreadable file, a shape that differs from the first image,
labels that do not match the images) raises `ImageSetError` naming the file."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..registry import DATASETS
from ..specs import DatasetSpec
from .base import FiniteImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_ARCHIVE_BYTES = 16 << 30      # a .zip or .npz image set (CIFAR-10 is 160 MB)
MAX_IMAGE_BYTES = 64 << 20        # one PNG/JPEG of a folder
NPZ_IMAGE_KEYS = ("images", "x", "arr_0")


def regular_file(path: Path, max_bytes: int) -> None:
    """ImageSetError unless `path` is a regular file of at most max_bytes (not a FIFO, a device)."""
    from ..suite.yaml_loading import SuiteError, check_regular_file

    try:
        check_regular_file(path, "image-set file", max_bytes)
    except SuiteError as exc:
        raise ImageSetError(exc.message if exc.message.startswith(str(path)) else f"{path}: {exc.message}") from None


class ImageSetError(ValueError):
    """A user-supplied image set could not be read; the message names the file."""


def _decode(blob: bytes, name: str) -> np.ndarray:
    """One encoded PNG/JPEG -> uint8 [H, W, C]."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading PNG/JPEG image sets needs Pillow: pip install pillow") from None
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise ImageSetError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(arrays: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Stack [H, W, C] images, failing on the first that differs from the first image."""
    first = arrays[0].shape
    for arr, name in zip(arrays, names):
        if arr.shape != first:
            raise ImageSetError(f"{name}: image of shape {arr.shape} (H, W, C) differs from the first "
                                f"image {names[0]} of shape {first}; all images must share one size")
    return np.stack(arrays)


def _labels_from_json(text: str, source: str, names: list[str]) -> np.ndarray | None:
    """EDM's dataset.json: {"labels": [[relative_path, class], ...]} or {"labels": null}."""
    try:
        table = json.loads(text).get("labels")
    except Exception as exc:
        raise ImageSetError(f"{source}: not valid JSON with a 'labels' list ({exc})") from None
    if table is None:
        return None
    lookup = {str(p).replace("\\", "/"): c for p, c in table}
    missing = [n for n in names if n not in lookup]
    if missing:
        raise ImageSetError(f"{source}: no label for image {missing[0]} ({len(missing)} images unlabelled)")
    return np.asarray([lookup[n] for n in names], dtype=np.int64)


def read_folder(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageSetError(f"{path}: folder holds no {'/'.join(IMAGE_SUFFIXES)} files")
    names = [p.relative_to(path).as_posix() for p in files]
    arrays = []
    for p in files:
        regular_file(p, MAX_IMAGE_BYTES)
        try:
            blob = p.read_bytes()
        except OSError as exc:
            raise ImageSetError(f"{p}: cannot read ({exc.strerror or exc})") from None
        arrays.append(_decode(blob, str(p)))
    meta = path / "dataset.json"
    labels = _labels_from_json(meta.read_text(), str(meta), names) if meta.exists() else None
    return _stack(arrays, [str(f) for f in files]), labels


def read_zip(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    regular_file(path, MAX_ARCHIVE_BYTES)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ImageSetError(f"{path}: not a readable zip file ({exc})") from None
    with archive:
        names = sorted(n for n in archive.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        if not names:
            raise ImageSetError(f"{path}: zip holds no {'/'.join(IMAGE_SUFFIXES)} files")
        arrays = [_decode(archive.read(n), f"{path}:{n}") for n in names]
        labels = None
        if "dataset.json" in archive.namelist():
            labels = _labels_from_json(archive.read("dataset.json").decode(), f"{path}:dataset.json", names)
    return _stack(arrays, [f"{path}:{n}" for n in names]), labels


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An `.npz` with uint8 images [N, H, W, C], [N, C, H, W] or [N, H, W] under 'images' (or 'x',
    'arr_0') and optional integer 'labels' [N]."""
    regular_file(path, MAX_ARCHIVE_BYTES)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageSetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    with data:
        key = next((k for k in NPZ_IMAGE_KEYS if k in data.files), None)
        if key is None:
            raise ImageSetError(f"{path}: no image array; expected one of the keys {', '.join(NPZ_IMAGE_KEYS)}, "
                                f"found {', '.join(data.files) or 'none'}")
        images = data[key]
        labels = data["labels"] if "labels" in data.files else None
    if images.dtype != np.uint8:
        raise ImageSetError(f"{path}: '{key}' must be uint8 pixels in 0..255, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ImageSetError(f"{path}: '{key}' must have 3 or 4 dimensions, got shape {images.shape}")
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):   # channels first -> last
        images = images.transpose(0, 2, 3, 1)
    if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
        raise ImageSetError(f"{path}: 'labels' has shape {labels.shape}, expected ({len(images)},)")
    return images, None if labels is None else labels.astype(np.int64)


def read_image_set(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any supported image set -> (float32 [N, C, H, W] in [-1, 1], int64 labels [N] or None)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageSetError(f"{p}: no such file or folder (dataset 'images' needs path: a folder of "
                            f"PNG/JPEG files, a .npz or an EDM-style dataset .zip)")
    if p.is_dir():
        images, labels = read_folder(p)
    elif p.suffix.lower() == ".zip":
        images, labels = read_zip(p)
    elif p.suffix.lower() == ".npz":
        images, labels = read_npz(p)
    else:
        raise ImageSetError(f"{p}: unsupported file type {p.suffix!r}; give a folder, a .npz or a .zip")
    if images.shape[-1] not in (1, 3):
        raise ImageSetError(f"{p}: images have {images.shape[-1]} channels; 1 (grey) or 3 (RGB) supported")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x.contiguous(), None if labels is None else torch.from_numpy(labels)


@DATASETS.register("images", constraints={"max_images": lambda v: None if v is None or v > 0 else "must be > 0"},
                   spec=DatasetSpec(kind="images", labelled=None))   # labels known once the folder is read
class ImageFolder(FiniteImageSet):
    """Images from a folder of PNG/JPEG, a .npz or an EDM-style zip, in [-1, 1], optional labels."""

    is_image = True

    def __init__(self, path: str, max_images: int | None = None):
        self.path = str(path)
        images, labels = read_image_set(path)
        if max_images is not None:
            images = images[:max_images]
            labels = None if labels is None else labels[:max_images]
        self.images, self.labels = images, labels
        self.num_classes = None if labels is None else int(labels.max().item()) + 1
        self.shape = tuple(images.shape[1:])
        self.n_train = images.shape[0]

    def reference_key(self) -> str:
        st = Path(self.path).expanduser().resolve().stat()
        return f"images/{Path(self.path).expanduser().resolve()}/{st.st_size}/{int(st.st_mtime)}/{self.n_train}/{self.shape[-1]}"
