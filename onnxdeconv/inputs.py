"""Turn image files and arrays into model inputs: decoding, resizing and normalisation presets."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import cv2
import numpy as np

from onnxdeconv.errors import InputError, OnnxDeconvError, first_line, require_path
from onnxdeconv.image_size import (
    MAX_PIXELS_VARIABLE,
    check_pixel_budget,
    max_image_pixels,
    read_header,
)

logger = logging.getLogger(__name__)

Layout = Literal["NCHW", "NHWC"]
Item = TypeVar("Item")
Read = TypeVar("Read")
#: Errors that make one image unusable: a command over many images skips it and goes on.
IMAGE_ERRORS: tuple[type[Exception], ...] = (OnnxDeconvError, OSError, ValueError, cv2.error)


class ModelInputSpec(Protocol):
    """What input loading needs to know of a model: its image input and metadata.

    :class:`~onnxdeconv.graph.load.LoadedModel` has these; the protocol keeps this module at the
    bottom of the package, below ``graph/``.
    """

    @property
    def input_name(self) -> str: ...  # noqa: D102

    @property
    def input_shape(self) -> list[int | str]: ...  # noqa: D102

    @property
    def input_dtype(self) -> np.dtype: ...  # noqa: D102

    @property
    def metadata(self) -> dict[str, str]: ...  # noqa: D102


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Preprocessing:
    """``value = (pixel * scale - mean) / std`` per channel, pixels in 0..255.

    ``mean`` and ``std`` are in the model's channel order: BGR when ``bgr`` is set.
    """

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False

    def __post_init__(self) -> None:
        """Refuse values that would make every input NaN, infinite or constant.

        Raises:
            InputError: A value is not finite, or the scale or a std is 0.
        """
        values = {"scale": (self.scale,), "mean": self.mean, "std": self.std}
        for name, given in values.items():
            if not given or not all(math.isfinite(v) for v in given):
                raise InputError(
                    f"the preprocessing {name} {list(given)} is not a finite number per channel: "
                    "give finite values",
                    parameter="preprocessing",
                )
            if name != "mean" and 0.0 in given:
                raise InputError(
                    f"the preprocessing {name} {list(given)} holds 0, which would make every "
                    f"input {'infinite' if name == 'std' else 'constant'}: give non-zero values",
                    parameter="preprocessing",
                )

    @property
    def is_raw(self) -> bool:
        """Whether pixels pass unchanged (channel order aside)."""
        return self.scale == 1.0 and set(self.mean) == {0.0} and set(self.std) == {1.0}

    def describe(self) -> str:
        """A compact one-line description; the channel order only where it matters."""
        values = f"x*{self.scale:.6g}, mean {list(self.mean)}, std {list(self.std)}"
        if self.bgr:
            return f"BGR, {values}"
        # One mean and std serve gray models too, which the word RGB would misdescribe.
        return f"RGB, {values}" if len(self.mean) > 1 or len(self.std) > 1 else values


PRESETS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": Preprocessing(1.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), bgr=True),
    "tf": Preprocessing(1 / 127.5, (1.0,), (1.0,)),
    "raw": Preprocessing(1.0, (0.0,), (1.0,)),
}
#: The model metadata entry that declares its preprocessing: JSON
#: ``{"scale": float, "mean": [float, ...], "std": [float, ...], "bgr": bool}``.
METADATA_KEY = "onnxdeconv.preprocess"


def preprocessing_json(preprocessing: Preprocessing) -> dict[str, object]:
    """``preprocessing`` as the JSON object of the ``onnxdeconv.preprocess`` metadata entry."""
    return {
        "scale": preprocessing.scale,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "bgr": preprocessing.bgr,
    }


def preprocessing_from_metadata(loaded: ModelInputSpec) -> Preprocessing | None:
    """The preprocessing a model declares in its ``onnxdeconv.preprocess`` metadata, if any."""
    raw = loaded.metadata.get(METADATA_KEY)
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        return Preprocessing(
            scale=float(spec.get("scale", 1 / 255)),
            mean=tuple(float(m) for m in spec.get("mean", [0.0])),
            std=tuple(float(s) for s in spec.get("std", [1.0])),
            bgr=bool(spec.get("bgr", False)),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(
            f"model metadata '{METADATA_KEY}' is malformed ({exc}): fix or remove it"
        ) from exc


def declares_no_preprocessing(loaded: ModelInputSpec) -> bool:
    """Whether ``loaded`` is a 3-channel image model whose metadata declares no preprocessing.

    For such a model any preset is a guess, which the CLI says in one line.
    """
    try:
        _, channels = image_layout(tuple(loaded.input_shape[1:]))
    except InputError:
        return False
    return channels == 3 and preprocessing_from_metadata(loaded) is None


def custom_preprocessing(
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
    bgr: bool = False,
) -> Preprocessing:
    """A custom preprocessing; the values not given are the identity (scale 1, mean 0, std 1)."""
    values = (1.0 if scale is None else scale, tuple(mean or (0.0,)), tuple(std or (1.0,)))
    return Preprocessing(*values, bgr)


def choose_preprocessing(
    loaded: ModelInputSpec,
    preset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
    bgr: bool = False,
) -> tuple[Preprocessing, str]:
    """The preprocessing asked for, and a line that says which it is and its values.

    A ``preset`` wins; else any custom value (``mean``, ``std``, ``scale``, ``bgr``) makes a
    custom preprocessing (the others at their identity); else the model's metadata; else ImageNet.

    Raises:
        InputError: ``preset`` is unknown, or the model's metadata is malformed.
    """
    if preset is not None and preset not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        message = f"unknown preset '{preset}': use one of {known}"
        raise InputError(message, parameter="preprocessing")
    if preset:
        chosen, source = PRESETS[preset], f"preset {preset}"
    elif mean is not None or std is not None or scale is not None or bgr:
        chosen, source = custom_preprocessing(mean, std, scale, bgr), "custom"
    elif (declared := preprocessing_from_metadata(loaded)) is not None:
        chosen, source = declared, "from the model's metadata"
    else:
        chosen, source = PRESETS["imagenet"], "preset imagenet (default)"
    return chosen, f"{source}: {chosen.describe()}"


def image_layout(per_sample: tuple[int | str, ...]) -> tuple[Layout, int]:
    """Guess the input layout and channel count from a per-sample shape like (3, H, W)."""
    first, last = per_sample[0], per_sample[-1]
    if first in (1, 3):
        return "NCHW", int(first)
    if last in (1, 3):
        return "NHWC", int(last)
    raise InputError(
        f"the model input's per-sample shape {list(per_sample)} has no 1- or 3-channel axis, so "
        "it does not take images: pass a .npy array in its input layout instead"
    )


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file, once, to RGB uint8; EXIF rotation honoured, alpha composited on white.

    16-bit images are scaled to 8 bits; float images (a float TIFF) must hold values in 0..1.
    The size the header declares is checked against the pixel budget before decoding.

    Args:
        path: The image file.
        max_pixels: The most pixels it may have (default: ``ONNXDECONV_MAX_IMAGE_PIXELS``, else
            :data:`~onnxdeconv.image_size.DEFAULT_MAX_IMAGE_PIXELS`).

    Raises:
        InputError: The file is missing, not an image OpenCV reads, over the pixel budget, or
            holds pixels that have no 8-bit picture (negative, non-finite or over 1 as floats).
    """
    path = Path(path)
    missing = f"input file '{path}' does not exist: check the path"
    require_path(path, "file", "an image file", missing, error=InputError)
    unreadable = (
        f"'{path}' is not a readable image (jpg, png, bmp, webp or tiff) or .npy array: "
        "check the file"
    )
    data = np.fromfile(path, np.uint8)
    if not data.size:
        raise InputError(unreadable)
    header = read_header(data.data, path)
    if header is not None:
        check_pixel_budget(path, header.width, header.height, max_pixels)
    # Only IMREAD_UNCHANGED keeps an alpha channel, and it ignores the EXIF orientation: decode
    # with it only what may be transparent.
    alpha = header is None or header.alpha
    flags = cv2.IMREAD_UNCHANGED if alpha else cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    try:
        decoded = cv2.imdecode(data, flags)
    except cv2.error as exc:  # OpenCV's own size limit, or a decoder that gives up loudly
        reason = str(exc).strip().splitlines()[-1]
        raise InputError(f"{unreadable} (OpenCV: {reason})") from None
    del data
    if decoded is None or decoded.size == 0:
        raise InputError(unreadable)
    if header is None:  # a format whose header is not read: check what was decoded
        check_pixel_budget(path, decoded.shape[1], decoded.shape[0], max_pixels)
    return _rgb8(decoded, path)


def _rgb8(decoded: np.ndarray, path: Path) -> np.ndarray:
    """An image as OpenCV decodes it (BGR, BGRA or gray; 8, 16-bit or float) as RGB uint8."""
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels not in (1, 3, 4):
        raise InputError(f"'{path}' has {channels} channels: save it as gray, RGB or RGBA")
    if decoded.dtype == np.uint8 and channels != 4:
        code = cv2.COLOR_GRAY2RGB if channels == 1 else cv2.COLOR_BGR2RGB
        # In place where the channel count stays: no copy of a large picture.
        return cv2.cvtColor(decoded, code, dst=None if channels == 1 else decoded)
    values = _unit_range(decoded, path)  # float32, 0..1
    if channels == 4:
        alpha = values[..., 3:]
        values = values[..., :3] * alpha + (1.0 - alpha)
    values *= 255.0
    pixels = np.rint(values, out=values).astype(np.uint8)
    code = cv2.COLOR_GRAY2RGB if channels == 1 else cv2.COLOR_BGR2RGB
    rgb: np.ndarray = cv2.cvtColor(pixels, code, dst=None if channels == 1 else pixels)
    return rgb


def _unit_range(decoded: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as float32 in 0..1: 8 and 16-bit scaled by their maximum, floats as they are."""
    if decoded.dtype in (np.uint8, np.uint16):
        return decoded.astype(np.float32) / float(np.iinfo(decoded.dtype).max)
    if decoded.dtype.kind != "f":
        raise InputError(
            f"'{path}' holds {decoded.dtype} pixels, which have no 8-bit picture: save it as "
            "8- or 16-bit, or pass the values as a .npy array"
        )
    values = decoded.astype(np.float32)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
        raise InputError(
            f"'{path}' holds float pixels from {low:g} to {high:g}; float images must hold values "
            "in 0..1: scale it, save it as 8- or 16-bit, or pass the values as a .npy array"
        )
    return values


def fit_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the shorter side to fit ``size`` (H, W), then centre-crop to exactly ``size``."""
    height, width = rgb.shape[:2]
    want_h, want_w = size
    factor = max(want_h / height, want_w / width)
    new_h, new_w = max(want_h, round(height * factor)), max(want_w, round(width * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - want_h) // 2, (new_w - want_w) // 2
    return np.ascontiguousarray(resized[top : top + want_h, left : left + want_w])


def normalise(
    rgb: np.ndarray, preprocessing: Preprocessing, layout: Layout, channels: int, dtype: np.dtype
) -> np.ndarray:
    """Turn an RGB uint8 image ``[H, W, 3]`` into a batch of one model input."""
    if dtype.kind in "iu" and not preprocessing.is_raw:
        raise InputError(
            f"the model's input is {dtype} pixels, which it preprocesses itself: use the raw "
            "preset (values 0-255 as they are)",
            parameter="preprocessing",
        )
    pixels = rgb.astype(np.float32)
    if channels == 1:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    elif preprocessing.bgr:
        pixels = pixels[..., ::-1]
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    if channels == 1 and mean.size == 3 and std.size == 3:
        # An RGB preset on a gray model: use the channel average.
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    if mean.size not in (1, channels) or std.size not in (1, channels):
        allowed = "1 value" if channels == 1 else f"1 or {channels} values"
        raise InputError(
            f"the mean and std have {mean.size}/{std.size} values for a {channels}-channel "
            f"input: give {allowed}",
            parameter="preprocessing",
        )
    values = (pixels * preprocessing.scale - mean) / std
    if layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None].astype(dtype))


def check_size(size: tuple[int, int], max_pixels: int | None = None) -> tuple[int, int]:
    """``size`` (H, W), if both are at least 1 and ``H x W`` is within the pixel budget.

    Raises:
        InputError: A side is under 1, or the size is over the budget (see :func:`read_image`).
    """
    height, width = size
    if height < 1 or width < 1:
        raise InputError(
            f"the input size {height},{width} has a side under 1: give H,W such as 224,224",
            parameter="input_shape",
        )
    budget = max_image_pixels(max_pixels)
    if height * width > budget:
        raise InputError(
            f"the input size {height},{width} is {height * width} pixels, over the pixel budget "
            f"of {budget}: give a smaller size, or raise the budget with "
            f"{MAX_PIXELS_VARIABLE}={height * width}",
            parameter="input_shape",
        )
    return height, width


def input_shape_for(loaded: ModelInputSpec, size: tuple[int, int] | None) -> tuple[int, ...] | None:
    """The per-sample input shape of ``loaded`` at image size ``size`` (H, W); None for None.

    Raises:
        InputError: The size is under 1 or over the pixel budget (:func:`check_size`), or the
            model does not take images.
    """
    if size is None:
        return None
    size = check_size(size)
    layout, channels = image_layout(tuple(loaded.input_shape[1:]))
    return (channels, *size) if layout == "NCHW" else (*size, channels)


@dataclass
class ModelInput:
    """A model input ready to run, and the picture a person recognises it by."""

    array: np.ndarray
    #: RGB (or gray) uint8 picture of what the model sees, for display.
    display: np.ndarray
    layout: Layout
    preprocessing: Preprocessing | None


def load_input(
    path: str | Path,
    loaded: ModelInputSpec,
    preprocessing: Preprocessing,
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> ModelInput:
    """Load an image file (preprocessed) or a ``.npy`` array (fed as is) for ``loaded``.

    Args:
        path: An image file, or a ``.npy`` array in the model's input layout and dtype.
        loaded: The model.
        preprocessing: How to turn an image's pixels into input values.
        size: The image size (H, W) to resize to (default: the model's, else the image's).
        max_pixels: The pixel budget of an image (see :func:`read_image`).

    Raises:
        InputError: The file is unreadable, over the pixel budget, holds non-finite values or
            does not fit the model.
    """
    path = Path(path)
    per_sample = tuple(loaded.input_shape[1:])
    if path.suffix.lower() == ".npy":
        return _load_array(path, loaded)
    layout, channels = image_layout(per_sample)
    spatial = per_sample[1:] if layout == "NCHW" else per_sample[:-1]
    if size is not None:
        size = check_size(size, max_pixels)
    rgb = read_image(path, max_pixels)
    if size is None:
        fixed = all(isinstance(d, int) and d > 0 for d in spatial)
        size = (int(spatial[0]), int(spatial[1])) if fixed else (rgb.shape[0], rgb.shape[1])
    if len(spatial) != 2:
        raise InputError(f"the model input {list(loaded.input_shape)} is not a 2-D image input")
    fitted = fit_image(rgb, size)
    array = normalise(fitted, preprocessing, layout, channels, loaded.input_dtype)
    display = cv2.cvtColor(fitted, cv2.COLOR_RGB2GRAY) if channels == 1 else fitted
    return ModelInput(array, display, layout, preprocessing)


def _load_array(path: Path, loaded: ModelInputSpec) -> ModelInput:
    missing = f"input file '{path}' does not exist: check the path"
    require_path(path, "file", "a .npy file", missing, error=InputError)
    array = read_npy(path)
    rank = len(loaded.input_shape)
    if array.ndim == rank - 1:
        array = array[None]
    fixed = [d if isinstance(d, int) and d > 0 else None for d in loaded.input_shape[1:]]
    mismatch = array.ndim == rank and any(
        want is not None and want != have for want, have in zip(fixed, array.shape[1:], strict=True)
    )
    if array.ndim != rank or array.shape[0] != 1 or mismatch:
        raise InputError(
            f"'{path}' has shape {list(array.shape)}; give one input shaped like "
            f"{list(loaded.input_shape)} (batch 1), or without the batch axis"
        )
    if array.dtype != loaded.input_dtype:
        raise InputError(
            f"'{path}' is {array.dtype}; input '{loaded.input_name}' is {loaded.input_dtype}: save "
            f"it with array.astype('{loaded.input_dtype}')"
        )
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise InputError(
            f"'{path}' holds NaN or infinite values, which give no projection: replace them"
        )
    try:
        layout, _ = image_layout(tuple(array.shape[1:]))
    except InputError:
        layout = "NCHW"
    return ModelInput(array, display_array(array[0], layout), layout, None)


def read_npy(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` array, checking its header against the file before allocating anything.

    Raises:
        InputError: The file is not a ``.npy`` array (an ``.npz`` archive, a pickle), holds
            objects, or its header declares more data than the file holds.
    """
    path = Path(path)
    unreadable = f"'{path}' is not a readable .npy array"
    try:
        with open(path, "rb") as handle:
            if handle.read(4) == b"PK\x03\x04":
                archive = f"{unreadable}: it is an .npz archive; save one array with np.save"
                raise InputError(archive)
            handle.seek(0)
            version = np.lib.format.read_magic(handle)
            npy = np.lib.format
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = read(handle)
            offset = handle.tell()
    except InputError:
        raise
    except Exception as exc:  # numpy parses the header with tokenize and ast: any error there
        raise InputError(f"{unreadable} ({first_line(exc)}): check the file") from None
    if dtype.hasobject:
        raise InputError(f"{unreadable}: it holds Python objects; save a numeric array")
    declared = math.prod(shape) * dtype.itemsize
    held = path.stat().st_size - offset
    if declared != held:
        raise InputError(
            f"{unreadable}: its header declares shape {list(shape)} of {dtype} ({declared} bytes) "
            f"but the file holds {held}: save it again with np.save"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{unreadable} ({first_line(exc)}): check the file") from None
    return np.ascontiguousarray(array) if fortran else array


def display_array(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Min-max scale one input array to a uint8 picture (HxW or HxWx3)."""
    hwc = values.astype(np.float32)
    if layout == "NCHW" and hwc.ndim == 3:
        hwc = hwc.transpose(1, 2, 0)
    low, high = float(hwc.min()), float(hwc.max())
    scaled = (hwc - low) / (high - low) if high > low else np.zeros_like(hwc)
    picture: np.ndarray = (scaled * 255).round().astype(np.uint8)
    return picture[..., 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture


def image_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The image files under ``folder``, recursively, sorted by path; at most ``limit``.

    Raises:
        InputError: The folder does not exist or holds no image.
    """
    folder = Path(folder)
    missing = f"image folder '{folder}' does not exist: check the path"
    require_path(folder, "folder", "a folder of images", missing, error=InputError)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in '{folder}': point at a folder "
            "of photos"
        )
    return files[:limit] if limit else files


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while decoding: a skipped image is reported in one line."""
    logging_ = cv2.utils.logging
    previous = logging_.getLogLevel()
    logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_.setLogLevel(previous)


def skip_reason(error: BaseException) -> str:
    """Why an image was skipped, in one line: the library's message, or the decoder's."""
    if isinstance(error, OnnxDeconvError):
        return str(error)
    detail = f": {first_line(error)}" if str(error).strip() else ""
    if isinstance(error, OSError) and error.strerror:
        detail = f": {error.strerror}"
    return f"cannot read it as an image ({type(error).__name__}{detail})"


def read_each(
    items: Sequence[Item], read: Callable[[Item], Read]
) -> tuple[list[tuple[Item, Read]], list[tuple[Item, str]]]:
    """``read`` each item; one that raises an :data:`IMAGE_ERRORS` error is skipped.

    Returns:
        ``(item, result)`` for each item read, and ``(item, reason)`` for each skipped one (see
        :func:`skip_reason`), both in the order of ``items``.
    """
    done: list[tuple[Item, Read]] = []
    skipped: list[tuple[Item, str]] = []
    with quiet_opencv():
        for item in items:
            try:
                done.append((item, read(item)))
            except IMAGE_ERRORS as exc:
                skipped.append((item, skip_reason(exc)))
    return done, skipped


def none_readable(count: int, where: str, skipped: Sequence[tuple[object, str]]) -> InputError:
    """The error when none of ``count`` images (in ``where``) could be read: one line."""
    first = f" (the first: {skipped[0][1]})" if skipped else ""
    return InputError(f"none of the {count} images {where} is readable{first}: check them")


@dataclass
class LoadedImages:
    """Images preprocessed for a model: one batch, and each image's name and picture."""

    batch: np.ndarray
    #: Paths relative to the folder, one per row of ``batch``.
    names: list[str]
    #: Each image as loaded, with the picture a person recognises it by.
    inputs: list[ModelInput]
    #: ``(path relative to the folder, reason)`` for each image that could not be read.
    skipped: list[tuple[str, str]]


def read_images(
    files: Sequence[Path],
    loaded: ModelInputSpec,
    preprocessing: Preprocessing,
    input_shape: tuple[int, ...],
    folder: Path,
    max_pixels: int | None = None,
) -> LoadedImages:
    """Preprocess every readable image of ``files`` (under ``folder``) into one batch.

    Unreadable images are left out and listed in :attr:`LoadedImages.skipped`.

    Raises:
        InputError: None of the images is readable.
    """
    layout, _ = image_layout(input_shape)
    spatial = input_shape[1:] if layout == "NCHW" else input_shape[:-1]
    size = (int(spatial[0]), int(spatial[1]))
    done, failed = read_each(
        files, lambda path: load_input(path, loaded, preprocessing, size, max_pixels)
    )
    skipped = [(str(path.relative_to(folder)), why) for path, why in failed]
    if not done:
        raise none_readable(len(files), f"in '{folder}'", skipped)
    inputs = [model_input for _, model_input in done]
    names = [str(path.relative_to(folder)) for path, _ in done]
    batch = np.concatenate([i.array for i in inputs])
    for row, model_input in enumerate(inputs):
        model_input.array = batch[row : row + 1]  # a view: the batch is held once
    return LoadedImages(batch, names, inputs, skipped)
