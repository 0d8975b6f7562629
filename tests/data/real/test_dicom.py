"""Tests for attnlib.data.real.dicom on pydicom's offline test files and tiny hand-made DICOMs."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from attnlib.data.cache import ArrayCache
from attnlib.data.real.dicom import DicomReadError, dicom_metadata, read_dicom, read_dicom_cached

CR_MONOCHROME1 = "dicomdirtests/77654033/CR1/6154"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def pydicom_file(name: str) -> Path:
    """A file shipped with pydicom; never touches the network."""
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return Path(found)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    **elements: object,
) -> Path:
    """A minimal CR file (explicit VR little endian) holding ``pixels`` (uint16; None = no pixel data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if pixels is None:
        ds.Rows, ds.Columns = 4, 4
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
    else:
        ds.set_pixel_data(np.asarray(pixels, dtype=np.uint16), photometric, bits_stored)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def linear_window(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window function, written out independently."""
    x = np.asarray(x, dtype=np.float64)
    low = x <= center - 0.5 - (width - 1) / 2
    high = x > center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
    return np.where(low, y_min, np.where(high, y_max, inside))


def min_max(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


GRID = np.arange(16, dtype=np.uint16).reshape(4, 4)


# --- pydicom's own files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_compressed_equals_uncompressed(name: str) -> None:
    reference = read_dicom(pydicom_file("MR_small.dcm"), scale=None)
    np.testing.assert_array_equal(read_dicom(pydicom_file(name), scale=None), reference)
    np.testing.assert_array_equal(
        read_dicom(pydicom_file(name), scale=0.5), read_dicom(pydicom_file("MR_small.dcm"), scale=0.5)
    )


def test_mr_small_matches_independent_windowing() -> None:
    path = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    bits = int(ds.BitsStored)
    y_min, y_max = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    expected = min_max(linear_window(raw, float(ds.WindowCenter), float(ds.WindowWidth), y_min, y_max))
    out = read_dicom(path, scale=None)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (64, 64)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, scale=None, voi=False), min_max(raw), atol=1e-6)


def test_monochrome1_cr_reads_bright_dense() -> None:
    path = pydicom_file(CR_MONOCHROME1)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    hu = ds.pixel_array.astype(np.float64) * slope + intercept
    y_min, y_max = intercept, (2 ** int(ds.BitsStored) - 1) * slope + intercept
    windowed = linear_window(hu, float(ds.WindowCenter), float(ds.WindowWidth), y_min, y_max)
    out = read_dicom(path, scale=None)
    assert out.shape == (16, 16)
    np.testing.assert_allclose(out, 1.0 - min_max(windowed), atol=1e-6)


def test_jpeg2000_lossy_decodes_and_halves() -> None:
    out = read_dicom(pydicom_file("JPEG2000.dcm"))
    assert out.shape == (512, 128) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0


def test_truncated_pixel_data_raises_naming_file() -> None:
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(DicomReadError, match="pixel data could not be decoded") as info:
        read_dicom(path)
    assert str(info.value).startswith(str(path)) and "MR_truncated.dcm" in str(info.value)
    assert "Explicit VR Little Endian" in str(info.value)
    assert info.value.__cause__ is not None


def test_transfer_syntax_without_plugin_raises() -> None:
    path = pydicom_file("JPEGLSNearLossless_16.dcm")
    try:
        pydicom.dcmread(path).pixel_array
    except Exception:
        pass
    else:
        pytest.skip("a JPEG-LS decoder plugin is installed here")
    expected = r"JPEGLSNearLossless_16\.dcm: pixel data could not be decoded \(JPEG-LS"
    with pytest.raises(DicomReadError, match=expected):
        read_dicom(path)


def test_colour_image_rejected() -> None:
    with pytest.raises(DicomReadError, match=r"SC_rgb_rle\.dcm: photometric interpretation 'RGB'"):
        read_dicom(pydicom_file("SC_rgb_rle.dcm"))


# --- hand-made files -------------------------------------------------------------------------


def test_monochrome1_inversion_hand_computed(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m1.dcm", np.array([[0, 100], [200, 400]]), "MONOCHROME1")
    np.testing.assert_allclose(read_dicom(path, scale=None), [[1.0, 0.75], [0.5, 0.0]], atol=1e-7)


def test_windowing_hand_computed(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w.dcm", GRID, WindowCenter=8, WindowWidth=9)
    # Pixels <= 3 map to the bottom of the output range, >= 12 to the top; 4..11 lie on the ramp.
    expected = np.clip((GRID - 3.5) / 8, 0, 1)
    np.testing.assert_allclose(read_dicom(path, scale=None), expected, atol=1e-6)
    np.testing.assert_allclose(
        read_dicom(path, scale=None), min_max(linear_window(GRID, 8, 9, 0, 2**16 - 1)), atol=1e-6
    )
    np.testing.assert_allclose(read_dicom(path, scale=None, voi=False), GRID / 15, atol=1e-7)


def test_monochrome1_windowed_is_inverted_once(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w1.dcm", GRID, "MONOCHROME1", WindowCenter=8, WindowWidth=9)
    np.testing.assert_allclose(read_dicom(path, scale=None), 1 - np.clip((GRID - 3.5) / 8, 0, 1), atol=1e-6)


def test_presentation_lut_shape_inverse_on_monochrome2_is_logged_not_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_dicom(tmp_path / "p.dcm", GRID, PresentationLUTShape="INVERSE")
    with caplog.at_level(logging.WARNING, logger="attnlib.data.real.dicom"):
        out = read_dicom(path, scale=None, voi=False)
    np.testing.assert_allclose(out, GRID / 15, atol=1e-7)
    assert "Presentation LUT Shape INVERSE" in caplog.text and "p.dcm" in caplog.text


def test_rescale_then_window_hand_computed(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "rw.dcm", GRID, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100,
        WindowCenter=-85, WindowWidth=11,
    )
    hu = GRID * 2.0 - 100
    expected = min_max(linear_window(hu, -85, 11, -100, 4095 * 2 - 100))
    np.testing.assert_allclose(read_dicom(path, scale=None), expected, atol=1e-6)


def test_voi_lut_sequence_applied_to_rescaled_values(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 2, 8])  # 4 entries, first mapped value 2, 8-bit entries
    item.add_new("LUTData", "US", [10, 20, 40, 80])
    path = write_dicom(
        tmp_path / "lut.dcm", np.array([[0, 1, 2], [3, 4, 9]]), RescaleSlope=1, RescaleIntercept=0,
        VOILUTSequence=[item],
    )
    # 0, 1 -> first entry (below first_map); 2..5 -> entries 0..3; 9 -> last entry.
    expected = min_max(np.array([[10, 10, 10], [20, 40, 80]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_dicom(path, scale=None)
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_area_resize_4x4_to_2x2_is_block_means(tmp_path: Path) -> None:
    pixels = np.array([[0, 2, 9, 7], [4, 6, 1, 3], [8, 8, 0, 0], [0, 4, 2, 2]])
    # 2x2 block means are [[3, 5], [5, 1]]; min-max gives (m - 1) / 4.
    expected = np.array([[0.5, 1.0], [1.0, 0.0]])
    path = write_dicom(tmp_path / "g.dcm", pixels)
    np.testing.assert_allclose(read_dicom(path, scale=0.5, voi=False), expected, atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, size=(2, 2), voi=False), expected, atol=1e-6)


def test_area_resize_integer_factor_matches_block_means(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 4096, size=(12, 8))
    path = write_dicom(tmp_path / "r.dcm", pixels)
    blocks = pixels.reshape(3, 4, 2, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(read_dicom(path, size=(3, 2), voi=False), min_max(blocks), atol=1e-6)


@pytest.mark.parametrize(
    ("scale", "size", "shape"),
    [(0.5, None, (3, 4)), (None, None, (5, 7)), (1.0, None, (5, 7)), (0.2, None, (1, 1)),
     (0.5, (2, 6), (2, 6)), (None, (10, 3), (10, 3))],
)
def test_output_shapes(
    tmp_path: Path, scale: float | None, size: tuple[int, int] | None, shape: tuple[int, int]
) -> None:
    path = write_dicom(tmp_path / "s.dcm", np.arange(35).reshape(5, 7))
    out = read_dicom(path, scale=scale, size=size)
    assert out.shape == shape and out.dtype == np.float32 and out.flags.c_contiguous


def test_constant_image_gives_zeros(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "c.dcm", np.full((4, 4), 7))
    np.testing.assert_array_equal(read_dicom(path), np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"scale": 0}, "scale"), ({"scale": 1.5}, "scale"), ({"scale": -0.5}, "scale"),
     ({"scale": True}, "scale"),
     ({"size": (0, 4)}, "size"), ({"size": (4,)}, "size"), ({"size": (2.5, 4)}, "size")],
)
def test_invalid_resize_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    path = write_dicom(tmp_path / "g.dcm", GRID)
    with pytest.raises(ValueError, match=message):
        read_dicom(path, **kwargs)  # type: ignore[arg-type]


def test_multi_frame_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mf.dcm", np.zeros((2, 4, 4)))
    with pytest.raises(DicomReadError, match=r"mf\.dcm: multi-frame DICOM \(2 frames\) is not supported"):
        read_dicom(path)


def test_not_dicom_raises_with_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not a DICOM file\n")
    with pytest.raises(DicomReadError, match="not a DICOM file") as info:
        read_dicom(path)
    assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        dicom_metadata(path)


def test_missing_file_raises_with_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.dcm"
    with pytest.raises(DicomReadError, match=r"absent\.dcm: could not be opened"):
        read_dicom(path)
    with pytest.raises(DicomReadError, match=r"absent\.dcm: no such file"):
        read_dicom_cached(path, ArrayCache(tmp_path / "cache"))


def test_no_pixel_data_raises_with_path(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(DicomReadError, match=r"empty\.dcm: no pixel data"):
        read_dicom(path)


# --- metadata and cached reads ---------------------------------------------------------------


def test_metadata_of_monochrome1_cr() -> None:
    meta = dicom_metadata(pydicom_file(CR_MONOCHROME1))
    assert meta["Rows"] == 16 and meta["Columns"] == 16 and meta["BitsStored"] == 12
    assert meta["PhotometricInterpretation"] == "MONOCHROME1" and meta["Modality"] == "CR"
    assert meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert meta["TransferSyntaxName"] == "Explicit VR Little Endian"
    assert meta["RescaleSlope"] == pytest.approx(0.684) and meta["WindowCenter"] == 1600.0
    assert meta["has_window"] is True and meta["has_modality_lut"] is True and meta["has_voi_lut"] is False
    json.dumps(meta)  # plain Python values only


def test_metadata_never_decodes_pixels() -> None:
    meta = dicom_metadata(pydicom_file("MR_truncated.dcm"))
    assert meta["Rows"] == 64 and meta["has_window"] is True
    compressed = dicom_metadata(pydicom_file("MR_small_jp2klossless.dcm"))
    assert compressed["TransferSyntaxName"] == "JPEG 2000 Image Compression (Lossless Only)"


def test_read_dicom_cached_hits_and_matches(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path / "cache")
    path = pydicom_file("CT_small.dcm")
    first = read_dicom_cached(path, cache)
    again = read_dicom_cached(path, cache, scale=0.5, size=None, voi=True)  # the defaults, spelled out
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, read_dicom(path))
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.float32
    assert read_dicom_cached(path, cache, size=(16, 16)).shape == (16, 16)
    assert cache.misses == 2
    np.testing.assert_array_equal(read_dicom_cached(path, None), first)


def test_read_dicom_cached_does_not_store_failures(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(DicomReadError, match="MR_truncated"):
            read_dicom_cached(pydicom_file("MR_truncated.dcm"), cache)
    assert cache.misses == 2 and not list((tmp_path / "cache").rglob("*.npy"))
