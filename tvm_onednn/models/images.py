"""Real photos shipped inside wheels, with ImageNet labels where the class is certain.

Sources: scikit-image's ``skimage.data`` (required), scikit-learn's ``load_sample_images``
and matplotlib's ``grace_hopper.jpg`` (both optional, used when installed). Preprocessing is
torchvision's ImageNet eval transform (resize short side to 256, center crop 224, mean/std
normalize, NCHW float32) in numpy + ``skimage.transform``; ``imagenet_crops`` draws augmented
views (random resized crops, flips) to get many inputs for fp32-vs-int8 agreement studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UNLABELED",
    "load_photos",
    "preprocess",
    "normalize",
    "imagenet_batch",
    "imagenet_crops",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: Label of photos whose ImageNet class is not certain (no single matching class).
UNLABELED = -1

# skimage.data photo -> ImageNet class index (or UNLABELED). Labels are given only where the
# subject is unambiguously one ImageNet class.
_SKIMAGE_PHOTOS: dict[str, int] = {
    "chelsea": 285,  # Egyptian cat
    "coffee": 967,  # espresso
    "rocket": 812,  # space shuttle (on the launch pad)
    "astronaut": UNLABELED,  # portrait in a space suit: no such class
    "camera": UNLABELED,  # grayscale cameraman with a tripod
    "stereo_motorcycle": UNLABELED,  # motorcycle close-up: moped/motor scooter are ambiguous
}


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxW / HxWx1 / HxWx4 -> HxWx3 uint8."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo pair -> left view


def _optional_photos() -> dict[str, tuple[np.ndarray, int]]:
    """scikit-learn / matplotlib sample photos, when those packages are installed."""
    photos: dict[str, tuple[np.ndarray, int]] = {}
    try:
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        for filename, image in zip(data.filenames, data.images, strict=True):
            photos[f"sklearn_{Path(filename).stem}"] = (image, UNLABELED)
    except ImportError:
        pass
    try:
        import matplotlib
        import matplotlib.image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if path.is_file():
            photos["grace_hopper"] = (matplotlib.image.imread(path), UNLABELED)
    except ImportError:
        pass
    return photos


@cache
def _all_photos() -> tuple[tuple[str, np.ndarray, int], ...]:
    photos = {n: (_skimage_photo(n), label) for n, label in _SKIMAGE_PHOTOS.items()}
    photos.update(_optional_photos())
    return tuple((n, _rgb(img), label) for n, (img, label) in photos.items())


def load_photos(labeled_only: bool = False) -> dict[str, tuple[np.ndarray, int]]:
    """Photos as ``name -> (HxWx3 uint8 RGB, ImageNet label or UNLABELED)``."""
    return {
        name: (image.copy(), label)
        for name, image, label in _all_photos()
        if label != UNLABELED or not labeled_only
    }


def normalize(image: np.ndarray) -> np.ndarray:
    """HxWx3 float in [0, 1] -> 3xHxW float32 with ImageNet mean/std."""
    chw = (np.asarray(image, np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(chw.transpose(2, 0, 1))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased bilinear resize of an RGB image to float in [0, 1]."""
    from skimage.transform import resize

    return resize(image, (height, width), order=1, anti_aliasing=True, preserve_range=False)


def preprocess(image: np.ndarray, size: int = 224, resize_to: int = 256) -> np.ndarray:
    """torchvision eval transform: short side -> ``resize_to``, center crop ``size``, normalize."""
    image = _rgb(image)
    h, w = image.shape[:2]
    scale = resize_to / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = _resize(image, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return normalize(resized[top : top + size, left : left + size])


def imagenet_batch(
    names: Sequence[str] | None = None, size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Center-cropped photos as ``([n, 3, size, size] float32, [n] int64 labels)``."""
    photos = load_photos()
    names = list(photos) if names is None else list(names)
    x = np.stack([preprocess(photos[n][0], size) for n in names])
    return x, np.array([photos[n][1] for n in names], np.int64)


def _random_resized_crop(
    image: np.ndarray, rng: np.random.Generator, size: int, scale: tuple[float, float]
) -> np.ndarray:
    """torchvision RandomResizedCrop (aspect 3/4..4/3) + random horizontal flip."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:  # fall back to the central square
        ch = cw = min(h, w)
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = _resize(image[top : top + ch, left : left + cw], size, size)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def imagenet_crops(
    n: int,
    seed: int = 0,
    size: int = 224,
    scale: tuple[float, float] = (0.35, 1.0),
    labeled_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` augmented views of the photos, cycling through them.

    Returns ``([n, 3, size, size] float32, [n] int64)``; labels are the photo's ImageNet class
    or ``UNLABELED`` (-1). A crop covering a small part of the photo may not show the object;
    the default ``scale`` keeps at least 35% of the image area. Deterministic for a seed.
    """
    photos = list(load_photos(labeled_only).values())
    rng = np.random.default_rng(seed)
    views: list[np.ndarray] = []
    labels: list[int] = []
    for i in range(n):
        image, label = photos[i % len(photos)]
        views.append(normalize(_random_resized_crop(image, rng, size, scale)))
        labels.append(label)
    return np.stack(views), np.array(labels, np.int64)
