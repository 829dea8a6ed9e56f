"""Image files -> the uint8 pixel codes ``[C, H, W]`` a deploy model reads.

``.npy``   a NumPy array of the model's input shape ``[C, H, W]``, or ``[H, W]`` for a
           one-channel model, or ``[H, W, C]``; uint8, integers in 0..255, or floats in
           [0, 1] (rounded to ``rint(x * 255)``). It is not resized.
PNG, JPEG  anything Pillow opens: converted to greyscale (one-channel models) or RGB
           (three-channel models), resized to the model's ``H x W`` with Pillow's
           antialiased Lanczos filter if it differs, and kept as 8-bit pixels.

Pixels are used as they are: a model trained on light digits on a dark background
(``digits``, ``mnist``) needs such images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageError(ValueError):
    """An image file that cannot be read or does not fit the model."""


def to_pixels(x, name: str = "x") -> np.ndarray:
    """An array of pixels -> uint8: uint8 as is, integers in 0..255, floats in [0, 1]
    rounded to ``rint(x * 255)`` (exact for values ``k / 255``)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{name}: integer pixels must lie in 0..255")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or (x.size and (x.min() < 0 or x.max() > 1)):
            raise ValueError(f"{name}: float pixels must be finite and lie in [0, 1]")
        return np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    raise TypeError(f"{name}: pixels must be numbers, got dtype {x.dtype}")


def _from_npy(path: Path, shape: tuple) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read {path} as a .npy array ({exc})") from None
    c = shape[0]
    if x.shape == shape[1:] and c == 1:
        x = x[None]
    elif x.ndim == 3 and x.shape == shape[1:] + (c,) and x.shape != shape:
        x = x.transpose(2, 0, 1)
    if x.shape != shape:
        raise ImageError(f"{path} holds an array of shape {list(x.shape)}; the model reads "
                         f"{list(shape)} (a .npy is not resized)")
    return to_pixels(x, str(path))


def _from_picture(path: Path, shape: tuple) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if c not in (1, 3):
        raise ImageError(f"the model reads {c}-channel images; give {path.stem}.npy arrays")
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if c == 1 else "RGB")
            if picture.size != (w, h):
                picture = picture.resize((w, h), Image.Resampling.LANCZOS)
            x = np.asarray(picture, np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageError(f"cannot read {path} as an image ({exc})") from None
    return x[None] if c == 1 else x.transpose(2, 0, 1).copy()


def load_image(path, input_shape) -> np.ndarray:
    """uint8 ``[*input_shape]`` pixel codes of the image file ``path`` (see the module)."""
    path, shape = Path(path), tuple(int(v) for v in input_shape)
    if not path.is_file():
        raise ImageError(f"cannot read {path}: no such file")
    if path.suffix.lower() == ".npy":
        return _from_npy(path, shape)
    if len(shape) != 3:
        raise ImageError(f"the model reads feature vectors {list(shape)}, not pictures; "
                         f"give .npy arrays")
    return _from_picture(path, shape)
