"""ClickMe: human importance maps on ILSVRC12 images, read from its npz or TFRecord files without TensorFlow.

Linsley, Shiebler, Eberhardt, Serre, "Learning what and where to attend", ICLR 2019 (the GALA paper; maps
from the ClickMe game, https://serre-lab.clps.brown.edu/resource/clickme/). The images are ILSVRC12
images: ImageNet's terms of access apply (non-commercial research). Never commit the images or maps.

Forms (``data_manifests/clickme.yaml``), told apart by the files and the bytes, never by a flag:

- npz: one ``.npz`` per image with ``image`` (H x W x 3), ``heatmap`` (H x W or H x W x 1), ``label``
  (an integer) and optionally ``click_count``.
- TFRecord (``*.tfrecord``, ``*.tfrecords`` or TPU-style shards ``<name>-NNNNN-of-NNNNN``): one
  ``tf.train.Example`` per image with the bytes features ``image`` and ``heatmap``, ``label`` (int64) and,
  in the GALA-era files, ``click_count`` (int64) and ``bbox`` (4 values, int64 or float, as stored). Each
  of ``image`` and ``heatmap`` is JPEG when its bytes start with FF D8 (the later release), else raw
  little-endian float32 (GALA era): S x S x 3 for the image (S from the length), H x W for the map.

The map is optional in both forms: GALA-era validation shards hold ``image`` and ``label`` only, and a
training record may lack it. Such an image is read with ``has_map`` False and an all-zero map of its size.

Values: 8-bit data (JPEG, integer arrays) is divided by 255; float images are taken as [0, 1] unless their
maximum exceeds 1, then as [0, 255]; float maps are kept as stored (non-negative, any scale: the ClickMe
losses normalise them). A file's records are found by walking the TFRecord framing (length, masked CRC-32C
of the length, data, masked CRC-32C of the data); a truncated or corrupt record raises
:class:`TFRecordError` naming the file, the record's 0-based index and its byte offset.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Literal

import crc32c
import numpy as np
import pandas as pd
import torch
from google.protobuf.message import DecodeError
from PIL import Image
from tfrecord.example_pb2 import Example, Features
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur, resize

from attnlib.data.contract import TableDataset
from attnlib.data.real.images import image_item, is_hidden
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
Form = Literal["npz", "tfrecord"]
Encoding = Literal["npz", "raw_float32", "jpeg"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
REQUIRED_KEYS = ("image", "label")
#: The human map's key; optional (GALA-era validation records have none).
MAP_KEY = "heatmap"
#: ImageNet classes; ``label_names`` are their indices as strings unless a names file is given.
NUM_CLASSES = 1000
#: The paper's blur: a 49 x 49 Gaussian (its sigma is not given; :func:`default_sigma`).
PAPER_BLUR = 49
#: The paper's inter-rater reliability of ClickMe maps (Spearman rho between players) and its shuffled null.
PAPER_INTERRATER_RHO, PAPER_INTERRATER_NULL = 0.58, 0.18
JPEG_MAGIC = b"\xff\xd8"

_SHARD_NAME = re.compile(r"^[A-Za-z][\w.]*-\d+-of-\d+$")
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class ClickMeFormatError(ValueError):
    """A ClickMe file is missing, unreadable or lacks the expected content."""


class TFRecordError(ClickMeFormatError):
    """Record ``record`` (0-based) of the TFRecord file ``path``, starting at byte ``offset``, is truncated or
    corrupt; ``problem`` says how (and names the offset).

    Records ``0 ... record - 1`` of the file are intact.
    """

    def __init__(self, path: str | Path, record: int, offset: int, problem: str) -> None:
        super().__init__(f"{path}: record {record}: {problem}")
        self.path, self.record, self.offset, self.problem = Path(path), record, offset, problem


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C of ``data``, rotated right by 15 bits, plus 0xA282EAD8 (mod 2**32)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _next_length(f: BinaryIO, path: Path, record: int, size: int) -> int | None:
    """Read the header of the record at ``f``'s position; its data length, or None at the end of the file.

    Checks the length's CRC and that the data and its CRC fit in the file (``size`` bytes).
    """
    start = f.tell()
    head = f.read(_HEADER.size)
    if not head:
        return None
    if len(head) < _HEADER.size:
        raise TFRecordError(
            path, record, start, f"truncated: {len(head)} of {_HEADER.size} header bytes at offset {start}"
        )
    length, crc = _HEADER.unpack(head)
    if masked_crc32c(head[:8]) != crc:
        raise TFRecordError(path, record, start, f"corrupt header at offset {start} (length CRC mismatch)")
    left = size - start - _HEADER.size
    if length + _CRC.size > left:
        raise TFRecordError(
            path,
            record,
            start,
            f"truncated: {length} data bytes and a {_CRC.size}-byte CRC announced "
            f"at offset {start}, {left} bytes left in the file",
        )
    return length


def _next_record(f: BinaryIO, path: Path, record: int, size: int) -> bytes | None:
    """The data of the record at ``f``'s position (both CRCs checked), or None at the end of the file."""
    start = f.tell()
    length = _next_length(f, path, record, size)
    if length is None:
        return None
    data = f.read(length)
    (crc,) = _CRC.unpack(f.read(_CRC.size))
    if masked_crc32c(data) != crc:
        raise TFRecordError(
            path, record, start, f"corrupt data (CRC mismatch) of the record at offset {start}"
        )
    return data


def _file_size(f: BinaryIO) -> int:
    f.seek(0, io.SEEK_END)
    size = f.tell()
    f.seek(0)
    return size


def iter_tfrecord(path: str | Path) -> Iterator[bytes]:
    """The records of a TFRecord file, in order; raises :class:`TFRecordError` at the first bad one."""
    path = Path(path)
    with path.open("rb") as f:
        size = _file_size(f)
        record = 0
        while (data := _next_record(f, path, record, size)) is not None:
            yield data
            record += 1


def scan_tfrecord(path: str | Path) -> tuple[list[int], TFRecordError | None]:
    """Byte offsets of a TFRecord file's intact records, from their headers alone (data CRCs are not read),
    and the :class:`TFRecordError` of the first truncated record or corrupt header (None when there is none).
    """
    path = Path(path)
    offsets: list[int] = []
    with path.open("rb") as f:
        size = _file_size(f)
        try:
            while (length := _next_length(f, path, len(offsets), size)) is not None:
                offsets.append(f.tell() - _HEADER.size)
                f.seek(length + _CRC.size, io.SEEK_CUR)
        except TFRecordError as err:
            return offsets, err
    return offsets, None


def index_tfrecord(path: str | Path) -> list[int]:
    """Byte offsets of a TFRecord file's records (:func:`scan_tfrecord`); raises its
    :class:`TFRecordError`."""
    offsets, error = scan_tfrecord(path)
    if error is not None:
        raise error
    return offsets


def read_tfrecord(path: str | Path, offset: int, record: int) -> bytes:
    """The data of record ``record`` of ``path``, which starts at byte ``offset`` (both CRCs checked)."""
    path = Path(path)
    with path.open("rb") as f:
        size = _file_size(f)
        f.seek(offset)
        data = _next_record(f, path, record, size)
    if data is None:
        raise TFRecordError(path, record, offset, f"no record at offset {offset} (the file has {size} bytes)")
    return data


def _varint(f: BinaryIO) -> int:
    value = shift = 0
    while byte := f.read(1):
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    raise ValueError("the data ends inside a varint")


def _fields(f: BinaryIO, end: int, number: int) -> Iterator[int]:
    """The end offset of each length-delimited field ``number`` of the protobuf message from ``f``'s position
    to ``end``; ``f`` stands at the field's value when it is yielded and past it afterwards. Other fields are
    skipped. Raises ValueError on malformed data."""
    while (here := f.tell()) < end:
        tag = _varint(f)
        wire = tag & 7
        if wire == 0:
            _varint(f)
            stop = f.tell()
        elif wire == 2:
            size = _varint(f)
            stop = f.tell() + size
        elif wire in (1, 5):  # 64- and 32-bit values
            stop = f.tell() + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unknown protobuf wire type {wire} at offset {here}")
        if stop > end:
            raise ValueError(f"the field at offset {here} runs past the end of its message ({end})")
        if wire == 2 and tag >> 3 == number:
            yield stop
        f.seek(stop)


def example_keys(f: BinaryIO, offset: int) -> list[str]:
    """The feature names of the ``tf.train.Example`` in the TFRecord record at byte ``offset`` of ``f``.

    Walks the protobuf wire format and seeks past every value, so the pixels are not read (and no CRC is
    checked): cheap enough for every record. Raises ValueError when the data is not a well-formed Example.
    """
    f.seek(offset)
    (length,) = struct.unpack("<Q", f.read(8))
    start = offset + _HEADER.size
    f.seek(start)
    keys = []
    for features in _fields(f, start + length, 1):  # Example.features
        for entry in _fields(f, features, 1):  # Features.feature: map entries of key (1) and value (2)
            for key in _fields(f, entry, 1):
                keys.append(f.read(key - f.tell()).decode())
    return keys


def write_tfrecord(path: str | Path, records: Iterable[bytes]) -> Path:
    """Write ``records`` with the TFRecord framing (as TensorFlow's writer does); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data)))
    return path


@dataclass(frozen=True)
class ClickMeRecord:
    """One image as stored: ``image`` (H x W x 3 float32 in [0, 1]), ``heatmap`` (H x W float32, >= 0; all
    zeros when ``has_map`` is False, the image stores no map), ``label``, ``click_count`` (-1 when not
    stored), ``bbox`` (4 values as stored, or None) and the image's ``encoding``."""

    image: np.ndarray
    heatmap: np.ndarray
    label: int
    click_count: int
    bbox: tuple[float, ...] | None
    encoding: Encoding
    has_map: bool


def _unit_image(image: np.ndarray, where: str) -> np.ndarray:
    """``image`` as float32 in [0, 1]: integers and floats above 1 are divided by 255."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ClickMeFormatError(f"{where}: image must be H x W x 3, got shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise ClickMeFormatError(f"{where}: image must hold numbers, got dtype {image.dtype}")
    values = image.astype(np.float32)
    if not np.isfinite(values).all():
        raise ClickMeFormatError(f"{where}: image has {int((~np.isfinite(values)).sum())} non-finite values")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise ClickMeFormatError(
            f"{where}: image values must lie in [0, 1] or [0, 255], found [{low:g}, {high:g}]"
        )
    return values / 255 if image.dtype.kind in "ui" or high > 1 else values


def _heatmap(heatmap: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``heatmap`` as H x W float32 (8-bit maps divided by 255); it must match the image and be >= 0."""
    if heatmap.ndim == 3 and heatmap.shape[2] == 1:
        heatmap = heatmap[..., 0]
    if heatmap.shape != shape[:2]:
        raise ClickMeFormatError(
            f"{where}: heatmap must be {shape[0]} x {shape[1]} (the image's size), got shape {heatmap.shape}"
        )
    if heatmap.dtype.kind not in "uif":
        raise ClickMeFormatError(f"{where}: heatmap must hold numbers, got dtype {heatmap.dtype}")
    values = heatmap.astype(np.float32) / (255 if heatmap.dtype.kind in "ui" else 1)
    finite = np.isfinite(values)
    if not finite.any():
        raise ClickMeFormatError(f"{where}: heatmap is all NaN or infinite")
    if not finite.all():
        raise ClickMeFormatError(f"{where}: heatmap has {int((~finite).sum())} non-finite values")
    if values.min() < 0:
        raise ClickMeFormatError(f"{where}: heatmap has negative values (min {float(values.min()):g})")
    return values


def _integer(value: Any, key: str, where: str) -> int:
    array = np.asarray(value)
    if array.dtype.kind not in "ui" or array.size != 1:
        raise ClickMeFormatError(
            f"{where}: {key} must be one integer, got dtype {array.dtype} shape {array.shape}"
        )
    return int(array.reshape(()))


def read_npz(path: str | Path) -> ClickMeRecord:
    """One image of the npz form (without ``heatmap``: a map-less record); raises :class:`ClickMeFormatError`
    naming the file on a bad one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ClickMeFormatError(f"{path}: unreadable .npz ({err})") from err
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ClickMeFormatError(f"{path}: no {missing} in the .npz (found {sorted(arrays)})")
    where = str(path)
    image = _unit_image(arrays["image"], where)
    click_count = _integer(arrays["click_count"], "click_count", where) if "click_count" in arrays else -1
    has_map = MAP_KEY in arrays
    return ClickMeRecord(
        image,
        _heatmap(arrays[MAP_KEY], image.shape, where) if has_map else _no_map(image),
        _integer(arrays["label"], "label", where),
        click_count,
        None,
        "npz",
        has_map,
    )


def _no_map(image: np.ndarray) -> np.ndarray:
    """The map of an image without one: zeros of its height and width."""
    return np.zeros(image.shape[:2], np.float32)


def _values(features: Features, key: str, kinds: tuple[str, ...], count: int, where: str) -> list[Any]:
    """The values of feature ``key``, which must be one of ``kinds`` (e.g. ``int64_list``) with ``count``."""
    feature = features.feature[key]
    found = feature.WhichOneof("kind")
    values = list(getattr(feature, found).value) if found else []
    if found not in kinds or len(values) != count:
        shown = values[:4] if found != "bytes_list" else [f"<{len(v)} bytes>" for v in values[:4]]
        raise ClickMeFormatError(
            f"{where}: {key} must be {' or '.join(kinds)} with {count} values, got {found} {shown}"
        )
    return values


def _decode_jpeg(data: bytes, mode: str, key: str, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            stored, pixels = im.mode, np.asarray(im.convert(mode))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ClickMeFormatError(f"{where}: {key} is not a readable JPEG ({err})") from err
    if mode == "L" and stored != "L":
        raise ClickMeFormatError(f"{where}: {key} JPEG must have one channel, got mode {stored}")
    return pixels


def decode_example(data: bytes, where: str) -> ClickMeRecord:
    """One image of the TFRecord form, from a serialised ``tf.train.Example`` (without ``heatmap``: a map-less
    record); ``where`` prefixes errors."""
    example = Example()
    try:
        example.ParseFromString(data)
    except DecodeError as err:
        raise ClickMeFormatError(f"{where}: not a tf.train.Example ({err})") from err
    features = example.features
    missing = [key for key in REQUIRED_KEYS if key not in features.feature]
    if missing:
        raise ClickMeFormatError(f"{where}: missing features {missing} (found {sorted(features.feature)})")
    image_bytes = _values(features, "image", ("bytes_list",), 1, where)[0]
    if image_bytes.startswith(JPEG_MAGIC):
        image, encoding = _decode_jpeg(image_bytes, "RGB", "image", where), "jpeg"
    else:
        side = math.isqrt(len(image_bytes) // 12)
        if not image_bytes or side * side * 12 != len(image_bytes):
            raise ClickMeFormatError(
                f"{where}: image has {len(image_bytes)} bytes: neither a JPEG nor S x S x 3 float32 values"
            )
        image, encoding = np.frombuffer(image_bytes, "<f4").reshape(side, side, 3), "raw_float32"
    image = _unit_image(image, where)
    has_map = MAP_KEY in features.feature
    heatmap = _decode_map(features, image.shape, where) if has_map else _no_map(image)
    label = _values(features, "label", ("int64_list",), 1, where)[0]
    click_count = -1
    if "click_count" in features.feature:
        click_count = _values(features, "click_count", ("int64_list",), 1, where)[0]
    bbox = None
    if "bbox" in features.feature:
        bbox = tuple(map(float, _values(features, "bbox", ("int64_list", "float_list"), 4, where)))
    return ClickMeRecord(image, heatmap, int(label), int(click_count), bbox, encoding, has_map)


def _decode_map(features: Features, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The ``heatmap`` feature as an H x W map of an image of ``shape`` (JPEG or raw float32 bytes)."""
    map_bytes = _values(features, MAP_KEY, ("bytes_list",), 1, where)[0]
    height, width = shape[:2]
    if map_bytes.startswith(JPEG_MAGIC):
        heatmap = _decode_jpeg(map_bytes, "L", MAP_KEY, where)
    elif len(map_bytes) == 4 * height * width:
        heatmap = np.frombuffer(map_bytes, "<f4").reshape(height, width)
    else:
        raise ClickMeFormatError(
            f"{where}: heatmap has {len(map_bytes)} bytes: neither a JPEG nor {height} x "
            f"{width} float32 values ({4 * height * width} bytes)"
        )
    return _heatmap(heatmap, shape, where)


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_example(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    label: int,
    *,
    click_count: int | None = None,
    bbox: Sequence[float] | None = None,
    jpeg: bool = False,
    quality: int = 95,
) -> bytes:
    """A serialised ``tf.train.Example`` of one image, the inverse of :func:`decode_example`.

    ``image`` (H x W x 3) and ``heatmap`` (H x W) are floats in [0, 1] (the map may exceed 1 unless
    ``jpeg``). Raw (default): little-endian float32 bytes. ``jpeg``: 8-bit JPEGs (RGB image, one-channel
    map) of ``round(255 * value)``. ``bbox`` is written as an int64 list when its values are integers,
    else as a float list; ``heatmap`` (a map-less record, like the GALA-era validation shards'),
    ``click_count`` and ``bbox`` are left out when None.
    """
    example = Example()
    feature = example.features.feature
    for key, values in (("image", image), (MAP_KEY, heatmap)):
        if values is None:
            continue
        if jpeg:
            pixels = np.round(np.clip(np.asarray(values, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
            feature[key].bytes_list.value.append(_jpeg(pixels, quality))
        else:
            feature[key].bytes_list.value.append(np.ascontiguousarray(values, dtype="<f4").tobytes())
    feature["label"].int64_list.value.append(int(label))
    if click_count is not None:
        feature["click_count"].int64_list.value.append(int(click_count))
    if bbox is not None:
        box = np.asarray(bbox)
        target = feature["bbox"].int64_list if box.dtype.kind in "ui" else feature["bbox"].float_list
        target.value.extend(box.tolist())
    return example.SerializeToString()


def is_tfrecord_name(name: str) -> bool:
    """Whether a file name is a TFRecord's: ``*.tfrecord``, ``*.tfrecords`` or ``<name>-NNNNN-of-NNNNN``."""
    return Path(name).suffix in TFRECORD_SUFFIXES or bool(_SHARD_NAME.match(name))


def split_of(rel: str) -> str:
    """The split a file belongs to: the one of :data:`SPLITS` that is a word of its relative path, else ''.

    Words are separated by ``/ . _ -``: ``train/train-3.tfrecords`` and ``clickme_val.tfrecords`` name theirs.
    """
    words = set(re.split(r"[/._-]", rel.lower()))
    found = [split for split in SPLITS if split in words]
    return found[0] if len(found) == 1 else ""


def clickme_files(root: str | Path) -> tuple[Form, list[Path]]:
    """The form and files of a ClickMe copy: ``root`` is one file, or a folder searched recursively.

    Hidden files are skipped. Raises :class:`ClickMeFormatError` when ``root`` is missing, holds no npz
    or TFRecord file, or holds both forms.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return ("npz" if root.suffix == ".npz" else "tfrecord"), [root]
    if not root.is_dir():
        raise ClickMeFormatError(f"{root}: not found")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not is_hidden(p.relative_to(root).as_posix())
    )
    npz = [p for p in files if p.suffix == ".npz"]
    records = [p for p in files if is_tfrecord_name(p.name)]
    if npz and records:
        raise ClickMeFormatError(
            f"{root}: holds both .npz ({len(npz)}) and TFRecord ({len(records)}) files; "
            "point root at one form"
        )
    if not npz and not records:
        raise ClickMeFormatError(
            f"{root}: no .npz or TFRecord files (*.tfrecord, *.tfrecords, <name>-NNNNN-of-NNNNN)"
        )
    return ("npz", npz) if npz else ("tfrecord", records)


def default_sigma(kernel_size: int) -> float:
    """Sigma of a Gaussian of ``kernel_size`` when none is given: ``0.3 * ((k - 1) / 2 - 1) + 0.8``.

    OpenCV's rule, which torchvision's ``gaussian_blur`` also applies: 7.7 for the paper's 49 x 49 kernel,
    whose sigma the paper does not give.
    """
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def blur_map(maps: Tensor, kernel_size: int = PAPER_BLUR, sigma: float | None = None) -> Tensor:
    """``maps`` (..., H x W) blurred by torchvision's ``gaussian_blur`` (reflect padding); ``sigma``
    defaults to :func:`default_sigma`."""
    sigma = default_sigma(kernel_size) if sigma is None else sigma
    return gaussian_blur(maps, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


def read_label_names(path: str | Path) -> list[str]:
    """Class names, one a line (line k names label k); blank lines are not allowed."""
    path = Path(path)
    if not path.is_file():
        raise ClickMeFormatError(f"{path}: label names file not found")
    names = path.read_text(encoding="utf-8-sig").splitlines()
    blank = [i for i, name in enumerate(names, start=1) if not name.strip()]
    if not names or blank:
        raise ClickMeFormatError(f"{path}: one class name a line, without blank lines (blank: {blank[:5]})")
    return [name.strip() for name in names]


@dataclass(eq=False)
class ClickMe(TableDataset):
    """ClickMe images with their human importance maps (Linsley et al., ICLR 2019), in the dataset contract.

    ``root`` is a folder of npz or TFRecord files (searched recursively) or one TFRecord file; the
    forms and how they are detected are in the module docstring and ``data_manifests/clickme.yaml``.
    ``split`` keeps the files whose relative path names it (:func:`split_of`); None keeps all. At init
    every TFRecord file's headers are walked once (an index of file and offset per record, see
    :func:`scan_tfrecord`), so an item reads one record. A truncated record or corrupt header ends its file:
    the intact records before it are kept, the :class:`TFRecordError` (file, record index, byte offset) is
    logged as one warning and kept in :attr:`problems`; ``strict`` raises it instead. ``label_names``: the
    ImageNet class indices as strings (``"0" ... "999"``), or the lines of ``label_names_file``.

    Items: ``idx``, ``id`` (npz: the relative path without ``.npz``; TFRecord: ``<relative path>#<record>``),
    ``img`` (3 x S x S float32, [0, 1] unless ``standardize`` applies ImageNet mean/std), ``lab``, ``map``
    (1 x S x S float32, the human map, blurred at its stored size by a ``blur`` x ``blur`` Gaussian of
    ``blur_sigma`` (:func:`blur_map`) when ``blur`` is not None), ``has_map`` and ``click_count`` (-1 when
    not stored). An image stored without a map (GALA-era validation records) has ``has_map`` False and an
    all-zero ``map`` of the same shape, so batches collate: map losses and human alignment skip it,
    classification metrics use it. Image and map are resized together to S = ``image_size`` (bilinear,
    antialiased); None keeps the stored size. Labels are known only once an item is read (reading them all
    would read the whole set).
    """

    root: Path
    split: Split | None = None
    image_size: int | None = 224
    blur: int | None = PAPER_BLUR
    blur_sigma: float | None = None
    standardize: bool = False
    label_names_file: Path | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be None or one of {list(SPLITS)}, got {self.split!r}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be positive or None, got {self.image_size}")
        if self.blur is not None and (self.blur < 1 or self.blur % 2 == 0):
            raise ValueError(f"blur must be an odd kernel size or None, got {self.blur}")
        self.root = Path(self.root).expanduser()
        self.form, files = clickme_files(self.root)
        self.folder = self.root if self.root.is_dir() else self.root.parent
        rels = [p.relative_to(self.folder).as_posix() for p in files]
        if self.split is not None:
            rels = [rel for rel in rels if split_of(rel) == self.split]
        rows = []
        self.problems: list[TFRecordError] = []
        for rel in rels:
            if self.form == "npz":
                rows.append((rel.removesuffix(".npz"), rel, 0, 0))
                continue
            offsets, error = scan_tfrecord(self.folder / rel)
            if error is not None:
                if self.strict:
                    raise error
                log.warning("%s; keeping the %d intact records before it", error, error.record)
                self.problems.append(error)
            rows += [(f"{rel}#{k}", rel, k, offset) for k, offset in enumerate(offsets)]
        if not rows:
            raise ClickMeFormatError(
                f"{self.root}: no records" + (f" of split {self.split!r}" if self.split else "")
            )
        self.metadata = pd.DataFrame(rows, columns=["id", "file", "record", "offset"])
        self.metadata["split"] = self.metadata["file"].map(split_of)
        self.label_names = (
            read_label_names(self.label_names_file)
            if self.label_names_file is not None
            else [str(k) for k in range(NUM_CLASSES)]
        )
        log.info("ClickMe %s: %d images in %d %s files", self.split or "all", len(self), len(rels), self.form)


    def where(self, i: int) -> str:
        """Item ``i``'s file (and record) as error messages name it."""
        path = self.folder / self.metadata.at[i, "file"]
        return str(path) if self.form == "npz" else f"{path}: record {self.metadata.at[i, 'record']}"

    def record(self, i: int) -> ClickMeRecord:
        """Item ``i`` as stored (:class:`ClickMeRecord`); its label must be one of :attr:`label_names`."""
        path = self.folder / self.metadata.at[i, "file"]
        if self.form == "npz":
            record = read_npz(path)
        else:
            k, offset = int(self.metadata.at[i, "record"]), int(self.metadata.at[i, "offset"])
            record = decode_example(read_tfrecord(path, offset, k), self.where(i))
        if not 0 <= record.label < len(self.label_names):
            raise ClickMeFormatError(
                f"{self.where(i)}: label {record.label} is not in [0, {len(self.label_names)})"
            )
        return record

    def __getitem__(self, i: int) -> dict[str, object]:
        record = self.record(i)
        img = torch.from_numpy(np.ascontiguousarray(record.image.transpose(2, 0, 1)))
        hmap = torch.from_numpy(record.heatmap)[None]
        if self.blur is not None and record.has_map:
            hmap = blur_map(hmap, self.blur, self.blur_sigma)
        size = self.image_size
        if size is not None and tuple(img.shape[1:]) != (size, size):
            img, hmap = (resize(t, [size, size], antialias=True) for t in (img, hmap))
        item = image_item(i, self.metadata.at[i, "id"], img.numpy(), record.label, self.standardize)
        return {**item, "map": hmap, "has_map": record.has_map, "click_count": record.click_count}

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the files (relative paths and sizes), the record count and the settings."""
        files = sorted(set(self.metadata["file"]))
        digest = hashlib.sha256()
        digest.update(json.dumps([[rel, (self.folder / rel).stat().st_size] for rel in files]).encode())
        digest.update(
            json.dumps(
                {
                    "records": len(self),
                    "split": self.split,
                    "image_size": self.image_size,
                    "blur": self.blur,
                    "blur_sigma": self.blur_sigma,
                    "standardize": self.standardize,
                    "label_names": self.label_names,
                },
                sort_keys=True,
            ).encode()
        )
        return digest.hexdigest()[:12]


def _problem(err: ClickMeFormatError) -> Problem:
    """A :class:`ClickMeFormatError` (``<path>: <message>``) as an error :class:`Problem`."""
    where, _, message = str(err).partition(": ")
    return Problem("error", Path(where), message)


def verify_clickme(
    root: str | Path, *, deep: bool = False, manifest: dict[str, Any] | None = None
) -> tuple[dict[str, int | float], list[Problem]]:
    """Check a local ClickMe copy against ``data_manifests/clickme.yaml``.

    Returns counts (files, records in all and per split, ``records_with_map`` and ``records_without_map``
    over every readable record, files per detected encoding: ``npz_files``, ``raw_float32_files``,
    ``jpeg_files``) and every problem: no files or both forms (nothing else can be checked), each TFRecord
    file's first truncated record or corrupt header (the records before it are counted), records (or npz
    files) that cannot be read, a warning per file outside the held-out splits (val, test) with images
    without a map (map losses skip them; held-out GALA-era records have none, which is normal) and a record
    count that differs from the release (warning). Without ``deep`` the feature names of every record are
    read (:func:`example_keys`, no pixels; an npz file's keys listed), a TFRecord file's first record is
    decoded, and a note counts the records (npz files) not decoded; with ``deep`` every record is read (data
    CRCs checked) and decoded.
    """
    manifest = manifest or load_manifest("clickme")
    root = Path(root).expanduser()
    try:
        form, files = clickme_files(root)
    except ClickMeFormatError as err:
        problem = _problem(err)
        return {}, [Problem("error", problem.path, f"{problem.message}: nothing else can be checked")]
    folder = root if root.is_dir() else root.parent
    counts: dict[str, int | float] = {"files": len(files), "records": 0}
    counts.update({f"{split}_records": 0 for split in SPLITS})
    counts.update(records_with_map=0, records_without_map=0)
    encodings = dict.fromkeys(("npz", "raw_float32", "jpeg"), 0)
    problems: list[Problem] = []
    decoded = 0
    for path in files:
        tally = _check_npz(path, deep, problems) if form == "npz" else _check_tfrecord(path, deep, problems)
        counts["records"] += tally.records
        counts["records_with_map"] += tally.with_map
        counts["records_without_map"] += tally.without_map
        decoded += tally.decoded
        split = split_of(path.relative_to(folder).as_posix())
        if split:
            counts[f"{split}_records"] += tally.records
        if tally.without_map and split not in ("val", "test"):
            problems.append(
                Problem(
                    "warning",
                    path,
                    f"{tally.without_map} of {tally.records} records have no heatmap "
                    f"(split {split or 'none'}): map losses and human alignment skip them",
                )
            )
        if tally.encoding is not None:
            encodings[tally.encoding] += 1
    counts.update({f"{encoding}_files": n for encoding, n in encodings.items()})
    expected = manifest["expected_counts"]["images"]
    if counts["records"] != expected:
        problems.append(
            Problem("warning", root, f"{counts['records']} records, the release has {expected} images")
        )
    if not deep:
        problems += not_decoded(
            root, counts["records"] - decoded, "records" if form == "tfrecord" else "npz files"
        )
    return counts, problems


@dataclass
class _Tally:
    """What the check of one file found: records, those with and without a map, records decoded (pixels
    read) and the encoding of the first one (None when it could not be read)."""

    records: int = 0
    with_map: int = 0
    without_map: int = 0
    decoded: int = 0
    encoding: Encoding | None = None

    def add(self, has_map: bool) -> None:
        self.with_map += has_map
        self.without_map += not has_map


def _check_npz(path: Path, deep: bool, problems: list[Problem]) -> _Tally:
    """Check one npz file: its keys, or with ``deep`` its content."""
    tally = _Tally(records=1)
    if deep:
        tally.decoded = 1
        try:
            record = read_npz(path)
        except ClickMeFormatError as err:
            problems.append(_problem(err))
            return tally
        tally.add(record.has_map)
        tally.encoding = record.encoding
        return tally
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        problems.append(Problem("error", path, f"unreadable .npz ({err})"))
        return tally
    missing = [key for key in REQUIRED_KEYS if key not in keys]
    if missing:
        problems.append(Problem("error", path, f"no {missing} in the .npz (found {sorted(keys)})"))
        return tally
    tally.add(MAP_KEY in keys)
    tally.encoding = "npz"
    return tally


def _check_tfrecord(path: Path, deep: bool, problems: list[Problem]) -> _Tally:
    """Check one TFRecord file; the records are counted up to the first truncated or corrupt one.

    Without ``deep``: the headers (:func:`scan_tfrecord`), every record's feature names
    (:func:`example_keys`; one error for the file's unreadable records) and the first record decoded; with
    it, every record read (:func:`iter_tfrecord`) and decoded.
    """
    tally = _Tally()
    if deep:
        try:
            for k, data in enumerate(iter_tfrecord(path)):
                tally.records = tally.decoded = k + 1
                record = _decode_or_report(data, f"{path}: record {k}", problems)
                if record is not None:
                    tally.add(record.has_map)
                    tally.encoding = record.encoding if k == 0 else tally.encoding
        except TFRecordError as err:
            problems.append(_framing_problem(err))
        return tally
    offsets, error = scan_tfrecord(path)
    if error is not None:
        problems.append(_framing_problem(error))
    tally.records = len(offsets)
    unreadable: list[tuple[int, str]] = []
    with path.open("rb") as f:
        for k, offset in enumerate(offsets):
            try:
                keys = example_keys(f, offset)
            except ValueError as err:
                unreadable.append((k, f"record {k}: not a tf.train.Example ({err})"))
                continue
            missing = [key for key in REQUIRED_KEYS if key not in keys]
            if missing:
                unreadable.append((k, f"record {k}: missing features {missing} (found {sorted(keys)})"))
            else:
                tally.add(MAP_KEY in keys)
    if unreadable:
        more = f"; {len(unreadable)} unreadable records in the file" if len(unreadable) > 1 else ""
        problems.append(Problem("error", path, unreadable[0][1] + more))
    if offsets and (not unreadable or unreadable[0][0] > 0):
        tally.decoded = 1
        try:
            record = _decode_or_report(read_tfrecord(path, offsets[0], 0), f"{path}: record 0", problems)
        except TFRecordError as err:
            problems.append(_framing_problem(err))
        else:
            tally.encoding = None if record is None else record.encoding
    return tally


def _framing_problem(err: TFRecordError) -> Problem:
    return Problem(
        "error", err.path, f"record {err.record}: {err.problem} (intact records before it: {err.record})"
    )


def _decode_or_report(data: bytes, where: str, problems: list[Problem]) -> ClickMeRecord | None:
    try:
        return decode_example(data, where)
    except ClickMeFormatError as err:
        problems.append(_problem(err))
        return None
