"""Read grayscale DICOM images into float32 arrays in [0, 1] (bright = dense), with clear errors.

Compressed pixel data is decoded by pydicom's plugins: RLE is built in, JPEG 2000 needs
``pylibjpeg`` + ``pylibjpeg-openjpeg``; JPEG-LS needs another plugin (e.g. ``pylibjpeg-libjpeg``),
without which such files raise :class:`DicomReadError`.
"""

from __future__ import annotations

import logging
import math
import os
from numbers import Real
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from attnlib.data.cache import ArrayCache

log = logging.getLogger(__name__)

#: The paper's preprocessing halves each side of the image.
DEFAULT_SCALE = 0.5
#: Bumped when read_dicom's output changes for the same arguments, so cached results are not reused.
READER_VERSION = 1

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_METADATA_KEYWORDS = (
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
)


class DicomReadError(ValueError):
    """A DICOM file could not be read as an image; the message starts with the file path."""


def read_dicom(
    path: str | os.PathLike[str],
    *,
    scale: float | None = DEFAULT_SCALE,
    size: tuple[int, int] | None = None,
    voi: bool = True,
) -> np.ndarray:
    """Read a single-frame grayscale DICOM as a C-contiguous float32 ``H x W`` array in [0, 1].

    Steps: decode pixels -> modality LUT (or rescale slope/intercept) -> VOI LUT or window
    centre/width when ``voi`` and present -> invert MONOCHROME1 (pydicom's LUTs do not), so that
    bright = dense -> resize -> min-max to [0, 1] (a constant image gives zeros).
    ``scale`` multiplies each side (rounded half up, at least 1; ``None`` or 1 keeps the size);
    ``size=(H, W)`` overrides it. Resizing averages areas (PIL's BOX filter on the float image):
    each output pixel is the mean of the input pixels whose centres it covers, so downsampling
    does not alias (exact block means for integer factors). A *Presentation LUT Shape* is not
    applied (for MONOCHROME1 its INVERSE is the inversion above); INVERSE on MONOCHROME2 is
    logged as a warning. Raises :class:`DicomReadError` on any failure.
    """
    _check_resize_args(scale, size)
    path = Path(path)
    ds = _open(path, stop_before_pixels=False)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise DicomReadError(f"{path}: no pixel data")
    frames = _number_of_frames(ds, path)
    if frames > 1:
        raise DicomReadError(f"{path}: multi-frame DICOM ({frames} frames) is not supported")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _GRAYSCALE:
        raise DicomReadError(
            f"{path}: photometric interpretation {photometric or 'missing'!r} is not supported "
            "(only MONOCHROME1 and MONOCHROME2)"
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise ValueError, RuntimeError, NotImplementedError, ...
        raise DicomReadError(
            f"{path}: pixel data could not be decoded ({_transfer_syntax_name(ds)}): {exc}"
        ) from exc
    try:
        arr = apply_modality_lut(pixels, ds)
        if voi:
            if ds.get("VOILUTSequence") and not np.issubdtype(arr.dtype, np.integer):
                arr = np.rint(arr).astype(np.int64)  # a VOI LUT is indexed by integer values
            arr = apply_voi_lut(arr, ds)
    except Exception as exc:  # malformed LUT or window elements fail in various ways inside pydicom
        raise DicomReadError(f"{path}: modality/VOI LUT could not be applied: {exc}") from exc
    arr = np.asarray(arr, dtype=np.float64)
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr
    elif str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
        log.warning("%s: MONOCHROME2 with Presentation LUT Shape INVERSE; not inverted", path)
    target = _target_size(arr.shape, scale, size)
    if target != arr.shape:
        arr = _resize_area(arr, target)
    return _min_max(arr)


def read_dicom_cached(
    path: str | os.PathLike[str],
    cache: ArrayCache | None,
    *,
    scale: float | None = DEFAULT_SCALE,
    size: tuple[int, int] | None = None,
    voi: bool = True,
) -> np.ndarray:
    """:func:`read_dicom` through ``cache`` (no caching when ``None``).

    The cache parameters are all of read_dicom's arguments (defaults included) and
    :data:`READER_VERSION`.
    """
    if cache is None:
        return read_dicom(path, scale=scale, size=size, voi=voi)
    if not Path(path).is_file():
        raise DicomReadError(f"{path}: no such file")
    params = {
        "reader": f"attnlib.data.real.dicom.read_dicom/{READER_VERSION}",
        "scale": scale,
        "size": None if size is None else [int(side) for side in size],
        "voi": bool(voi),
    }
    return cache.get_or_compute(path, params, lambda: read_dicom(path, scale=scale, size=size, voi=voi))


def dicom_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """Image-related header fields of a DICOM file, as plain Python values; never decodes pixels.

    Keys: ``path``, the DICOM keywords in ``_METADATA_KEYWORDS`` (``None`` when absent; window
    values are lists when multi-valued), ``TransferSyntaxUID``, ``TransferSyntaxName``,
    ``has_modality_lut`` (LUT sequence or rescale), ``has_voi_lut`` (VOI LUT sequence) and
    ``has_window`` (window centre and width).
    """
    path = Path(path)
    ds = _open(path, stop_before_pixels=True)
    meta: dict[str, object] = {"path": str(path)}
    for keyword in _METADATA_KEYWORDS:
        meta[keyword] = _plain(ds.get(keyword))
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    meta["TransferSyntaxUID"] = None if uid is None else str(uid)
    meta["TransferSyntaxName"] = _transfer_syntax_name(ds)
    meta["has_modality_lut"] = bool(ds.get("ModalityLUTSequence")) or (
        "RescaleSlope" in ds and "RescaleIntercept" in ds
    )
    meta["has_voi_lut"] = bool(ds.get("VOILUTSequence"))
    meta["has_window"] = meta["WindowCenter"] is not None and meta["WindowWidth"] is not None
    return meta


def _open(path: Path, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DicomReadError(f"{path}: not a DICOM file ({exc})") from exc
    except OSError as exc:
        raise DicomReadError(f"{path}: could not be opened ({exc.strerror or exc})") from exc
    except Exception as exc:  # a damaged header can fail in many ways inside the parser
        reason = f"{type(exc).__name__}: {exc}"
        raise DicomReadError(f"{path}: DICOM header could not be parsed ({reason})") from exc


def _number_of_frames(ds: Dataset, path: Path) -> int:
    value = ds.get("NumberOfFrames")
    try:
        return 1 if value in (None, "") else int(value)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"{path}: invalid NumberOfFrames {value!r}") from exc


def _transfer_syntax_name(ds: Dataset) -> str:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return "unknown transfer syntax" if uid is None else uid.name


def _plain(value: object) -> object:
    """pydicom values (DSfloat, IS, MultiValue, UID, ...) as float / int / str / list."""
    if value is None:
        return None
    if isinstance(value, MultiValue):
        return [_plain(item) for item in value]
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _check_resize_args(scale: float | None, size: tuple[int, int] | None) -> None:
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, Real) or not 0 < scale <= 1
    ):
        raise ValueError(f"scale must be a number in (0, 1] or None, got {scale!r}")
    if size is not None and (
        len(size) != 2
        or any(isinstance(side, bool) or not isinstance(side, int | np.integer) or side < 1 for side in size)
    ):
        raise ValueError(f"size must be (height, width) with two positive integers or None, got {size!r}")


def _target_size(
    shape: tuple[int, ...], scale: float | None, size: tuple[int, int] | None
) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    height, width = shape[0], shape[1]
    if scale is None:
        return height, width
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def _resize_area(arr: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))  # mode "F"
    resized = image.resize((target[1], target[0]), resample=Image.Resampling.BOX)
    return np.asarray(resized, dtype=np.float64)


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return np.ascontiguousarray((arr - lo) / (hi - lo), dtype=np.float32)
