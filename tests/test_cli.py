from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import cv2
import numpy as np
import onnx
import pytest
from conftest import DIGIT_7, DIGITNET, ROOT
from helpers import conv_relu_pool_model, run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector, load_model, prepare
from onnxdeconv.cli import options
from onnxdeconv.cli.main import cli
from onnxdeconv.errors import UnsupportedOpError
from onnxdeconv.inputs import load_input, preprocessing_from_metadata
from onnxdeconv.outputs import OutputPaths


def assert_user_error(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


# --- success paths ------------------------------------------------------------------------


def test_project_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.png"
    code, stdout, err = run(["project", DIGITNET, DIGIT_7, "--top", "4", "-o", out], capsys)
    assert code == 0, err
    assert "running on CPUExecutionProvider" in err
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > picture.shape[0]
    assert stdout.strip() == str(out)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_project_npy_equals_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.npy"
    args = ["project", DIGITNET, DIGIT_7, "--layer", "relu2", "--top", "3", "-o", out]
    assert run(args, capsys)[0] == 0
    projections = np.load(out)
    assert projections.shape == (3, 1, 28, 28) and projections.dtype == np.float32
    projector = Projector(DIGITNET, layer="relu2")
    from onnxdeconv import load_model

    loaded = load_model(DIGITNET)
    declared = preprocessing_from_metadata(loaded)
    assert declared is not None
    forward = projector.forward(load_input(DIGIT_7, loaded, declared).array)
    picks = projector.strongest(forward, top=3)
    assert [p.value for p in picks] == sorted((p.value for p in picks), reverse=True)
    np.testing.assert_array_equal(projections, projector.project(forward, picks))


def test_default_is_one_projection_from_deepest_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.npy"
    code, _, err = run(["project", DIGITNET, DIGIT_7, "-o", out], capsys)
    assert code == 0
    assert np.load(out).shape == (1, 1, 28, 28)
    assert "from layer logits" in err


def test_position_all_is_sum_of_positions_under_gradient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The gradient rule is linear in the signal, so the whole map projects to the sum of its
    # single-position projections.
    out = tmp_path / "all.npy"
    args = [
        "project",
        DIGITNET,
        DIGIT_7,
        "--layer",
        "conv3",
        "--channel",
        "5",
        "--position",
        "all",
        "--rule",
        "gradient",
        "-o",
        out,
    ]
    assert run(args, capsys)[0] == 0
    whole = np.load(out)[0]
    projector = Projector(DIGITNET, layer="conv3", rule="gradient")
    loaded = projector.prepared.loaded
    declared = preprocessing_from_metadata(loaded)
    assert declared is not None
    forward = projector.forward(load_input(DIGIT_7, loaded, declared).array)
    picks = [
        projector.strongest(forward, channel=5, position=(h, w))[0]
        for h in range(7)
        for w in range(7)
    ]
    total = projector.project(forward, picks).sum(axis=0)
    np.testing.assert_allclose(whole, total, rtol=1e-4, atol=1e-5 * np.abs(total).max())


def test_npy_input_and_explicit_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(1).normal(size=(1, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "p.npy"
    args = [
        "project",
        DIGITNET,
        tmp_path / "x.npy",
        "--layer",
        "/conv2/Conv_output_0",
        "--channel",
        "3",
        "--position",
        "4,5",
        "-o",
        out,
    ]
    assert run(args, capsys)[0] == 0
    projector = Projector(DIGITNET, layer="conv2")
    forward = projector.forward(x)
    expected = projector.project(forward, projector.strongest(forward, channel=3, position=(4, 5)))
    np.testing.assert_array_equal(np.load(out), expected)


def test_layers_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["layers", DIGITNET], capsys)
    assert code == 0
    assert re.search(r"conv2\s+/conv2/Conv_output_0\s+Conv\s+32x14x14\s+11x11 /2\s+yes", out)
    code, out, _ = run(["layers", DIGITNET, "--json"], capsys)
    rows = json.loads(out)
    assert rows[-1]["name"] == "logits" and rows[-1]["projectable"]
    assert rows[0]["receptive_field"]["size"] == [5, 5]


def test_layers_reports_unprojectable_with_reason(
    squeezenet_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["layers", squeezenet_path], capsys)
    assert code == 0
    softmax = [line for line in out.splitlines() if line.startswith("softmax1")]
    assert softmax and "no: cannot project through node" in softmax[0] and "(Softmax)" in softmax[0]


def exp_between_convs(path: Path) -> Path:
    """x -> Conv -> Relu -> Exp (no transpose rule) -> Conv: the second conv is unprojectable."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_a"),
        helper.make_node("Exp", ["r1"], ["e1"], name="the_exp"),
        helper.make_node("Conv", ["e1", "w2"], ["c2"], name="conv_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 2, 8, 8])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(size=(2, 2, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def test_unprojectable_layer_names_the_node_and_the_nearest_projectable_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = exp_between_convs(tmp_path / "exp.onnx")
    said = (
        "cannot project through node 'the_exp' (Exp): the op has no transpose rule; "
        "the nearest projectable layer before it is relu1 ('r1')"
    )
    np.save(tmp_path / "x.npy", np.ones((1, 1, 8, 8), np.float32))
    code, _, err = run(["project", model, tmp_path / "x.npy", "--layer", "conv2"], capsys)
    assert_user_error(code, err, re.escape(said) + "$")
    code, out, _ = run(["layers", model], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["relu1"].endswith("yes") and rows["conv2"].endswith(f"no: {said}")
    assert rows["exp1"].endswith("no: " + said)


def test_unprojectable_first_layer_says_that_none_before_it_is(tmp_path: Path) -> None:
    model = onnx.load(str(exp_between_convs(tmp_path / "exp.onnx")))
    del model.graph.node[:2]  # x -> Exp -> Conv: nothing projectable before the Exp
    model.graph.node[0].input[0] = "x"
    model.graph.initializer[1].CopyFrom(
        numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w2")
    )
    del model.graph.initializer[0]
    prepared = prepare(load_model(model))
    with pytest.raises(UnsupportedOpError, match=r"\(Exp\).*; no layer before it is projectable$"):
        prepared.plan("c2")


# --- user errors: one line, exit 2, no partial output ------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["project", "missing.onnx", DIGIT_7], r"model file 'missing.onnx' does not exist"),
        (["project", DIGITNET, "missing.png"], r"input file 'missing.png' does not exist"),
        (
            ["project", DIGITNET, DIGIT_7, "--layer", "conv9"],
            r"unknown layer 'conv9'.*did you mean",
        ),
        (
            ["project", DIGITNET, DIGIT_7, "--layer", "/conv2/Conv_outptu_0"],
            r"did you mean '/conv2/Conv_output_0'",
        ),
        (
            ["project", DIGITNET, DIGIT_7, "--layer", "conv2", "--channel", "99"],
            r"channel 99 is out of range.*32 channels",
        ),
        (
            [
                "project",
                DIGITNET,
                DIGIT_7,
                "--layer",
                "conv2",
                "--channel",
                "1",
                "--position",
                "20,3",
            ],
            r"position 20,3 is outside.*14x14",
        ),
        (["project", DIGITNET, DIGIT_7, "--position", "a,b"], r"expected H,W or 'all'"),
        (["project", DIGITNET, DIGIT_7, "--top", "0"], r"Invalid value for '--top'"),
        (["project", DIGITNET, DIGIT_7, "--top", "2", "--channel", "1"], r"--channel or --top"),
        (["project", DIGITNET, DIGIT_7, "--preset", "caffe", "--mean", "1"], r"either --preset"),
        (["project", DIGITNET, DIGIT_7, "--mean", "1,2"], r"give 1 value"),
        (["project", DIGITNET, DIGIT_7, "--rule", "magic"], r"Invalid value for '--rule'"),
        (["project", DIGITNET, DIGIT_7, "-o", "out.jpg"], r"must end in .png or .npy"),
        (["project", DIGITNET, DIGIT_7, "-o", "no/such/dir/p.png"], r"output folder .* not exist"),
        (["project", DIGITNET, DIGIT_7, "--size", "28,28,3"], r"expected H,W such as"),
        (["project", DIGITNET], r"Missing argument 'INPUT'"),
        (["layers", DIGITNET, "--size", "x"], r"expected H,W such as"),
        (["nonsense"], r"No such command 'nonsense'"),
        # One meaning per option word: the old names of renamed options are gone, not aliases.
        (
            ["features", DIGITNET, ROOT / "models" / "examples", "--top", "4"],
            r"No such option '--top'",
        ),
        (["occlusion", DIGITNET, DIGIT_7, "--batch", "8"], r"No such option '--batch'"),
    ],
)
def test_user_errors(
    args: list[object],
    pattern: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run([str(a) for a in args], capsys)
    assert_user_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["layers", "{folder}"], r"^error: '.*a_folder' is a folder: give the path of the \.onnx"),
        (["project", DIGITNET, "{folder}"], r"'.*a_folder' is a folder: give an image file$"),
        (
            ["occlusion", DIGITNET, DIGIT_7, "--labels", "{folder}"],
            r"'.*a_folder' is a folder: give a labels file",
        ),
        (["filters", DIGITNET, "--images", "{file}"], r"'.*a_file.txt' is a file: give a folder"),
        (["features", DIGITNET, "{file}"], r"'.*a_file.txt' names .* not an image file .*: give a"),
        (["check", DIGITNET, "--config", "{folder}"], r"'.*a_folder' is a folder: give a TOML"),
        (["check", DIGITNET, "--baseline", "{folder}"], r"is a folder: give a baseline file"),
        (["project", DIGITNET, DIGIT_7, "-o", "{folder}"], r"is a folder: give a file name"),
        (
            ["features", DIGITNET, ROOT / "models" / "examples", "-o", "{file}"],
            r"'.*a_file.txt' is a file: give a",
        ),
        (["merge", "{folder}", "-o", "{folder}"], r"'.*a_folder' is a folder: give a state file"),
    ],
)
def test_a_folder_for_a_file_and_the_reverse_say_so(
    args: list[object], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, file = tmp_path / "a_folder", tmp_path / "a_file.txt"
    folder.mkdir()
    file.write_text("not what is wanted")
    given = [str(a).format(folder=folder, file=file) for a in args]
    code, _, err = run(given, capsys)
    assert_user_error(code, err, pattern)
    assert "does not exist" not in err


def test_bad_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 3)
    assert_user_error(*run(["layers", garbage], capsys)[::2], r"garbage.onnx")
    assert_user_error(*run(["layers", tmp_path], capsys)[::2], r"is a folder")


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert_user_error(*run(["project", DIGITNET, text], capsys)[::2], r"not a readable image")
    np.save(tmp_path / "f64.npy", np.zeros((1, 1, 28, 28)))
    assert_user_error(
        *run(["project", DIGITNET, tmp_path / "f64.npy"], capsys)[::2], r"float64.*float32"
    )
    np.save(tmp_path / "big.npy", np.zeros((2, 1, 28, 28), np.float32))
    assert_user_error(*run(["project", DIGITNET, tmp_path / "big.npy"], capsys)[::2], r"batch 1")


def test_unsupported_op_names_node(
    squeezenet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "project",
        squeezenet_path,
        DIGIT_7,
        "--preset",
        "caffe",
        "--layer",
        "softmax1",
        "-o",
        tmp_path / "p.png",
    ]
    assert_user_error(*run(args, capsys)[::2], r"node 'Softmax_\d+' \(Softmax\)")
    assert list(tmp_path.iterdir()) == []


def test_cuda_requested_without_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        probe = ort.InferenceSession(
            conv_relu_pool_model().SerializeToString(),
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
        if "CUDAExecutionProvider" in probe.get_providers():
            pytest.skip("this machine has a working CUDA provider")
    args = ["project", DIGITNET, DIGIT_7, "--device", "cuda", "-o", tmp_path / "p.png"]
    assert_user_error(*run(args, capsys)[::2], r"CUDA execution provider does not load")


def test_real_process_exit_codes_and_quiet_stderr(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "onnxdeconv"]
    ok = subprocess.run(
        [*exe, "project", DIGITNET, DIGIT_7, "-o", tmp_path / "p.png"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    # No ONNX Runtime chatter (e.g. failed CUDA loading) beyond our own lines.
    assert all(
        line.startswith(("preprocessing:", "running on", "projected"))
        for line in ok.stderr.splitlines()
    ), ok.stderr
    bad = subprocess.run(
        [*exe, "project", DIGITNET, DIGIT_7, "--layer", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- meta: every command has help with an example and a README entry ---------------------------


COMMANDS = sorted(cli.list_commands(click.Context(cli)))


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_and_readme(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([name, "--help"], capsys)
    assert code == 0
    assert "Example:" in out and f"onnxdeconv {name}" in out
    readme = (ROOT / "README.md").read_text()
    assert f"onnxdeconv {name}" in readme, f"README has no entry for 'onnxdeconv {name}'"


@pytest.mark.parametrize(
    ("name", "option", "counts"),
    [
        ("project", "--top", "strongest channels"),
        ("report", "--top", "strongest channels"),
        ("features", "--per-channel", "images kept per channel"),
        ("features", "--batch-size", "images per forward pass"),
        ("merge", "--batch-size", "images per forward pass"),
        ("occlusion", "--batch-size", "occluded images per forward pass"),
    ],
)
def test_count_options_mean_one_thing_and_say_what_they_count(
    name: str, option: str, counts: str
) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    (help_text,) = [
        p.help or "" for p in command.params if isinstance(p, click.Option) and option in p.opts
    ]
    assert counts in help_text.lower(), help_text


def test_input_size_for_dynamic_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = conv_relu_pool_model(size=16)
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "S"
    onnx.save(model, str(tmp_path / "dyn.onnx"))
    code, _, err = run(["layers", tmp_path / "dyn.onnx"], capsys)
    assert_user_error(code, err, r"dynamic dims.*--size")
    code, out, err = run(["layers", tmp_path / "dyn.onnx", "--size", "16,16"], capsys)
    assert code == 0, err
    assert "4x16x16" in out
    # One number is a square.
    code, square, err = run(["layers", tmp_path / "dyn.onnx", "--size", "16"], capsys)
    assert code == 0, err
    assert square == out


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.onnx"
    code, stdout, err = run(["export", DIGITNET, "--layer", "relu2", "--batch", "-o", out], capsys)
    assert stdout.strip() == str(out)
    assert code == 0, err
    assert "opset 17, IR 8" in err
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["image", "channel"]
    code, _, err = run(["export", DIGITNET, "--layer", "nope", "-o", tmp_path / "q.onnx"], capsys)
    assert_user_error(code, err, r"unknown layer 'nope'")
    code, _, err = run(["export", DIGITNET, "-o", tmp_path / "q.txt"], capsys)
    assert_user_error(code, err, r"must end in .onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx"]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    modules = sorted(p.stem for p in (ROOT / "onnxdeconv" / "cli").glob("*_command.py"))
    names = [m.removesuffix("_command") for m in modules]
    assert {"check", "export", "layers", "project"} <= set(names)
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    listed = out.split("Commands:", 1)[1].split()
    assert all(name in listed for name in names), out


HEAVY = ("onnx", "onnxruntime", "numpy", "matplotlib", "cv2")


@pytest.mark.parametrize("argv", [None, ["--help"], []])
def test_the_cli_and_its_help_load_no_runtime(argv: list[str] | None) -> None:
    """Importing the CLI, its --help and the bare command load no heavy package (fast --help)."""
    lines = ["import sys", "from onnxdeconv.cli.main import main"]
    if argv is not None:
        lines += [f"sys.argv = ['onnxdeconv', *{argv!r}]", "try: main()", "except SystemExit: pass"]
    lines.append(f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    probe = "\n".join(lines)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stderr.strip().endswith("[]"), done.stdout + done.stderr
    if argv is not None:
        assert "Commands:" in done.stdout + done.stderr


def test_help_lists_each_command_with_its_own_short_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command list, read from the sources, says what each loaded command would say."""
    context = click.Context(cli)
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    listed = out.split("Commands:", 1)[1]
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        short = command.get_short_help_str(100 - 6 - max(map(len, COMMANDS)))
        assert f"  {name}" in listed and short in listed, (name, short)


def test_bare_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """As click does for a group without a command: the help (with the command list), status 2."""
    code, out, err = run([], capsys)
    assert code == 2
    assert err.startswith("Usage:") and "Commands:" in err and "error" not in err
    assert out == ""


def test_layer_to_json() -> None:
    # conv 3x3 pad 1 -> relu -> maxpool 3x3/2 pad 1 -> flatten -> gemm, on 16x16: the pool's
    # units see 3 + (3 - 1) * 1 = 5 pixels at stride 2, starting 1 + 1 * 1 = 2 pixels before.
    rows = [layer.to_json() for layer in prepare(load_model(conv_relu_pool_model())).layers()]
    pool = next(row for row in rows if row["name"] == "pool")
    assert pool == {
        "name": "pool",
        "alias": "maxpool1",
        "op": "MaxPool",
        "shape": [4, 8, 8],
        "receptive_field": {"size": [5, 5], "stride": [2, 2], "offset": [-2, -2]},
        "projectable": True,
        "reason": "",
    }
    flat = next(row for row in rows if row["name"] == "flat")
    assert flat["receptive_field"]["size"] is None and flat["shape"] == [256]
    assert json.loads(json.dumps(rows)) == rows


@pytest.mark.parametrize("opset", [17, 13])
def test_export_fixes_a_dynamic_input_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opset: int
) -> None:
    """At opset 13 the model is converted first: the converted one keeps the size given."""
    model = conv_relu_pool_model(size=16)
    model.opset_import[0].version = opset
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "S"
    onnx.save(model, str(tmp_path / "dyn.onnx"))
    out = tmp_path / "p.onnx"
    code, _, err = run(["export", tmp_path / "dyn.onnx", "-o", out], capsys)
    assert_user_error(code, err, r"dynamic dims.*--size")
    code, _, err = run(["export", tmp_path / "dyn.onnx", "--size", "16,16", "-o", out], capsys)
    assert code == 0, err
    image = onnx.load(str(out)).graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in image.dim] == [1, 3, 16, 16]


def test_library_error_gets_the_option_as_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library names the parameter (device); the CLI adds the option that sets it."""
    from onnxdeconv.runtime import cuda_loads

    if cuda_loads():
        pytest.skip("CUDA loads here, so --device cuda is no error")
    out = tmp_path / "x.npy"
    code, _, err = run(["project", DIGITNET, DIGIT_7, "--device", "cuda", "-o", out], capsys)
    assert_user_error(code, err, r"run on the CPU \(option --device\)$")
    assert not out.exists()


def test_outputs_option_group_checks_the_paths_before_the_command_and_lists_them_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    given: list[OutputPaths] = []

    @click.command()
    @click.argument("model", type=options.PATH)
    @options.outputs("{model.stem}_probe.png", csv_suffix=".csv", csv="the rows", json="the data")
    def probe(model: Path, paths: OutputPaths) -> None:
        given.append(paths)
        click.echo("summary")

    monkeypatch.chdir(tmp_path)
    invoke = lambda *args: CliRunner().invoke(probe, ["models/m.onnx", *args])  # noqa: E731
    for args, message in [
        (["-o", "p.jpg"], "'p.jpg' must end in .png"),
        (["--csv", "rows.txt"], "'rows.txt' must end in .csv"),
        (["--json", "no/such/d.json"], "output folder 'no/such' does not exist"),
    ]:
        refused = invoke(*args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert given == []  # refused before the command ran
    done = invoke("--json", "d.json", "--csv", "r.csv")
    assert done.exit_code == 0, done.output
    assert given == [OutputPaths(Path("m_probe.png"), Path("d.json"), Path("r.csv"))]
    # The command's own lines, then the files, in the order of the options (--csv first here).
    assert done.output.splitlines() == ["summary", "m_probe.png", "r.csv", "d.json"]
    shown = invoke("--help").output
    assert "OUT.png; default: MODEL-stem_probe.png" in shown
    assert shown.index("--csv") < shown.index("--json")
