"""`onnxdeconv check`: each finding planted in a small model, the formats and the exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DIGITNET, ROOT
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import load_model
from onnxdeconv.check import CHECK_STAGES, CheckConfig, run_checks
from onnxdeconv.deconv import rules


def small_net(
    *,
    kernel: int = 3,
    stride: int = 1,
    dead: bool = False,
    bias_shift: dict[int, float] | None = None,
    head: str = "Gemm",
    seed: int = 0,
    opset: int = 13,
) -> onnx.ModelProto:
    """x[N,3,32,32] -> Conv -> Relu -> MaxPool 3x3/2 -> Conv -> Relu -> GAP -> Flatten -> head.

    Every op of it means the same from opset 8 on (Gemm's bias is optional from 11: before, it
    gets a zero one).
    """
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(8, 3, kernel, kernel)).astype(np.float32) / kernel
    b1 = np.full(8, 0.1, np.float32)
    if dead:
        w1[5] = 0.0
    for channel, shift in (bias_shift or {}).items():
        b1[channel] = shift
    w2 = rng.normal(size=(8, 8, 3, 3)).astype(np.float32) / 3
    fc = rng.normal(size=(4, 8)).astype(np.float32)
    pad = kernel // 2
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w1", "b1"],
            ["conv1"],
            name="conv1",
            pads=[pad] * 4,
            strides=[stride, stride],
        ),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node(
            "MaxPool",
            ["relu1"],
            ["pool1"],
            name="pool1",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Conv", ["pool1", "w2"], ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node(
            "Gemm",
            ["flat", "fc", *(["fc_bias"] if opset < 11 else [])],
            ["logits"],
            name="fc",
            transB=1,
        ),
    ]
    output = "logits"
    if head != "Gemm":
        nodes.append(helper.make_node(head, ["logits"], ["head"], name="head"))
        output = "head"
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 4])],
        initializer=[
            numpy_helper.from_array(a, n)
            for n, a in (("w1", w1), ("b1", b1), ("w2", w2), ("fc", fc))
        ],
    )
    if opset < 11:
        graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32), "fc_bias"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # IR 4: initializers need not be listed as graph inputs.
    model.ir_version = max(4, helper.find_min_ir_version_for(list(model.opset_import)))
    return model


IMAGES = np.random.default_rng(7).normal(size=(3, 3, 32, 32)).astype(np.float32)
NAMES = ["a", "b", "c"]


def statuses(model: onnx.ModelProto, check: str, **kwargs: object) -> dict[str, str]:
    report = run_checks(load_model(model), IMAGES, NAMES, **kwargs)  # type: ignore[arg-type]
    return {f.subject: f.status for f in report.findings if f.check == check}


def _flipped_conv_rule() -> Callable[[rules.TransposeContext, str], dict[int, str]]:
    """The Conv transpose rule with a classic bug planted: a spatially flipped kernel."""
    original = rules.TRANSPOSE_RULES["Conv"]

    def flipped(ctx: rules.TransposeContext, signal: str) -> dict[int, str]:
        name = ctx.node.input[1]
        constants = dict(ctx.constants)
        constants[name] = np.asarray(ctx.constants[name])[:, :, ::-1, ::-1].copy()
        ctx.constants = constants
        return original(ctx, signal)

    return flipped


def test_clean_model_passes() -> None:
    stages: list[int] = []
    report = run_checks(load_model(small_net()), IMAGES, NAMES, progress=stages.append)
    assert stages == [1] * len(CHECK_STAGES)
    failed = [(f.check, f.subject, f.message) for f in report.findings if f.status == "fail"]
    assert failed == []
    checks = {f.check for f in report.findings}
    assert {
        "analyzable.projectable",
        "faithful.outputs",
        "faithful.adjoint",
        "filters.dead",
        "filters.never_active",
        "filters.saturated",
        "architecture.aliasing",
        "architecture.coverage",
    } <= checks


@pytest.mark.parametrize("opset", [8, 9, 10])
def test_old_opset_with_max_pool_runs_every_check(opset: int) -> None:
    # The adjoint test's linearised copy keeps the model's opset: its frozen max pool must not
    # use an op newer than that (GatherElements is opset 11).
    model = small_net(opset=opset)
    onnx.checker.check_model(model, full_check=True)
    report = run_checks(load_model(model), IMAGES, NAMES)
    failed = [(f.check, f.subject, f.message) for f in report.findings if f.status == "fail"]
    assert failed == []
    adjoint = {f.subject: f.status for f in report.findings if f.check == "faithful.adjoint"}
    assert adjoint["pool1"] == "pass" and adjoint["relu2"] == "pass"


def test_old_opset_adjoint_test_still_catches_a_flipped_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(rules.TRANSPOSE_RULES, "Conv", _flipped_conv_rule())
    adjoint = statuses(small_net(kernel=3, seed=3, opset=8), "faithful.adjoint")
    assert adjoint["conv1"] == "fail" and adjoint["relu2"] == "fail"


def test_planted_dead_filter() -> None:
    assert statuses(small_net(dead=True), "filters.dead") == {"conv1": "fail", "conv2": "pass"}


def test_never_active_and_saturated_channels() -> None:
    model = small_net(bias_shift={0: -100.0, 1: -100.0, 2: -100.0, 3: 100.0, 4: 100.0, 5: 100.0})
    assert statuses(model, "filters.never_active")["relu1"] == "fail"
    assert statuses(model, "filters.saturated")["relu1"] == "fail"
    assert statuses(small_net(), "filters.never_active")["relu1"] == "pass"


def test_unprojectable_layer_fails_but_softmax_head_is_allowed() -> None:
    assert set(statuses(small_net(head="Softmax"), "analyzable.projectable").values()) == {"pass"}
    exp = statuses(small_net(head="Exp"), "analyzable.projectable")
    assert exp["head"] == "fail"


def test_corrupted_rule_fails_the_adjoint_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rules.TRANSPOSE_RULES, "Conv", _flipped_conv_rule())
    adjoint = statuses(small_net(kernel=3, seed=3), "faithful.adjoint")
    assert adjoint["conv1"] == "fail" and adjoint["relu2"] == "fail"


def test_changed_outputs_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner imports instrument when it builds a graph (onnx loads lazily): patch its source.
    import onnxdeconv.graph.passes as passes

    real = passes.instrument

    def tampering(model: onnx.ModelProto, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        out, switches = real(model, *args, **kwargs)  # type: ignore[arg-type]
        for tensor in out.graph.initializer:
            if tensor.name == "fc":
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.01, "fc"))
        return out, switches

    monkeypatch.setattr(passes, "instrument", tampering)
    assert statuses(small_net(), "faithful.outputs") == {"logits": "fail"}


def test_aliasing_stride4_kernel11_fails_where_stride1_passes() -> None:
    coarse = run_checks(load_model(small_net(kernel=11, stride=4)), IMAGES, NAMES)
    fine = run_checks(load_model(small_net(kernel=3, stride=1)), IMAGES, NAMES)
    coarse_score = next(f for f in coarse.findings if f.check == "architecture.aliasing")
    fine_score = next(f for f in fine.findings if f.check == "architecture.aliasing")
    assert coarse_score.value is not None and fine_score.value is not None
    assert coarse_score.value > fine_score.value
    assert coarse_score.status == "fail" and fine_score.status == "pass"


def test_drifted_baseline() -> None:
    model = small_net()
    baseline = run_checks(load_model(model), IMAGES, NAMES).baseline
    same = run_checks(load_model(model), IMAGES, NAMES, baseline=baseline)
    assert not [f for f in same.findings if f.check.startswith("regression") and f.status != "pass"]
    drifted = onnx.ModelProto()
    drifted.CopyFrom(model)
    for tensor in drifted.graph.initializer:
        if tensor.name == "w2":
            noisy = numpy_helper.to_array(tensor) + np.random.default_rng(1).normal(
                size=tuple(tensor.dims)
            ).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(noisy, "w2"))
    report = run_checks(load_model(drifted), IMAGES, NAMES, baseline=baseline)
    failed = {f.check for f in report.findings if f.status == "fail"}
    assert "regression.stat_mean" in failed
    assert failed & {"regression.topk_overlap", "regression.projection"}


def test_severity_warning_and_off() -> None:
    config = CheckConfig()
    config.severity["filters"] = "warning"
    report = run_checks(load_model(small_net(dead=True)), IMAGES, NAMES, config=config)
    dead = [f for f in report.findings if f.check == "filters.dead" and f.subject == "conv1"]
    assert dead[0].status == "warn" and report.passed
    config.severity["filters"] = "off"
    report = run_checks(load_model(small_net(dead=True)), IMAGES, NAMES, config=config)
    assert not [f for f in report.findings if f.check.startswith("filters")]


# --- the command: exit codes, outputs, config ----------------------------------------------------


def write(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_cli_exit_0_with_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "check",
        DIGITNET,
        "--images",
        ROOT / "models" / "examples",
        "--json",
        tmp_path / "c.json",
        "--junit",
        tmp_path / "c.xml",
        "--write-baseline",
        tmp_path / "b.json",
    ]
    code, out, err = run(args, capsys)
    assert code == 0, out + err
    assert "running on CPUExecutionProvider" in err
    assert "passed, 0 failed" in out
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["schema"] == "onnxdeconv.check/1" and report["passed"] is True
    assert set(report["findings"][0]) == {
        "check",
        "subject",
        "status",
        "message",
        "value",
        "threshold",
        "non_finite",
    }
    suite = ET.parse(tmp_path / "c.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert int(suite.get("tests", "0")) == len(report["findings"])
    args = [
        "check",
        DIGITNET,
        "--images",
        ROOT / "models" / "examples",
        "--baseline",
        tmp_path / "b.json",
    ]
    code, out, _ = run(args, capsys)
    assert code == 0 and "regression.projection" in out


def dynamic_net(height: int | str, width: int | str) -> onnx.ModelProto:
    """``small_net`` exported with a dynamic size, such as an OCR model's [N, 3, 32, W]."""
    model = small_net()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[2:], (height, width), strict=True):
        if isinstance(value, str):
            dim.dim_param = value
    return model


DYNAMIC = pytest.mark.parametrize(("height", "width"), [(32, "W"), ("H", "W")])


@DYNAMIC
def test_cli_dynamic_size_needs_size(
    height: int | str, width: int | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write(dynamic_net(height, width), tmp_path / "dynamic.onnx")
    code, _, err = run(["check", model], capsys)
    assert code == 2 and "Traceback" not in err
    assert "give the input size" in err and "--size H,W" in err


@DYNAMIC
def test_cli_dynamic_size_with_size_and_images(
    height: int | str,
    width: int | str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cv2

    import onnxdeconv.cli.check_command as check_command

    model = write(dynamic_net(height, width), tmp_path / "dynamic.onnx")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(9)
    for index, (h, w) in enumerate([(50, 70), (20, 90)]):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
    seen: list[tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = []
    real = check_command.run_checks

    def spy(loaded, images, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((None if images is None else images.shape, kwargs["input_shape"]))
        return real(loaded, images, *args, **kwargs)

    monkeypatch.setattr(check_command, "run_checks", spy)
    code, out, err = run(["check", model, "--size", "32,40"], capsys)
    assert code == 0, out + err
    code, out, err = run(["check", model, "--size", "32,40", "--images", folder], capsys)
    assert code == 0, out + err
    # Every image is resized to the given size, whatever its own.
    assert seen == [(None, (3, 32, 40)), ((2, 3, 32, 40), (3, 32, 40))]
    assert "0 failed" in out and "0 skipped" in out


def test_dynamic_size_library_call() -> None:
    report = run_checks(load_model(dynamic_net(32, "W")), input_shape=(3, 32, 24))
    assert report.passed
    assert {f.status for f in report.findings if f.check == "faithful.adjoint"} == {"pass"}


def test_cli_exit_1_with_annotations_and_junit_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    model = write(small_net(dead=True), tmp_path / "dead.onnx")
    code, out, err = run(["check", model, "--junit", tmp_path / "j.xml"], capsys)
    assert code == 1
    assert "::error title=onnxdeconv filters.dead::conv1: 1 dead filters: 5" in out
    assert err.strip().splitlines()[-1].startswith("error: 1 check(s) failed")
    failures = ET.parse(tmp_path / "j.xml").getroot().iter("failure")
    assert [f.get("message") for f in failures] == ["1 dead filters: 5"]


def test_cli_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write(small_net(dead=True), tmp_path / "dead.onnx")
    relaxed = tmp_path / "check.toml"
    relaxed.write_text('[check]\ndead_ratio = 0.0\n\n[check.severity]\nregression = "off"\n')
    code, out, _ = run(["check", model, "--config", relaxed], capsys)
    assert code == 0, out
    bad = tmp_path / "bad.toml"
    bad.write_text("[check]\ndead_ration = 0.1\n")
    code, _, err = run(["check", model, "--config", bad], capsys)
    assert code == 2 and "unknown key check.dead_ration" in err


@pytest.mark.parametrize(
    ("make_args", "pattern"),
    [
        (lambda t: ["check", t / "missing.onnx"], "does not exist"),
        (lambda t: ["check", DIGITNET, "--images", t / "nope"], "image folder"),
        (lambda t: ["check", DIGITNET, "--baseline", t / "none.json"], "cannot read baseline"),
        (lambda t: ["check", DIGITNET, "--config", t / "none.toml"], "cannot read config"),
    ],
)
def test_cli_exit_2(
    make_args: Callable[[Path], list[object]],
    pattern: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(make_args(tmp_path), capsys)
    assert code == 2 and pattern in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_squeezenet_check_runs(squeezenet_path: Path, images_dir: Path) -> None:
    from onnxdeconv.inputs import PRESETS, load_input

    loaded = load_model(squeezenet_path)
    files = sorted(images_dir.glob("*.jpg"))[:2]
    x = np.concatenate([load_input(f, loaded, PRESETS["caffe"]).array for f in files])
    config = CheckConfig(adjoint_layers=8)
    report = run_checks(loaded, x, [f.name for f in files], config=config)
    by_check: dict[str, set[str]] = {}
    for finding in report.findings:
        by_check.setdefault(finding.check, set()).add(finding.status)
    assert by_check["faithful.adjoint"] == {"pass"}
    assert by_check["faithful.outputs"] == {"pass"}
    # The softmax head is the only unprojectable part, and it is allowed.
    assert by_check["analyzable.projectable"] == {"pass"}


@pytest.mark.parametrize("arch", ["zfnet", "vgg", "resnet", "mobilenet", "squeeze"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_pytorch_architectures_check(arch: str, exporter: str, tmp_path: Path) -> None:
    import torch
    from oracle_nets import build_net, export, make_input

    x = make_input(arch, batch=2)
    model = export(build_net(arch), torch.from_numpy(x[:1]), exporter, tmp_path / "m.onnx")
    report = run_checks(
        load_model(model), x, ["first", "second"], config=CheckConfig(adjoint_layers=6)
    )
    statuses_by_check: dict[str, set[str]] = {}
    for finding in report.findings:
        statuses_by_check.setdefault(finding.check, set()).add(finding.status)
    assert statuses_by_check["analyzable.projectable"] == {"pass"}
    assert statuses_by_check["faithful.adjoint"] == {"pass"}, [
        (f.subject, f.message) for f in report.findings if f.check == "faithful.adjoint"
    ]
    assert statuses_by_check["faithful.outputs"] == {"pass"}
    assert report.baseline["topk"]["first"]["channels"]


def fixed_batch_net(seed: int = 0) -> onnx.ModelProto:
    """``small_net`` as a static export with batch 2 writes it: it accepts only ``[2, ...]``."""
    model = small_net(seed=seed)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    return model


def test_fixed_batch_of_two_runs_the_adjoint_test_at_that_batch() -> None:
    # The point fills the batch and row 0 is compared.
    report = run_checks(load_model(fixed_batch_net()), IMAGES[:2], NAMES[:2])
    adjoint = [f for f in report.findings if f.check == "faithful.adjoint"]
    assert adjoint and {f.status for f in adjoint} == {"pass"}, [f.message for f in adjoint]
    assert {f.status for f in report.findings if f.check == "faithful.outputs"} == {"pass"}


def test_fixed_batch_adjoint_test_still_catches_a_flipped_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(rules.TRANSPOSE_RULES, "Conv", _flipped_conv_rule())
    report = run_checks(load_model(fixed_batch_net(seed=3)), IMAGES[:2], NAMES[:2])
    adjoint = {f.subject: f.status for f in report.findings if f.check == "faithful.adjoint"}
    assert adjoint["conv1"] == "fail" and adjoint["relu2"] == "fail"


def test_load_baseline_reads_json_objects_only(tmp_path: Path) -> None:
    from onnxdeconv.check import load_baseline
    from onnxdeconv.errors import OnnxDeconvError

    (tmp_path / "ok.json").write_text('{"schema": 1}')
    assert load_baseline(tmp_path / "ok.json") == {"schema": 1}
    for name, text, message in (("bad.json", "{", "is not JSON"), ("list.json", "[]", "not an")):
        (tmp_path / name).write_text(text)
        with pytest.raises(OnnxDeconvError, match=message):
            load_baseline(tmp_path / name)
    with pytest.raises(OnnxDeconvError, match="cannot read baseline"):
        load_baseline(tmp_path / "missing.json")


# --- hostile input: exit codes, outputs that always parse, malformed config, deep models ------


def strict_json(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_cli_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "0 all checks pass; 1 a check failed; 2 a usage, model or image error" in text
    assert "internal error" in text and "--layers N|all" in text


def test_cli_crash_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxdeconv.cli.check_command as check_command

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(check_command, "run_checks", crash)
    model = write(small_net(), tmp_path / "m.onnx")
    code, _, err = run(["check", model], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: internal error: RuntimeError: something broke (please report")


def renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    """``model`` with tensor ``old`` (and the node that makes it) named ``new``."""
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        if node.name == old:
            node.name = new
    return model


HOSTILE = "relu\x01\x08\x1b[31m]]><&'\"\ufffe\x7f"


def test_cli_outputs_parse_with_hostile_names_and_nan_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = renamed(small_net(), "relu1", HOSTILE)
    model = renamed(model, "conv2", "conv2]]>\x00\x1f")
    weights = {i.name: i for i in model.graph.initializer}
    w2 = numpy_helper.to_array(weights["w2"]).copy()
    w2[0, 0, 0, 0] = np.nan
    w2[1, 0, 0, 0] = np.inf
    weights["w2"].CopyFrom(numpy_helper.from_array(w2, "w2"))
    path = write(model, tmp_path / "hostile.onnx")
    args = ["check", path, "--json", tmp_path / "c.json", "--junit", tmp_path / "c.xml"]
    code, out, err = run([*args, "--verbose"], capsys)
    assert code == 1, out + err
    # Control characters reach the terminal as escapes, not as commands to it.
    assert "\x1b" not in out and "relu\\x01\\x08\\x1b[31m]]>" in out
    report = strict_json((tmp_path / "c.json").read_text())
    assert isinstance(report, dict)
    finite = [f for f in report["findings"] if f["check"] == "filters.finite"]
    assert {f["status"] for f in finite} == {"pass", "fail"}
    (failed,) = [f for f in finite if f["status"] == "fail"]
    assert failed["subject"] == "conv2]]>\x00\x1f" and failed["message"].startswith("2 of 576")
    flagged = [f for f in report["findings"] if f["non_finite"]]
    assert flagged and all(
        f[key] is None and f["non_finite"][key] in ("nan", "inf", "-inf")
        for f in flagged
        for key in f["non_finite"]
    )
    root = ET.fromstring((tmp_path / "c.xml").read_bytes())
    names = [case.get("name") for case in root.iter("testcase")]
    assert "relu\ufffd\ufffd\ufffd[31m]]><&'\"\ufffd\x7f" in names
    assert "conv2]]>\ufffd\ufffd" in names
    # A NaN written into the baseline (as null) fails the comparison instead of crashing it.
    baseline = tmp_path / "b.json"
    run(["check", path, "--write-baseline", baseline], capsys)
    stored = strict_json(baseline.read_text())
    assert isinstance(stored, dict)
    code, out, err = run(["check", path, "--baseline", baseline], capsys)
    assert code == 1 and "Traceback" not in err, err


def test_cli_malformed_baseline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write(small_net(), tmp_path / "m.onnx")
    for text in (b'{"schema": "onnxdeconv.baseline/1", "images": ["random"]}', b"\xff\xfe{"):
        baseline = tmp_path / "b.json"
        baseline.write_bytes(text)
        code, _, err = run(["check", model, "--baseline", baseline], capsys)
        assert code == 2 and "Traceback" not in err and "baseline" in err, err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            b"[check]\ndead_ratio = -1\n",
            "check.dead_ratio = -1 is out of range: give a number from 0 to 1",
        ),
        (b"[check]\ndead_ratio = 1.5\n", "check.dead_ratio = 1.5 is out of range"),
        (b"[check]\ndead_ratio = nan\n", "check.dead_ratio = nan must be a number from 0 to 1"),
        (b'[check]\ndead_ratio = "0.1"\n', "check.dead_ratio = '0.1' must be a number"),
        (b"[check]\ndead_ratio = true\n", "check.dead_ratio = True must be a number"),
        (b"[check]\nsaturated_fraction = 2\n", "check.saturated_fraction = 2 is out of range"),
        (b"[check]\ntopk = 0\n", "check.topk = 0 is out of range: give a whole number >= 1"),
        (b"[check]\ntopk = 2.5\n", "check.topk = 2.5 must be a whole number >= 1"),
        (b"[check]\nadjoint_layers = -3\n", "check.adjoint_layers = -3 is out of range"),
        (b'[check]\nadjoint_layers = "some"\n', "or 'all'"),
        (b"[check]\nadjoint_tolerance = -1e-3\n", "check.adjoint_tolerance = -0.001 is out"),
        (b"[check]\nmin_projection_similarity = -2\n", "give a number from -1 to 1"),
        (b'[check]\nallowed_unprojectable_ops = "Softmax"\n', "must be a list of op names"),
        (b"[check]\nallowed_unprojectable_ops = [1]\n", "must be a list of op names"),
        (b"[check]\ndead_ration = 0.1\n", "unknown key check.dead_ration"),
        (b"[chek]\ndead_ratio = 0.1\n", "unknown section or key 'chek'"),
        (b"check = 3\n", "check must be a table"),
        (b"[check]\nseverity = 3\n", "check.severity must be a table"),
        (b'[check.severity]\nfilters = "fatal"\n', "check.severity.filters = 'fatal'"),
        (b"[check]\ndead_ratio = 0.1 # caf\xe9\n", "is not UTF-8 text"),
        (b"[check\n", "is not valid TOML"),
    ],
)
def test_cli_malformed_config_exits_2_naming_the_key(
    text: bytes, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "check.toml"
    config.write_bytes(text)
    model = write(small_net(dead=True), tmp_path / "dead.onnx")
    code, _, err = run(["check", model, "--config", config], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert pattern in line and "check.toml" in line and "Traceback" not in err


def test_config_adjoint_layers_all(tmp_path: Path) -> None:
    from onnxdeconv.check import load_config

    config = tmp_path / "check.toml"
    config.write_text('[check]\nadjoint_layers = "all"\ndead_ratio = 0\ntopk = 3\n')
    loaded = load_config(config)
    assert (loaded.adjoint_layers, loaded.dead_ratio, loaded.topk) == (0, 0.0, 3)
    assert isinstance(loaded.dead_ratio, float)


def deep_chain(depth: int) -> onnx.ModelProto:
    """x[N,2,8,8] -> (Conv 3x3 -> Relu) x depth -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(3)
    nodes, weights, previous = [], [], "x"
    for i in range(depth):
        weights.append(
            numpy_helper.from_array(rng.normal(size=(2, 2, 3, 3)).astype(np.float32) / 3, f"w{i}")
        )
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{i}"], [f"conv{i}"], name=f"conv{i}", pads=[1] * 4
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        previous = f"relu{i}"
    weights.append(numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "fc"))
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # what the installed ONNX Runtime reads
    return model


def test_check_layers_spreads_a_sample_with_the_last_conv_stage() -> None:
    from onnxdeconv.analysis.layers import MAX_CHECK_LAYERS, check_layers
    from onnxdeconv.prepared import prepare

    prepared = prepare(load_model(deep_chain(20)))
    layers = prepared.layers()
    names = [layer.name for layer in layers if layer.projectable]
    assert len(names) > MAX_CHECK_LAYERS
    last_map = "relu19"  # the deepest projectable layer with more than one position
    for limit in (1, 2, 3, 5, MAX_CHECK_LAYERS):
        sample = check_layers(prepared, limit)
        assert len(sample) == len(set(sample)) <= limit
        assert last_map in sample
        assert sample == [n for n in names if n in sample]  # depth order
        if limit >= 3:
            assert sample[0] == names[0] and sample[-1] == names[-1]
    gaps = np.diff([names.index(n) for n in check_layers(prepared, MAX_CHECK_LAYERS)])
    assert gaps.max() <= 2 * np.ceil(len(names) / MAX_CHECK_LAYERS)  # spread, not bunched
    assert check_layers(prepared, 0) == names == check_layers(prepared, len(names))


def test_cli_deep_model_tests_a_sample_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxdeconv.analysis.layers import MAX_CHECK_LAYERS

    model = write(deep_chain(12), tmp_path / "deep.onnx")
    args = ["check", model, "--json", tmp_path / "c.json", "--junit", tmp_path / "c.xml"]
    code, out, err = run(args, capsys)
    assert code == 0, out + err
    report = strict_json((tmp_path / "c.json").read_text())
    assert isinstance(report, dict)
    layers = report["layers"]
    tested = layers["tested"]
    assert layers["sample"] is True and len(tested) == MAX_CHECK_LAYERS < layers["projectable"]
    adjoint = [f["subject"] for f in report["findings"] if f["check"] == "faithful.adjoint"]
    assert adjoint == tested and "relu11" in tested
    assert f"a sample of {MAX_CHECK_LAYERS} of {layers['projectable']} projectable layers" in out
    assert ", ".join(tested) in out and "--layers all" in err
    suite = ET.fromstring((tmp_path / "c.xml").read_bytes()).find("testsuite")
    assert suite is not None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["tested_layers"] == ",".join(tested)
    assert properties["sample"] == "true"
    assert properties["projectable_layers"] == str(layers["projectable"])
    code, out, err = run([*args, "--layers", "all"], capsys)
    assert code == 0, out + err
    report = strict_json((tmp_path / "c.json").read_text())
    assert isinstance(report, dict) and report["layers"]["sample"] is False
    assert len(report["layers"]["tested"]) == report["layers"]["projectable"]
    assert f"adjoint test on all {report['layers']['projectable']} projectable layers" in out
    code, _, err = run(["check", model, "--layers", "0"], capsys)
    assert code == 2 and "neither a count" in err
