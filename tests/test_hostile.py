"""Hostile input: every user mistake is one line and exit 2, never a traceback or a lost file.

Each case runs the command line the way a user would, and checks the exit status, that stderr
is one ``error:`` line naming the thing, and that no file was written or changed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import onnx
import pytest
from conftest import DIGIT_7, DIGITNET, ROOT
from helpers import conv_relu_pool_model, run, save_with_external_data
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxdeconv import InputError, load_model, prepare
from onnxdeconv.cli import parse
from onnxdeconv.errors import ModelLoadError, OnnxDeconvError
from onnxdeconv.files import atomic_path
from onnxdeconv.image_size import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_VARIABLE, read_header
from onnxdeconv.inputs import Preprocessing, load_input, read_image, read_images, read_npy
from onnxdeconv.runtime import ForwardRunner, create_session
from onnxdeconv.runtime.sessions import refusal


def one_line_error(code: int, err: str, pattern: str) -> None:
    """Exit 2, and stderr ends with the one ``error:`` line, matching ``pattern``; no traceback.

    The lines before it are what the command said while it worked (``running on ...``).
    """
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors == lines[-1:], err
    assert re.search(pattern, lines[-1]), lines[-1]


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden temporaries too) and its content's digest."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refused(
    args: list[object], pattern: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run the CLI; it must refuse in one line and leave ``folder`` exactly as it was."""
    before = digests(folder)
    code, _, err = run([str(a) for a in args], capsys)
    one_line_error(code, err, pattern)
    assert digests(folder) == before


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` RGB pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a copy of the digit model and image, as the current directory."""
    shutil.copy(DIGITNET, tmp_path / "m.onnx")
    shutil.copy(DIGIT_7, tmp_path / "cat.png")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 1, 28, 28), np.float32))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- 1. no output may name an input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["project", "m.onnx", "x.npy", "-o", "x.npy"], r"'x\.npy' is the input INPUT"),
        (["project", "m.onnx", "cat.png", "-o", "cat.png"], r"'cat\.png' is the input INPUT"),
        (["project", "m.onnx", "cat.png", "-o", "./link.png"], r"is the input INPUT 'cat\.png'"),
        (["export", "m.onnx", "--layer", "relu2", "-o", "m.onnx"], r"is the input MODEL"),
        (["sanity", "m.onnx", "cat.png", "--json", "cat.png"], r"--json.*the input IMAGE"),
        (
            ["check", "m.onnx", "--images", "imgs", "--junit", "imgs/a.png"],
            r"--junit.*a file in the input folder --images",
        ),
        (
            ["occlusion", "m.onnx", "cat.png", "--json", "m.onnx"],
            r"--json.*'m\.onnx' is the input MODEL",
        ),
        (["features", "m.onnx", "imgs", "--state", "m.onnx"], r"--state.*the input MODEL"),
        (["check", "m.onnx", "--json", "m.onnx"], r"the input MODEL"),
        (["check", "m.onnx", "--json", "r.xml", "--junit", "r.xml"], r"also the --junit output"),
        (["filters", "m.onnx", "--images", "imgs", "-o", "imgs/a.png"], r"input folder --images"),
    ],
)
def test_no_output_names_an_input(
    args: list[str], pattern: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "link.png").symlink_to(work / "cat.png")
    (work / "imgs").mkdir()
    shutil.copy(DIGIT_7, work / "imgs" / "a.png")
    refused(args, pattern, work, capsys)


def test_a_hard_link_to_an_input_is_that_input(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.link(work / "cat.png", work / "same.png")
    refused(["project", "m.onnx", "cat.png", "-o", "same.png"], r"the input INPUT", work, capsys)


def test_outputs_beside_the_inputs_are_fine(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["project", "m.onnx", "x.npy", "-o", "y.npy"], capsys)
    assert code == 0, err
    assert (work / "y.npy").is_file()


# --- 2. images: a pixel budget, decoded once, odd depths and channels --------------------------


def test_a_png_declaring_40000_squared_is_refused_from_its_header(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = png_declaring(40000, 40000)
    assert len(bomb) < 200
    (work / "bomb.png").write_bytes(bomb)
    pattern = rf"40000x40000 .* pixel budget of {DEFAULT_MAX_IMAGE_PIXELS}.*{MAX_PIXELS_VARIABLE}="
    refused(["project", "m.onnx", "bomb.png"], pattern, work, capsys)


def test_the_pixel_budget_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InputError, match=r"40x30 = 1200 pixels, over the pixel budget of 1199"):
        read_image(tmp_path / "a.png", max_pixels=1199)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    with pytest.raises(InputError, match="budget of 1000"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(InputError, match=f"{MAX_PIXELS_VARIABLE}='lots' is not a positive"):
        read_image(tmp_path / "a.png")


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "L", {}),
        ("PNG", "I;16", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {"progressive": True}),
        ("BMP", "RGB", {}),
        ("WEBP", "RGB", {}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("TIFF", "RGB", {}),
        ("TIFF", "F", {}),
    ],
)
def test_headers_give_the_size_pillow_reads(fmt: str, mode: str, options: dict[str, bool]) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (37, 23)).save(buffer, fmt, **options)
    header = read_header(buffer.getvalue())
    assert header is not None
    assert (header.width, header.height) == Image.open(buffer).size
    assert header.alpha == ("A" in mode)


def test_a_cut_short_header_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(png_declaring(10, 10)[:20])
    with pytest.raises(InputError, match=r"'.*cut\.png' has a cut-short or malformed PNG header"):
        read_image(tmp_path / "cut.png")


def test_images_are_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.jpg")
    calls = []
    decode = cv2.imdecode

    def counted(data: np.ndarray, flags: int) -> np.ndarray:
        calls.append(flags)
        return decode(data, flags)

    monkeypatch.setattr(cv2, "imdecode", counted)
    read_image(tmp_path / "a.png")
    read_image(tmp_path / "b.jpg")
    assert len(calls) == 2


def test_read_images_holds_the_batch_once(tmp_path: Path) -> None:
    for index in range(3):
        Image.fromarray(np.full((28, 28), index * 50, np.uint8)).save(tmp_path / f"{index}.png")
    loaded = load_model(DIGITNET)
    files = sorted(tmp_path.glob("*.png"))
    found = read_images(files, loaded, Preprocessing(), (1, 28, 28), tmp_path)
    for row, model_input in enumerate(found.inputs):
        assert np.shares_memory(model_input.array, found.batch)
        np.testing.assert_array_equal(model_input.array[0], found.batch[row])


def test_float_and_16_bit_images_are_converted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    unit = rng.random((6, 7, 3), np.float32)
    cv2.imwrite(str(tmp_path / "f.tif"), unit)  # BGR on disk
    np.testing.assert_array_equal(
        read_image(tmp_path / "f.tif"), np.rint(unit[..., ::-1] * 255).astype(np.uint8)
    )
    gray = rng.random((6, 7), np.float32)
    cv2.imwrite(str(tmp_path / "g.tif"), gray)
    expected = np.rint(gray * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif"), np.stack([expected] * 3, -1))
    deep = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(
        read_image(tmp_path / "d.png"), np.rint(deep[..., ::-1] / 257).astype(np.uint8)
    )


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (np.full((6, 7), 7.5, np.float32), r"float pixels from 7\.5 to 7\.5; .* in 0\.\.1"),
        (np.full((6, 7), np.nan, np.float32), r"float pixels from nan"),
        (np.full((6, 7), -3, np.int16), r"int16 pixels, which have no 8-bit picture"),
    ],
)
def test_pixels_without_an_8_bit_picture_are_one_line(
    values: np.ndarray, pattern: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2.imwrite(str(work / "odd.tif"), values)
    refused(["project", "m.onnx", "odd.tif", "-o", "p.png"], pattern, work, capsys)


# --- 3. tensors and preprocessing that give no projection --------------------------------------


def npy_with_header(shape: str, body: bytes) -> bytes:
    """A .npy file whose header declares ``shape``, followed by ``body``."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 1, 28, 28), np.float32))
    return buffer.getvalue().replace(b"(1, 1, 28, 28)", shape.encode())[:128] + body


@pytest.mark.parametrize(
    ("write", "pattern"),
    [
        (
            lambda p: p.write_bytes(npy_with_header("(99999, 99999, 99999)", b"\0" * 64)),
            r"header declares shape \[99999, 99999, 99999\] .* but the file holds 64",
        ),
        (lambda p: np.savez(open(p, "wb"), a=np.zeros(3)), r"an \.npz archive"),  # noqa: SIM115
        (
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            r"holds Python objects",
        ),
        (lambda p: p.write_bytes(b"\x93NUMPY\x01"), r"not a readable \.npy array"),
        (lambda p: np.save(p, np.zeros((1, 1, 28, 28), np.float64)), r"float64.*float32"),
        (
            lambda p: np.save(p, np.full((1, 1, 28, 28), np.inf, np.float32)),
            r"holds NaN or infinite values",
        ),
    ],
)
def test_bad_arrays_are_one_line(
    write: object, pattern: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(work / "bad.npy")  # type: ignore[operator]
    refused(["project", "m.onnx", "bad.npy", "-o", "p.npy"], pattern, work, capsys)


def test_read_npy_keeps_good_arrays(tmp_path: Path) -> None:
    values = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "f.npy", values)
    read = read_npy(tmp_path / "f.npy")
    np.testing.assert_array_equal(read, values)
    assert read.flags.c_contiguous


@pytest.mark.parametrize(
    ("option", "pattern"),
    [
        (["--std", "0"], r"std \[0\.0\] holds 0"),
        (["--scale", "nan"], r"scale \[nan\] is not a finite number"),
        (["--mean", "inf"], r"mean \[inf\] is not a finite number"),
        (["--scale", "0"], r"scale \[0\.0\] holds 0"),
    ],
)
def test_preprocessing_that_gives_no_finite_input_is_refused(
    option: list[str], pattern: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused(["project", "m.onnx", "cat.png", "-o", "p.png", *option], pattern, work, capsys)


def test_non_finite_projections_are_refused_not_written(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_relu_pool_model()
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[0, 0, 0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w"))
    onnx.save(model, work / "nan.onnx")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(work / "s.png")
    args = ["project", "nan.onnx", "s.png", "--layer", "relu", "--preset", "raw", "-o", "p.npy"]
    refused(args, r"projections from layer relu hold NaN or infinite", work, capsys)


# --- 4. sizes and counts are refused or cut before anything is allocated -----------------------


@pytest.mark.parametrize(
    ("size", "pattern"),
    [
        ("0,0", r"input size 0,0 has a side under 1.*--size"),
        ("100000,100000", r"10000000000 pixels, over the pixel budget"),
        ("-3,4", r"expected H,W such as 224,224"),
    ],
)
def test_input_sizes_out_of_range(
    size: str, pattern: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused(["project", "m.onnx", "cat.png", "--size", size], pattern, work, capsys)


def test_channel_ranges_stop_past_any_layer() -> None:
    chosen = parse.channel_ranges("0-999999999,5000000")
    assert chosen is not None
    assert len(chosen) == parse.RANGE_LIMIT + 1
    assert chosen[-1] == 5000000  # a single channel stays as given
    assert parse.channel_ranges("3-3") == [3]


def test_per_channel_is_at_most_the_image_count(tmp_path: Path) -> None:
    from onnxdeconv.engines import mine_features

    prepared = prepare(load_model(DIGITNET))
    result = mine_features(
        prepared, [DIGIT_7], layers=["relu2"], channels=[0], per_channel=100_000_000
    )
    assert result.state.k == 1


# --- 5, 6. models ONNX Runtime refuses, external data out of bounds ----------------------------


def test_a_model_onnx_runtime_refuses_is_one_line_naming_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_relu_pool_model()
    model.opset_import[0].version = 30
    onnx.save(model, work / "op30.onnx")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(work / "s.png")
    pattern = r"ONNX Runtime .* cannot run 'op30\.onnx': .*[Oo]pset 30"
    refused(["project", "op30.onnx", "s.png", "--preset", "raw"], pattern, work, capsys)
    assert "onnxruntime_src" not in capsys.readouterr().err


def test_create_session_wraps_the_refusal() -> None:
    model = conv_relu_pool_model()
    model.opset_import[0].version = 30
    with pytest.raises(OnnxDeconvError, match=r"cannot run the net: (?!\[ONNXRuntimeError)"):
        create_session(model, "cpu", name="the net")
    plain = "[ONNXRuntimeError] : 1 : FAIL : /src/a.h:46 void f(const int&, bool) Opset 30 is new."
    assert refusal(RuntimeError(plain)) == "Opset 30 is new."


def external_model(folder: Path, **entries: str) -> Path:
    """The small model with its weights in ``w.bin``; ``entries`` overwrite fc's data entries."""
    folder.mkdir()
    path = folder / "m.onnx"
    save_with_external_data(conv_relu_pool_model(), path, "w.bin")
    model = onnx.load(path, load_external_data=False)
    fc = next(t for t in model.graph.initializer if t.name == "fc")
    for entry in fc.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("entries", "pattern"),
    [
        ({"offset": str(10**9)}, r"tensor 'fc' reads .* at offset 1000000000 of 'w\.bin'"),
        ({"length": str(10**9)}, r"tensor 'fc' reads 1000000000 bytes"),
        ({"length": "16"}, r"needs 5120 bytes but its external data .* holds 16"),
        ({"location": "w.bin\x00.txt"}, r"which is no file name"),
        ({"location": "../w.bin"}, r"outside the model's folder"),
        ({"offset": "-5"}, r"malformed external data entry|offset -5"),
    ],
)
def test_external_data_out_of_bounds(
    entries: dict[str, str], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = external_model(tmp_path / "model", **entries)
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(path)
    refused(["layers", path], pattern, tmp_path, capsys)


def test_external_data_in_bounds_loads(tmp_path: Path) -> None:
    path = external_model(tmp_path / "model")
    loaded = load_model(path)
    assert loaded.constants()["fc"].shape == (5, 4 * 8 * 8)


# --- 7. $ in names reaches figures as text -----------------------------------------------------


def test_mathtext_in_names_renders_as_written(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(work / "m.onnx", work / "$\\frac{$.onnx")
    shutil.copy(work / "cat.png", work / "a$x^$.png")
    code, _, err = run(["project", "$\\frac{$.onnx", "a$x^$.png", "-o", "p.png"], capsys)
    assert code == 0, err
    assert cv2.imread(str(work / "p.png")) is not None


def test_figures_keep_mathtext_off_for_their_texts() -> None:
    from onnxdeconv.render.picture import Panel, projection_figure

    figure = projection_figure([Panel(np.zeros((4, 4), np.uint8), "$x^$")], title="$\\frac{$")
    texts = [t for t in figure.findobj(matplotlib.text.Text) if "$" in t.get_text()]
    assert len(texts) == 2
    assert not any(t.get_parse_math() for t in texts)
    figure.canvas.draw()  # would raise on "$x^$" parsed as TeX
    assert matplotlib.rcParams["text.parse_math"]  # the user's setting is left as it was


# --- 8. a full disk or a read-only folder on any writer ----------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_is_one_line_and_leaves_no_temporary(
    code: int, work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object, **__: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", full)
    for args, name in [
        (["project", "m.onnx", "cat.png", "-o", "p.png"], "p.png"),
        (["project", "m.onnx", "x.npy", "-o", "p.npy"], "p.npy"),
        (["export", "m.onnx", "--layer", "relu2", "-o", "e.onnx"], "e.onnx"),
        (["check", "m.onnx", "--json", "c.json"], "c.json"),
    ]:
        refused(args, rf"cannot write '{re.escape(name)}': {os.strerror(code)}", work, capsys)


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    full = pytest.raises(OnnxDeconvError, match=r"cannot write '.*a\.txt': No space left")
    with full, atomic_path(target) as temp:
        temp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# --- 9. Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_exit_130(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    # Every projection (whole inputs or crops) goes through project_crops.
    monkeypatch.setattr("onnxdeconv.projector.Projector.project_crops", interrupt)
    before = digests(work)
    code, _, err = run(["project", "m.onnx", "cat.png", "-o", "p.png"], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in err
    assert digests(work) == before


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_of_a_real_process_at_any_moment(work: Path) -> None:
    """SIGINT while the CLI loads, parses, loads the model or runs: 130 and one line."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "onnxdeconv", "project", "m.onnx", "cat.png", "-o", "p.png"]

    def interrupted(process: subprocess.Popen[str], during: str) -> None:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        if process.returncode == 0:  # it was done before the signal came
            return
        if process.returncode == -signal.SIGINT or "init_import_site" in err:
            return  # the interpreter itself was still starting: no onnxdeconv code ran yet
        assert "Traceback" not in err, (during, err)
        assert process.returncode == 130, (during, err)
        assert err.strip().splitlines()[-1] == "error: interrupted", (during, err)
        assert not (work / "p.png").exists()
        assert not list(work.glob(".p.*"))

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, text=True
        )

    for delay in (0.3, 0.8, 1.5):  # somewhere in start-up, model loading or the run
        process = start()
        time.sleep(delay)
        interrupted(process, f"after {delay} s")
    process = start()  # certainly in the run: after its first line
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith("preprocessing:"), first
    interrupted(process, "in the run")


# --- 10. a layer that is also a model output ---------------------------------------------------


def model_with_relu_output() -> onnx.ModelProto:
    model = conv_relu_pool_model()
    output = helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", 4, 16, 16])
    model.graph.output.append(output)
    return model


def test_a_layer_that_is_a_model_output_is_one_session_output() -> None:
    prepared = prepare(load_model(model_with_relu_output()))
    images = np.random.default_rng(0).random((2, 3, 16, 16), np.float32)
    for keep_outputs in (True, False):
        runner = ForwardRunner(prepared, ["relu", "relu", "logits"], keep_outputs=keep_outputs)
        names = [output.name for output in runner.model.graph.output]
        assert len(names) == len(set(names)), names
        values = runner.run(images, ["relu", "relu", "logits"])
        assert set(values) == {"relu", "logits"}


@pytest.mark.parametrize("command", ["occlusion", "report"])
def test_occlusion_and_report_on_a_layer_that_is_a_model_output(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx.save(model_with_relu_output(), tmp_path / "m.onnx")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(images / "a.png")
    if command == "occlusion":
        args = ["occlusion", tmp_path / "m.onnx", images / "a.png", "--layer", "relu"]
        args += ["-o", tmp_path / "o.png"]
    else:
        args = ["report", tmp_path / "m.onnx", "--images", images, "--layers", "relu"]
        args += ["-o", tmp_path / "report"]
    code, _, err = run([str(a) for a in [*args, "--preset", "raw"]], capsys)
    assert code == 0, err
    assert "Traceback" not in err


def test_load_input_refuses_a_size_under_one() -> None:
    with pytest.raises(InputError, match="side under 1"):
        load_input(DIGIT_7, load_model(DIGITNET), Preprocessing(), (0, 5))
