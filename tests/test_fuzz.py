"""Property-based fuzzing of hostile inputs: every command ends with exit 0 or a one-line exit 2.

Hypothesis mutates a small valid model (input dims, attributes, names, opsets, external-data
entries, weights), image bytes, ``.npy`` headers and option values, then runs the CLI in-process.
The contract, for every example:

- the exit status is 0 or 2 (never a traceback, never 1, which ``check`` reserves for findings);
- on 2, stderr ends with exactly one ``error: ...`` line and holds no traceback;
- the inputs are byte for byte what they were, and a failed run leaves no output file behind;
- on 0, a written ``.npy`` holds finite numbers only.

``ONNXDECONV_FUZZ_EXAMPLES`` sets the examples per property (default 25, to keep CI fast).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from helpers import conv_relu_pool_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from onnxdeconv.cli.main import main

EXAMPLES = int(os.environ.get("ONNXDECONV_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SIZE = 16


# ----------------------------------------------------------------------------------------------
# Running the CLI and checking the contract


def run_cli(args: list[str]) -> tuple[int, str]:
    """Run the CLI in-process; return (exit status, stderr). An escaping exception fails."""
    old = sys.argv
    sys.argv = ["onnxdeconv", *args]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    finally:
        sys.argv = old
    return code, err.getvalue()


def digest(folder: Path) -> dict[str, str]:
    """Hash every file under a folder, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh folder per example (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


def assert_contract(args: list[str], inputs: Path, output: Path | None) -> int:
    """Run the CLI and check the contract described in the module docstring."""
    before = digest(inputs)
    code, err = run_cli(args)
    assert code in (0, 2), f"exit {code} for {args}:\n{err}"
    assert "Traceback" not in err, err
    assert digest(inputs) == before, f"an input was changed by {args}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{err}"
        if output is not None:
            assert not output.exists(), f"{output.name} was written by a failed run"
    elif output is not None and output.suffix == ".npy" and output.exists():
        assert np.isfinite(np.load(output)).all(), f"non-finite numbers in {output.name}"
    return code


# ----------------------------------------------------------------------------------------------
# Hostile models


def base_model() -> onnx.ModelProto:
    return conv_relu_pool_model(channels=3, size=SIZE, batch=1)


INTS = st.lists(
    st.sampled_from([-(2**62), -3, -1, 0, 1, 2, 3, 7, 10_000, 2**31]), min_size=0, max_size=5
)
NAMES = st.sampled_from(
    ["", "$x^2$", "a\x00b", "\x1b[31mred", "x", "w", "logits", "<b>&", "a" * 300, "é/../b"]
)


def mutate_dims(model: onnx.ModelProto, value: int | str, index: int) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dim = dims[index % len(dims)]
    if isinstance(value, int):
        dim.dim_value = value
    else:
        dim.dim_param = value


def mutate_attribute(model: onnx.ModelProto, node: int, name: str, ints: list[int]) -> None:
    target = model.graph.node[node % 3]  # conv, relu, pool
    kept = [a for a in target.attribute if a.name != name]
    del target.attribute[:]
    target.attribute.extend([*kept, helper.make_attribute(name, ints)])


def mutate_name(model: onnx.ModelProto, which: int, name: str) -> None:
    tensors = ["x", "conv", "relu", "pool", "w"]
    old = tensors[which % len(tensors)]
    for node in model.graph.node:
        node.input[:] = [name if n == old else n for n in node.input]
        node.output[:] = [name if n == old else n for n in node.output]
        if node.name == old:
            node.name = name
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == old:
            value.name = name
    for init in model.graph.initializer:
        if init.name == old:
            init.name = name


def mutate_external(model: onnx.ModelProto, location: str, offset: int, length: int) -> None:
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    del weight.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = weight.external_data.add()
        entry.key, entry.value = key, str(value)


def mutate_weights(model: onnx.ModelProto, value: float) -> None:
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight.flat[0] = value
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, weight_name(model)))


def weight_name(model: onnx.ModelProto) -> str:
    return model.graph.initializer[0].name


MUTATIONS: st.SearchStrategy[Callable[[onnx.ModelProto], None]] = st.one_of(
    st.builds(
        lambda v, i: lambda m: mutate_dims(m, v, i),
        st.one_of(
            st.sampled_from([0, 1, 2, 3, 5, 100_000, 2**40]), st.sampled_from(["N", "", "$h$"])
        ),
        st.integers(0, 3),
    ),
    st.builds(
        lambda n, a, v: lambda m: mutate_attribute(m, n, a, v),
        st.integers(0, 2),
        st.sampled_from(["kernel_shape", "strides", "pads", "dilations", "group"]),
        INTS,
    ),
    st.builds(lambda w, n: lambda m: mutate_name(m, w, n), st.integers(0, 4), NAMES),
    st.builds(lambda o: lambda m: m.opset_import[0].__setattr__("version", o), st.integers(1, 30)),
    st.builds(lambda v: lambda m: m.__setattr__("ir_version", v), st.integers(1, 14)),
    st.builds(
        lambda loc, off, n: lambda m: mutate_external(m, loc, off, n),
        st.sampled_from(["w.bin", "../w.bin", "/etc/hostname", "a\x00b", "", "missing.bin"]),
        st.sampled_from([0, 4, -1, 10**12]),
        st.sampled_from([0, 432, 433, 10**12, -5]),
    ),
    st.builds(
        lambda v: lambda m: mutate_weights(m, v),
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 3e38]),
    ),
)


def write_model(folder: Path, model: onnx.ModelProto) -> Path:
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    # Real bytes for the external-data mutations that point at a file beside the model.
    (folder / "w.bin").write_bytes(np.ones(108, np.float32).tobytes())
    return path


def write_input(folder: Path) -> Path:
    path = folder / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32))
    return path


@FUZZ
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_models(mutations: list[Callable[[onnx.ModelProto], None]]) -> None:
    model = base_model()
    for mutate in mutations:
        try:
            mutate(model)
        except Exception:  # onnx or protobuf refused the mutation itself
            return  # nothing reaches onnxdeconv
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path, array = write_model(inputs, model), write_input(inputs)
        out = folder / "out"
        assert_contract(["layers", str(model_path)], inputs, None)
        exported = out / "e.onnx"
        assert_contract(["export", str(model_path), "-o", str(exported)], inputs, exported)
        assert_contract(
            ["project", str(model_path), str(array), "-o", str(out / "p.npy")],
            inputs,
            out / "p.npy",
        )


def test_mutated_models_reach_projection() -> None:
    """The fuzzer is not vacuous: the unmutated model projects with exit 0."""
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path, array = write_model(inputs, base_model()), write_input(inputs)
        out = folder / "p.npy"
        assert (
            assert_contract(["project", str(model_path), str(array), "-o", str(out)], inputs, out)
            == 0
        )
        assert out.exists()


# ----------------------------------------------------------------------------------------------
# Hostile image bytes


def png_bytes() -> bytes:
    image = np.random.default_rng(1).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return bytes(encoded)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


IMAGE_BYTES = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda n: png_bytes()[:n], st.integers(0, 200)),
    st.builds(
        lambda i, b: (lambda d: d[:i] + bytes([b]) + d[i + 1 :])(png_bytes()),
        st.integers(0, 120),
        st.integers(0, 255),
    ),
    st.builds(
        png_declaring, st.sampled_from([1, 16, 40_000, 2**31 - 1]), st.sampled_from([1, 16, 40_000])
    ),
)


@FUZZ
@given(data=IMAGE_BYTES, suffix=st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tiff"]))
def test_hostile_image_bytes(data: bytes, suffix: str) -> None:
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path = write_model(inputs, base_model())
        image = inputs / f"img{suffix}"
        image.write_bytes(data)
        out = folder / "p.png"
        assert_contract(
            ["project", str(model_path), str(image), "--preset", "raw", "-o", str(out)], inputs, out
        )


# ----------------------------------------------------------------------------------------------
# Hostile .npy headers


def npy_bytes(header: dict[str, Any] | str, payload: bytes) -> bytes:
    text = header if isinstance(header, str) else repr(header)
    text = text + " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1") + payload


HEADERS = st.one_of(
    st.fixed_dictionaries(
        {
            "descr": st.sampled_from(["<f4", "<f8", "|u1", "<i8", "|O", "<c8", ">f4", "<U3", "V8"]),
            "fortran_order": st.booleans(),
            "shape": st.lists(
                st.sampled_from([-1, 0, 1, 3, SIZE, 2**31, 2**62]), min_size=0, max_size=5
            ).map(tuple),
        }
    ),
    st.sampled_from(["{}", "not a dict", "{'descr': '<f4'}", "__import__('os')", "{" * 100]),
)


@FUZZ
@given(header=HEADERS, payload_size=st.sampled_from([0, 3, 64, 3072]))
def test_hostile_npy_headers(header: dict[str, Any] | str, payload_size: int) -> None:
    payload = b"\x00" * payload_size
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path = write_model(inputs, base_model())
        array = inputs / "x.npy"
        array.write_bytes(npy_bytes(header, payload))
        out = folder / "p.npy"
        assert_contract(["project", str(model_path), str(array), "-o", str(out)], inputs, out)


# ----------------------------------------------------------------------------------------------
# Hostile option values

NUMBERS = st.sampled_from(
    ["0", "-1", "nan", "inf", "-inf", "1e400", "", "1,2", "1,2,3,4", "a", "0x10", "1,,2", "3"]
)
OPTIONS = st.one_of(
    st.tuples(
        st.just("--size"),
        st.sampled_from(
            ["0,0", "-1,16", "16", "16,16", "1e9,1e9", "a,b", "100000,100000", "16,16,16"]
        ),
    ),
    st.tuples(st.sampled_from(["--mean", "--std", "--scale"]), NUMBERS),
    st.tuples(st.just("--top"), st.sampled_from(["0", "-1", "1", "4", "100000000", "x"])),
    st.tuples(st.just("--channel"), st.sampled_from(["-1", "0", "3", "4", "999999999", "x"])),
    st.tuples(
        st.just("--position"), st.sampled_from(["0,0", "-1,0", "7,7", "8,8", "all", "1", "a,b"])
    ),
    st.tuples(
        st.just("--layer"), st.sampled_from(["relu", "conv", "pool", "logits", "nope", "", "$x$"])
    ),
    st.tuples(st.just("--rule"), st.sampled_from(["deconvnet", "guided", "gradient", "x"])),
    st.tuples(st.just("--preset"), st.sampled_from(["raw", "caffe", "tf", "imagenet", "x"])),
)


@FUZZ
@given(options=st.lists(OPTIONS, min_size=1, max_size=3))
def test_hostile_option_values(options: list[tuple[str, str]]) -> None:
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path = write_model(inputs, base_model())
        image = inputs / "img.png"
        image.write_bytes(png_bytes())
        out = folder / "p.png"
        args = ["project", str(model_path), str(image), "-o", str(out)]
        for option, value in options:
            args += [option, value]
        assert_contract(args, inputs, out)


@pytest.mark.parametrize("command", ["layers", "export"])
def test_output_never_names_the_model(command: str) -> None:
    """Also a fixed case of the contract: ``-o`` equal to the model is refused, not overwritten."""
    with workspace() as folder:
        model_path = write_model(folder, base_model())
        args = ["export", str(model_path), "--layer", "relu", "-o", str(model_path)]
        if command == "layers":
            args = ["layers", str(model_path), "--json", str(model_path)]
        code = assert_contract(args, folder, None)
        assert code == 2


def damage_weights(model: onnx.ModelProto) -> None:
    """Cut the conv weight's raw data short: its dims no longer match its bytes."""
    weight = model.graph.initializer[0]
    weight.raw_data = weight.raw_data[:40]


def contradict_batch(model: onnx.ModelProto) -> None:
    """Declare batch 5 on the input and batch 1 on the output."""
    mutate_dims(model, 5, 0)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda m: mutate_attribute(m, 0, "pads", [0, 0, 2**31, 2**31]), "pads"),
        (damage_weights, "initializer 'w'"),
        (contradict_batch, "declared shapes"),
    ],
    ids=["absurd-pads", "damaged-initializer", "contradicting-shapes"],
)
def test_degenerate_models_are_refused_in_one_line(
    damage: Callable[[onnx.ModelProto], None], named: str
) -> None:
    """The fixed cases the fuzzer found: each is one line that names the cause, and exit 2."""
    model = base_model()
    damage(model)
    with workspace() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        model_path, array = write_model(inputs, model), write_input(inputs)
        out = folder / "p.npy"
        args = ["project", str(model_path), str(array), "-o", str(out)]
        assert assert_contract(args, inputs, out) == 2
        assert named in run_cli(args)[1]
