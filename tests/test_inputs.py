from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from onnxdeconv import InputError, load_model
from onnxdeconv.inputs import PRESETS, Preprocessing, fit_image, load_input, normalise, read_image


def test_presets_by_hand() -> None:
    rgb = np.array([[[255, 0, 51]]], np.uint8)  # one pixel, R=255 G=0 B=51
    imagenet = normalise(rgb, PRESETS["imagenet"], "NCHW", 3, np.dtype(np.float32))
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(imagenet[0, :, 0, 0], expected, rtol=1e-6)
    caffe = normalise(rgb, PRESETS["caffe"], "NCHW", 3, np.dtype(np.float16))
    assert caffe.dtype == np.float16
    np.testing.assert_allclose(caffe[0, :, 0, 0], [51 - 104, 0 - 117, 255 - 123])  # B, G, R
    tf = normalise(rgb, PRESETS["tf"], "NHWC", 3, np.dtype(np.float32))
    np.testing.assert_allclose(tf[0, 0, 0], [1.0, -1.0, 51 / 127.5 - 1], rtol=1e-6)
    raw = normalise(rgb, PRESETS["raw"], "NCHW", 3, np.dtype(np.float32))
    np.testing.assert_allclose(raw[0, :, 0, 0], [255, 0, 51])


def test_gray_model_gets_luma() -> None:
    rgb = np.full((2, 2, 3), 200, np.uint8)
    gray = normalise(rgb, Preprocessing(1 / 255, (0.5,), (0.5,)), "NCHW", 1, np.dtype(np.float32))
    assert gray.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(gray, (200 / 255 - 0.5) / 0.5, rtol=1e-5)


def test_exif_rotation_is_honoured(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    image = read_image(tmp_path / "rotated.jpg")
    assert image.shape == (40, 20, 3)
    assert image[:10].mean() > 200  # the white band is now on top


def test_rgba_is_composited_on_white_and_gray_expanded(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[3, 0].tolist() == [255, 255, 255]
    Image.fromarray(np.full((3, 5), 7, np.uint8)).save(tmp_path / "g.webp", lossless=True)
    Image.fromarray(np.full((3, 5, 3), 9, np.uint8)).save(tmp_path / "c.bmp")
    assert read_image(tmp_path / "g.webp").shape == (3, 5, 3)
    assert read_image(tmp_path / "c.bmp")[0, 0].tolist() == [9, 9, 9]


def test_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_fit_image_keeps_aspect_and_centre() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 90:110] = 255  # a bar in the middle survives the centre crop
    fitted = fit_image(image, (50, 50))
    assert fitted.shape == (50, 50, 3)
    assert fitted[:, 25].min() == 255
    assert fitted[:, 0].max() == 0


def test_npy_is_fed_as_is(tmp_path: Path) -> None:
    from conftest import DIGITNET

    loaded = load_model(DIGITNET)
    array = np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    model_input = load_input(tmp_path / "x.npy", loaded, PRESETS["imagenet"])
    assert np.array_equal(model_input.array, array)
    np.save(tmp_path / "nobatch.npy", array[0])
    assert load_input(tmp_path / "nobatch.npy", loaded, PRESETS["raw"]).array.shape == (
        1,
        1,
        28,
        28,
    )
    np.save(tmp_path / "f64.npy", array.astype(np.float64))
    with pytest.raises(InputError, match=r"float64.*astype"):
        load_input(tmp_path / "f64.npy", loaded, PRESETS["raw"])
    np.save(tmp_path / "shape.npy", array[:, :, :10])
    with pytest.raises(InputError, match="shape"):
        load_input(tmp_path / "shape.npy", loaded, PRESETS["raw"])


def test_image_for_digitnet_matches_metadata_preprocessing() -> None:
    from conftest import DIGIT_7, DIGITNET

    from onnxdeconv.inputs import preprocessing_from_metadata

    loaded = load_model(DIGITNET)
    declared = preprocessing_from_metadata(loaded)
    assert declared is not None
    model_input = load_input(DIGIT_7, loaded, declared)
    pixels = cv2.imread(str(DIGIT_7), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    np.testing.assert_allclose(
        model_input.array[0, 0], (pixels / 255 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-6
    )


def test_integer_input_takes_raw_pixels_only() -> None:

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = normalise(rgb, PRESETS["raw"], "NHWC", 3, np.dtype(np.uint8))
    assert raw.dtype == np.uint8 and np.array_equal(raw[0], rgb)
    with pytest.raises(InputError, match="use the raw preset"):
        normalise(rgb, PRESETS["imagenet"], "NHWC", 3, np.dtype(np.uint8))


def test_description_names_the_channel_order_only_where_it_matters() -> None:
    assert PRESETS["caffe"].describe().startswith("BGR, x*1, mean [104.0, 117.0, 123.0]")
    assert PRESETS["imagenet"].describe().startswith("RGB, x*0.00392157")
    gray = Preprocessing(1 / 255, (0.1307,), (0.3081,))
    assert gray.describe() == "x*0.00392157, mean [0.1307], std [0.3081]"


def test_image_files_and_read_images_report_what_they_skip(tmp_path: Path) -> None:
    from conftest import DIGITNET

    from onnxdeconv.inputs import image_files, read_images

    with pytest.raises(InputError, match="does not exist"):
        image_files(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no images"):
        image_files(tmp_path)
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.png"):
        cv2.imwrite(str(tmp_path / name), np.full((20, 20, 3), 128, np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    files = image_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["b.png", "c.jpg", "sub/a.png"]
    assert image_files(tmp_path, limit=1) == files[:1]
    loaded = load_model(DIGITNET)
    found = read_images(files, loaded, PRESETS["raw"], (1, 28, 28), tmp_path)
    assert found.batch.shape == (2, 1, 28, 28) and len(found.inputs) == 2
    assert found.names == ["b.png", str(Path("sub/a.png"))]
    assert [name for name, _ in found.skipped] == ["c.jpg"]
    assert "not a readable image" in found.skipped[0][1]


def test_choose_preprocessing_prefers_preset_then_custom_then_metadata_then_imagenet() -> None:
    from dataclasses import dataclass, field

    from onnxdeconv.inputs import METADATA_KEY, choose_preprocessing

    @dataclass
    class Spec:
        input_name: str = "x"
        input_shape: list[int | str] = field(default_factory=lambda: [1, 3, 8, 8])
        input_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
        metadata: dict[str, str] = field(default_factory=dict)

    declared = Spec(metadata={METADATA_KEY: '{"scale": 0.5, "mean": [1, 2, 3], "bgr": true}'})
    chosen, how = choose_preprocessing(declared)
    assert chosen == Preprocessing(0.5, (1.0, 2.0, 3.0), (1.0,), bgr=True)
    assert how.startswith("from the model's metadata: BGR")
    assert choose_preprocessing(Spec()) == (
        PRESETS["imagenet"],
        f"preset imagenet (default): {PRESETS['imagenet'].describe()}",
    )
    assert choose_preprocessing(declared, preset="caffe")[0] == PRESETS["caffe"]
    custom, how = choose_preprocessing(declared, mean=(10.0,), scale=2.0)
    assert custom == Preprocessing(2.0, (10.0,), (1.0,), bgr=False) and how.startswith("custom")
    assert choose_preprocessing(Spec(), bgr=True)[0] == Preprocessing(1.0, (0.0,), (1.0,), True)
    with pytest.raises(InputError, match="unknown preset 'imagenette'") as raised:
        choose_preprocessing(Spec(), preset="imagenette")
    assert raised.value.parameter == "preprocessing"
