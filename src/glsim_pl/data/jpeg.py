"""Fast path for plain JPEGs: ``torchvision.io.decode_jpeg`` straight to a (3, H, W) uint8 tensor.

Both it and PIL decode with libjpeg-turbo (same IDCT, same upsampling): the pixels are identical, but decode_jpeg
skips PIL's image object and the HWC -> CHW copy (~2x the images/s per core on CUB-size files, ``bench data``).

Only a *plain* JPEG takes this path: 8-bit samples, 1 (grey, replicated to RGB as PIL's convert does) or 3
(YCbCr) components, baseline / extended / progressive Huffman coding, no Adobe colour transform marker (CMYK /
YCCK / RGB-coded files), no orientation other than 1 in EXIF or in XMP (``tiff:Orientation``, which PIL applies when
EXIF has none), an end-of-image marker near the end (not truncated),
at most :data:`MAX_PIXELS`. Anything else, and any decode error, returns None: the caller reads the file the usual
way (PIL), which applies EXIF orientation, converts colour modes and reports bad files with one error line.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import torch

# torchvision 0.29 marks its decoders deprecated (in favour of torchcodec) and warns at every call; the decoder
# itself is unchanged, and a failure here only sends the file to the checked reader
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)  # fmt: skip

__all__ = ["MAX_PIXELS", "decode_plain_jpeg", "plain_jpeg_info", "read_plain_jpeg"]

MAX_PIXELS = 89_478_485  # PIL's warning limit: larger files go through the checked path
_PLAIN_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic
_TAIL = 4096  # some writers pad after the end marker
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # the pattern PIL's Image.getexif reads


def _exif_orientation(payload: bytes) -> int:
    """Orientation tag (0x0112) of an APP1 Exif payload's first IFD; 1 when absent or unreadable."""
    tiff = payload[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for k in range(count):
        entry = tiff[offset + 2 + 12 * k : offset + 14 + 12 * k]
        if len(entry) < 12:
            return 1
        tag, _, _ = struct.unpack(order + "HHI", entry[:8])
        if tag == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1


def _xmp_turns(segment: bytes) -> bool:
    """Whether an APP1 XMP packet states an orientation other than 1."""
    return any(match[2] != b"1" for match in _XMP_ORIENTATION.finditer(segment))


def plain_jpeg_info(data: bytes) -> tuple[int, int] | None:
    """(height, width) when ``data`` is a plain JPEG (see the module docstring), else None."""
    if data[:2] != b"\xff\xd8" or b"\xff\xd9" not in data[-_TAIL:]:
        return None
    pos, size = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00" and _exif_orientation(segment) != 1:
            return None
        if marker == 0xE1 and segment.startswith(_XMP) and _xmp_turns(segment):
            return None  # PIL rotates by XMP when EXIF has no orientation: it decides, whatever EXIF says
        if marker == 0xEE and segment[:5] == b"Adobe":
            return None
        if marker in _OTHER_SOF:
            return None
        if marker in _PLAIN_SOF:
            if len(segment) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            if precision != 8 or components not in (1, 3) or height * width == 0 or height * width > MAX_PIXELS:
                return None
            size = (height, width)
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return size
        pos += 2 + length
    return None


def read_plain_jpeg(path: str | Path) -> torch.Tensor | None:
    """(3, H, W) uint8 RGB of a plain JPEG file, or None (not plain, unreadable: use the checked reader)."""
    if Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return decode_plain_jpeg(data)


def decode_plain_jpeg(data: bytes) -> torch.Tensor | None:
    """(3, H, W) uint8 RGB of plain JPEG bytes (a file's, a parquet cell's, a shard member's), or None (not plain,
    undecodable: use the checked reader)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # a torchvision without its decoders
        return None

    size = plain_jpeg_info(data)
    if size is None:
        return None
    try:
        image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None
    return image if tuple(image.shape[-2:]) == size else None
