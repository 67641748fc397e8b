"""An image file's size read from its header, before decoding: the pixel budget's first line.

A 200-byte PNG can declare 40000 x 40000 pixels, which a decoder would allocate (4.8 GB) before it
finds the data missing. OpenCV has no header-only API, so the headers of the formats onnxdeconv
reads (PNG, JPEG, BMP, WebP, TIFF) are parsed here: a few bytes each, never the pixel data.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from onnxdeconv.errors import InputError

#: The most pixels (width x height) an image may declare, like Pillow's ``MAX_IMAGE_PIXELS``:
#: 100 million, 300 MB as 8-bit RGB. ``ONNXDECONV_MAX_IMAGE_PIXELS`` (or the ``max_pixels``
#: parameter of the readers) changes it.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: The environment variable that sets the pixel budget.
MAX_PIXELS_VARIABLE = "ONNXDECONV_MAX_IMAGE_PIXELS"


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares."""

    format: str
    width: int
    height: int
    #: Whether the image may carry transparency (decoded with its alpha, then composited).
    alpha: bool

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel budget: ``max_pixels``, else ``ONNXDECONV_MAX_IMAGE_PIXELS``, else the default.

    Raises:
        InputError: The environment variable is not a positive integer.
    """
    if max_pixels is not None:
        return max_pixels
    raw = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(raw)) if "e" in raw.lower() else int(raw.replace("_", ""))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise InputError(
            f"{MAX_PIXELS_VARIABLE}='{raw}' is not a positive number of pixels: set it to one "
            f"such as {DEFAULT_MAX_IMAGE_PIXELS}, or unset it"
        )
    return value


def check_pixel_budget(
    name: object, width: int, height: int, max_pixels: int | None = None
) -> None:
    """Raise :class:`InputError` in one line if ``width x height`` is over the pixel budget.

    Args:
        name: The image, for the message.
        width: Its width.
        height: Its height.
        max_pixels: The budget (None: :func:`max_image_pixels`).
    """
    budget = max_image_pixels(max_pixels)
    if width * height > budget:
        raise InputError(
            f"'{name}' declares {width}x{height} = {width * height} pixels, over the pixel budget "
            f"of {budget} (a guard against decompression bombs): shrink the image, or raise the "
            f"budget with {MAX_PIXELS_VARIABLE}={width * height} if you trust it"
        )


def read_header(data: bytes | memoryview, name: object = "the image") -> ImageHeader | None:
    """The format, size and transparency an image's bytes declare; None for another format.

    Args:
        data: The file's bytes (only its first bytes are read, past a JPEG's metadata at most).
        name: The image, for the message.

    Raises:
        InputError: The header is of a known format but cut short or malformed.
    """
    view = memoryview(data).cast("B")
    head = bytes(view[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind, parse = "PNG", _png
    elif head.startswith(b"\xff\xd8"):
        kind, parse = "JPEG", _jpeg
    elif head.startswith(b"BM"):
        kind, parse = "BMP", _bmp
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        kind, parse = "WebP", _webp
    elif head[:4] in (b"II*\x00", b"MM\x00*"):
        kind, parse = "TIFF", _tiff
    else:
        return None
    try:
        return parse(view)
    except (struct.error, IndexError, ValueError):
        raise InputError(
            f"'{name}' has a cut-short or malformed {kind} header: check the file"
        ) from None


def _png(data: memoryview) -> ImageHeader:
    if bytes(data[12:16]) != b"IHDR":
        raise ValueError
    width, height, _, color_type = struct.unpack(">IIBB", data[16:26])
    # Gray+alpha, RGBA, or a tRNS chunk (a transparent colour or palette entries) before the data.
    head = bytes(data[:65536])
    idat = head.find(b"IDAT")
    alpha = color_type in (4, 6) or b"tRNS" in head[: idat if idat > 0 else None]
    return ImageHeader("png", width, height, alpha)


#: JPEG start-of-frame markers (the baseline, progressive, lossless and arithmetic kinds).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: memoryview) -> ImageHeader:
    offset = 2
    while offset + 9 < len(data):
        if data[offset] != 0xFF:
            raise ValueError
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return ImageHeader("jpeg", width, height, False)
        if marker == 0xDA or length < 2:  # the scan data, with no frame header before it
            raise ValueError
        offset += 2 + length
    raise ValueError


def _bmp(data: memoryview) -> ImageHeader:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        return ImageHeader("bmp", width, height, False)
    width, height, _, bits = struct.unpack("<iiHH", data[18:30])
    return ImageHeader("bmp", abs(width), abs(height), bits == 32)


def _webp(data: memoryview) -> ImageHeader:
    chunk = bytes(data[12:16])
    if chunk == b"VP8X":
        flags = data[20]
        width = 1 + int.from_bytes(bytes(data[24:27]), "little")
        height = 1 + int.from_bytes(bytes(data[27:30]), "little")
        return ImageHeader("webp", width, height, bool(flags & 0x10))
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return ImageHeader("webp", width, height, bool((bits >> 28) & 1))
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, False)
    raise ValueError


def _tiff(data: memoryview) -> ImageHeader:
    order = "<" if bytes(data[:2]) == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for index in range(count):
        at = offset + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257, 338):  # ImageWidth, ImageLength, ExtraSamples (alpha)
            value_format = order + ("H" if kind == 3 else "I")
            size = struct.calcsize(value_format)
            (found[tag],) = struct.unpack(value_format, data[at + 8 : at + 8 + size])
    if 256 not in found or 257 not in found:
        raise ValueError
    return ImageHeader("tiff", found[256], found[257], 338 in found)
