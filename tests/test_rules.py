"""Transpose rules: golden values, adjoint identities, fan-out, errors and the deconv graph itself.

The cases live in ``rule_cases.py``; every op in ``TRANSPOSE_RULES`` must have a golden case and an
adjoint case there (or a reason in ``NONLINEAR``), which ``test_every_rule_is_covered`` enforces.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest
import rule_cases as rc
from onnx import helper

from onnxdeconv import Projector, UnsupportedOpError
from onnxdeconv.deconv.rules import TRANSPOSE_RULES

MAX_OPSET = 18


def projector(model: onnx.ModelProto, layer: str = "y", mode: str = "deconvnet") -> Projector:
    return Projector(model, layer=layer, rule=mode, device="cpu")  # type: ignore[arg-type]


def check_deconv_model(p: Projector) -> None:
    model = p.plan.model
    onnx.checker.check_model(model, full_check=True)
    opsets = list(model.opset_import)
    default = [o.version for o in opsets if o.domain in ("", "ai.onnx")]
    assert default and default[0] <= MAX_OPSET, opsets
    assert model.ir_version == helper.find_min_ir_version_for(opsets)


# --------------------------------------------------------------------------------------------
# Coverage meta-test
# --------------------------------------------------------------------------------------------


def test_every_rule_is_covered() -> None:
    assert rc.missing_coverage(set(TRANSPOSE_RULES)) == []
    assert set(rc.GOLDEN) == set(TRANSPOSE_RULES)
    assert set(TRANSPOSE_RULES) == set(rc.ADJOINT) | set(rc.NONLINEAR)
    assert all(reason.strip() for reason in rc.NONLINEAR.values())


def test_meta_test_notices_a_rule_without_cases() -> None:
    problems = rc.missing_coverage({*TRANSPOSE_RULES, "Exp"})
    assert problems == [
        "Exp: no golden case",
        "Exp: no adjoint case and not listed in NONLINEAR",
    ]
    assert "Relu: in GOLDEN but has no rule" in rc.missing_coverage(set(TRANSPOSE_RULES) - {"Relu"})


def test_case_ids_are_unique() -> None:
    for ids in ([c.id for c in rc.all_golden()], [c.id for c in rc.all_adjoint()]):
        assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------------------------
# Golden values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", rc.all_golden(), ids=lambda c: c.id)
def test_golden(case: rc.GoldenCase) -> None:
    p = projector(case.model, case.layer, case.mode)
    forward = p.forward(case.x)
    # Cases write the signal in the layer tensor's own layout; the projector shows every map
    # channels first (an NHWC map is transposed), so the signal goes through the same view.
    back = p.project_signal(forward, p.channels_first(case.signal), case.images)
    assert back.dtype == np.float32
    assert back.shape == case.expected.shape
    np.testing.assert_allclose(back, case.expected, rtol=1e-5, atol=1e-5)
    check_deconv_model(p)


# --------------------------------------------------------------------------------------------
# Adjoint identity <f(x), y> = <x, deconv(y)>
# --------------------------------------------------------------------------------------------


def assert_adjoint(case: rc.AdjointCase, images: tuple[int, ...] = (1, 0, 1)) -> None:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    p = projector(case.model, case.layer, case.mode)
    x = rng.standard_normal((2, *case.x_shape)).astype(np.float32)
    forward = p.forward(x)
    fx = forward.activations.astype(np.float64)
    if case.affine:
        fx = fx - p.forward(np.zeros_like(x)).activations.astype(np.float64)
    y = rng.standard_normal((len(images), *p.layer_shape)).astype(np.float32)
    back = p.project_signal(forward, y, images)
    assert back.shape == (len(images), *case.x_shape)
    for row, image in enumerate(images):
        lhs = float(np.dot(fx[image].ravel(), y[row].astype(np.float64).ravel()))
        rhs = float(
            np.dot(x[image].astype(np.float64).ravel(), back[row].astype(np.float64).ravel())
        )
        scale = float(np.abs(fx[image]).ravel() @ np.abs(y[row].astype(np.float64)).ravel())
        assert abs(lhs - rhs) <= 1e-5 * scale + 1e-9, (row, lhs, rhs, scale)
    check_deconv_model(p)


@pytest.mark.parametrize("case", rc.all_adjoint(), ids=lambda c: c.id)
def test_adjoint(case: rc.AdjointCase) -> None:
    assert_adjoint(case)


def test_adjoint_rejects_a_wrong_transpose() -> None:
    """The adjoint check is sharp enough to notice a transpose that is off by a little."""
    case = rc.ADJOINT["Conv"][0]
    rng = np.random.default_rng(0)
    p = projector(case.model, case.layer, case.mode)
    x = rng.standard_normal((1, *case.x_shape)).astype(np.float32)
    forward = p.forward(x)
    y = rng.standard_normal((1, *p.layer_shape)).astype(np.float32)
    back = p.project_signal(forward, y)
    back[0, 0, 0, 0] += 1.0
    lhs = float(np.dot(forward.activations.astype(np.float64).ravel(), y.ravel()))
    rhs = float(np.dot(x.astype(np.float64).ravel(), back.astype(np.float64).ravel()))
    scale = float(np.abs(forward.activations).astype(np.float64).ravel() @ np.abs(y).ravel())
    assert abs(lhs - rhs) > 1e-5 * scale


# --------------------------------------------------------------------------------------------
# Fan-out: a tensor consumed by several nodes gets the sum of their signals
# --------------------------------------------------------------------------------------------


def test_fan_out_sums_signals() -> None:
    # t = Identity(x); y = Concat(Conv_{w=2}(t), t): dt = 2 * s[0] + s[1].
    model = rc.make_model(
        [
            rc.node("Identity", ["x"], ["t"]),
            rc.node("Conv", ["t", "w"], ["scaled"]),
            rc.node("Concat", ["scaled", "t"], ["y"], axis=1),
        ],
        (1, 1, 2),
        {"w": rc.arr([[[[2.0]]]])},
    )
    p = projector(model)
    forward = p.forward(rc.rand(0, 1, 1, 1, 2))
    back = p.project_signal(forward, rc.arr([[[[1, 2]], [[10, 20]]]]))
    np.testing.assert_allclose(back, rc.arr([[[[12, 24]]]]))
    assert "Sum" in {n.op_type for n in p.plan.model.graph.node}


def test_fan_out_through_rectifier_and_linear_branch() -> None:
    # y = Relu(t) + 3 t with t = x: the gradient rule gives s * (x > 0) + 3 s.
    model = rc.make_model(
        [
            rc.node("Relu", ["x"], ["r"]),
            rc.node("Mul", ["x", "three"], ["unused"]),  # off the path to y: sends nothing
            rc.node("Conv", ["x", "w"], ["t3"]),
            rc.node("Add", ["r", "t3"], ["y"]),
        ],
        (1, 1, 3),
        {"w": rc.arr([[[[3.0]]]]), "three": rc.arr(3.0)},
        outputs=("y", "unused"),
    )
    x = rc.arr([[[[-1, 2, 0]]]])
    signal = rc.arr([[[[1, -1, 2]]]])
    expected = {
        "gradient": rc.arr([[[[3, -4, 6]]]]),
        "guided": rc.arr([[[[3, -3, 6]]]]),  # relu(s) * (x > 0) + 3 s
        "deconvnet": rc.arr([[[[4, -3, 8]]]]),  # relu(s) + 3 s
    }
    for mode, want in expected.items():
        p = projector(model, mode=mode)
        back = p.project_signal(p.forward(x), signal)
        np.testing.assert_allclose(back, want, err_msg=mode)


def test_fan_out_to_branch_not_reaching_the_layer_sends_nothing() -> None:
    model = rc.make_model(
        [rc.node("Relu", ["x"], ["side"]), rc.node("Identity", ["x"], ["y"])],
        (1, 2),
        outputs=("y", "side"),
    )
    p = projector(model, mode="gradient")
    back = p.project_signal(p.forward(-np.ones((1, 1, 2), np.float32)), rc.arr([[[1, 2]]]))
    np.testing.assert_allclose(back, rc.arr([[[1, 2]]]))
    assert p.plan.forward_inputs == []


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _raises_naming(model: onnx.ModelProto, node_name: str, op_type: str, layer: str = "y") -> str:
    with pytest.raises(UnsupportedOpError) as info:
        projector(model, layer)
    message = str(info.value)
    assert f"'{node_name}'" in message and op_type in message, message
    assert info.value.node_name == node_name and info.value.op_type == op_type
    return message


@pytest.mark.parametrize("op_type", ["Softmax", "Exp", "Log", "Sin"])
def test_op_without_rule_names_node(op_type: str) -> None:
    model = rc.make_model(
        [
            rc.node(op_type, ["x"], ["h"], name="the_culprit"),
            rc.node("Conv", ["h", "w"], ["y"], name="conv"),
        ],
        (1, 4, 4),
        {"w": rc.rand(0, 2, 1, 3, 3)},
    )
    message = _raises_naming(model, "the_culprit", op_type)
    # One line: the node, its op and where projections can start instead; no list of ops.
    assert message == (
        f"cannot project through node 'the_culprit' ({op_type}): the op has no transpose rule; "
        "no layer before it is projectable"
    )


def test_maxpool_storage_order_column_major() -> None:
    model = rc.make_model(
        [rc.node("MaxPool", ["x"], ["y"], name="pool_cm", kernel_shape=[2, 2], storage_order=1)],
        (1, 4, 4),
    )
    assert "storage_order" in _raises_naming(model, "pool_cm", "MaxPool")


def test_gemm_trans_a() -> None:
    model = rc.make_model(
        [
            rc.node("Flatten", ["x"], ["flat"]),
            rc.node("Gemm", ["flat", "b"], ["y"], name="gemm_ta", transA=1),
        ],
        (1, 2),
        {"b": rc.rand(0, 1, 3)},
        batch=1,
    )
    assert "transA" in _raises_naming(model, "gemm_ta", "Gemm")


def test_batchnorm_training_mode() -> None:
    inits = {"g": rc.arr([1, 2]), "b": rc.arr([0, 0]), "m": rc.arr([0, 0]), "v": rc.arr([1, 1])}
    model = rc.make_model(
        [
            rc.node(
                "BatchNormalization",
                ["x", "g", "b", "m", "v"],
                ["y", "rm", "rv"],
                name="bn_train",
                training_mode=1,
            ),
        ],
        (2, 3, 3),
        inits,
        opset=15,
    )
    assert "training_mode" in _raises_naming(model, "bn_train", "BatchNormalization")


def test_concat_on_batch_axis() -> None:
    model = rc.make_model([rc.node("Concat", ["x", "x"], ["y"], name="cat0", axis=0)], (2, 3))
    assert "batch" in _raises_naming(model, "cat0", "Concat")


@pytest.mark.parametrize(
    ("op_type", "attrs", "extra", "inits"),
    [
        ("Reshape", {}, ["s"], {"s": np.array([-1, 9])}),
        ("Reshape", {}, ["s"], {"s": np.array([3, -1])}),
        ("Flatten", {"axis": 2}, [], {}),
    ],
    ids=["reshape_minus1_9", "reshape_3_minus1", "flatten_axis2"],
)
def test_batch_mixing_reshape(op_type: str, attrs: dict, extra: list, inits: dict) -> None:
    model = rc.make_model(
        [rc.node(op_type, ["x", *extra], ["y"], name="mixer", **attrs)], (2, 3, 3), inits
    )
    assert "batch" in _raises_naming(model, "mixer", op_type)


def test_error_names_the_first_unsupported_node_on_the_path_only() -> None:
    # A Softmax off the path to the layer does not matter.
    model = rc.make_model(
        [
            rc.node("Softmax", ["x"], ["side"], name="side_softmax"),
            rc.node("Relu", ["x"], ["y"]),
        ],
        (1, 2),
        outputs=("y", "side"),
    )
    p = projector(model)
    back = p.project_signal(p.forward(rc.rand(0, 1, 1, 2)), rc.arr([[[1, -1]]]))
    np.testing.assert_allclose(back, rc.arr([[[1, 0]]]))


# --------------------------------------------------------------------------------------------
# The generated deconv graph
# --------------------------------------------------------------------------------------------


def _every_case_model() -> list[tuple[str, onnx.ModelProto, str, str]]:
    rows = [(c.id, c.model, c.layer, c.mode) for c in rc.all_golden()]
    rows += [(c.id, c.model, c.layer, c.mode) for c in rc.all_adjoint()]
    return rows


def test_every_deconv_model_is_valid_at_low_opset_and_minimal_ir() -> None:
    from onnxdeconv import load_model, prepare

    failures = []
    for case_id, model, layer, mode in _every_case_model():
        prepared = prepare(load_model(model))
        for each_mode in {mode, "deconvnet", "guided", "gradient"}:
            plan = prepared.plan(layer, each_mode)  # type: ignore[arg-type]
            try:
                onnx.checker.check_model(plan.model, full_check=True)
                opsets = list(plan.model.opset_import)
                assert all(o.version <= MAX_OPSET for o in opsets if o.domain in ("", "ai.onnx"))
                assert plan.model.ir_version == helper.find_min_ir_version_for(opsets)
            except Exception as exc:  # collect all, report once
                failures.append(f"{case_id}/{each_mode}: {exc}")
    assert not failures, "\n".join(failures)


def test_maxpool_uses_scatter_add_not_maxunpool() -> None:
    case = rc.GOLDEN["MaxPool"][0]
    ops = {n.op_type for n in projector(case.model).plan.model.graph.node}
    assert "MaxUnpool" not in ops
    scatter = [
        n for n in projector(case.model).plan.model.graph.node if n.op_type == "ScatterElements"
    ]
    assert scatter and all(
        helper.get_attribute_value(a) == b"add"
        for n in scatter
        for a in n.attribute
        if a.name == "reduction"
    )


@pytest.mark.parametrize("case", rc.PHANTOM_WINDOW, ids=lambda c: c.id)
def test_adjoint_ceil_window_in_end_padding(case: rc.AdjointCase) -> None:
    assert_adjoint(case)


def test_average_pool_empty_window_sends_nothing() -> None:
    """An output position that averages no element gets weight 0, not 1/0 = inf."""
    case = rc.PHANTOM_WINDOW[0]
    p = projector(case.model)
    for tensor in p.plan.model.graph.initializer:
        assert np.all(np.isfinite(onnx.numpy_helper.to_array(tensor))), tensor.name


def _colliding_model() -> onnx.ModelProto:
    # Forward tensors named like the tensors the rules generate ("active", "gated", "crop",
    # "rectified", "unpooled", weights "w_1") must not clash with them in the deconv graph.
    return rc.make_model(
        [
            rc.node("Conv", ["x", "w"], ["active"]),
            rc.node("Relu", ["active"], ["gated"]),
            rc.node("MaxPool", ["gated"], ["unpooled"], kernel_shape=[2, 2], strides=[2, 2]),
            rc.node("Conv", ["unpooled", "w_1"], ["crop"], pads=[0, 1, 1, 0]),
            rc.node("Relu", ["crop"], ["rectified"]),
            rc.node("Conv", ["rectified", "w"], ["y"]),
        ],
        (2, 8, 8),
        {"w": rc.rand(0, 2, 2, 1, 1), "w_1": rc.rand(1, 2, 2, 3, 3)},
    )


@pytest.mark.parametrize("mode", ["deconvnet", "guided", "gradient"])
def test_forward_names_that_look_generated_do_not_clash(mode: str) -> None:
    model = _colliding_model()
    p = projector(model, mode=mode)
    check_deconv_model(p)
    if mode == "gradient":
        assert_adjoint(rc.AdjointCase("colliding_names", model, (2, 8, 8)))


def test_forward_tensor_with_a_reserved_name_is_a_clear_error() -> None:
    from onnxdeconv import OnnxDeconvError

    model = rc.make_model(
        [rc.node("Conv", ["x", "w"], ["signal"]), rc.node("Relu", ["signal"], ["y"])],
        (1, 3, 3),
        {"w": rc.rand(0, 2, 1, 1, 1)},
    )
    with pytest.raises(OnnxDeconvError, match="'signal'"):
        projector(model, mode="gradient")
    projector(model, mode="deconvnet")  # the rectifier input is not needed: no clash


def test_shared_weight_is_stored_once() -> None:
    w = rc.rand(0, 2, 2, 3, 3)
    model = rc.make_model(
        [
            rc.node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
            rc.node("Conv", ["a", "w"], ["y"], pads=[1, 1, 1, 1]),
        ],
        (2, 5, 5),
        {"w": w},
    )
    p = projector(model)
    stored = [t for t in p.plan.model.graph.initializer if t.dims == list(w.shape)]
    assert len(stored) == 1


@pytest.mark.parametrize("training", [True, None], ids=["constant_true", "computed"])
def test_dropout_training_mode(training: bool | None) -> None:
    inits: dict = {"r": rc.arr(0.5)}
    nodes = []
    if training is None:
        # A flag computed at run time (here from the input) cannot be trusted to be false.
        nodes += [
            rc.node("ReduceMax", ["x"], ["m"], keepdims=0),
            rc.node("Greater", ["m", "r"], ["t"]),
        ]
    else:
        inits["t"] = np.array(training)
    nodes.append(rc.node("Dropout", ["x", "r", "t"], ["y"], name="drop_train"))
    model = rc.make_model(nodes, (1, 4), inits)
    assert "training_mode" in _raises_naming(model, "drop_train", "Dropout")


def test_dropout_training_mode_false_is_identity() -> None:
    model = rc.make_model(
        [rc.node("Dropout", ["x", "r", "t"], ["y"])],
        (1, 4),
        {"r": rc.arr(0.5), "t": np.array(False)},
    )
    p = projector(model)
    back = p.project_signal(p.forward(rc.rand(0, 1, 1, 4)), rc.arr([[[1, -2, 3, -4]]]))
    np.testing.assert_allclose(back, rc.arr([[[1, -2, 3, -4]]]))


def test_float16_model_adjoint() -> None:
    """Forward tensors of a float16 model are cast for the float32 deconv graph."""
    case = rc.CHAINS[0]
    model = rc.to_float16(case.model)
    rng = np.random.default_rng(0)
    p = projector(model, mode="gradient")
    x = rng.standard_normal((2, *case.x_shape)).astype(np.float16)
    forward = p.forward(x)
    y = rng.standard_normal((2, *p.layer_shape)).astype(np.float32)
    back = p.project_signal(forward, y)
    assert back.dtype == np.float32
    for k in range(2):
        lhs = float(np.dot(forward.activations[k].astype(np.float64).ravel(), y[k].ravel()))
        rhs = float(np.dot(x[k].astype(np.float64).ravel(), back[k].astype(np.float64).ravel()))
        scale = float(
            np.abs(forward.activations[k]).astype(np.float64).ravel() @ np.abs(y[k]).ravel()
        )
        assert abs(lhs - rhs) <= 5e-3 * scale, (lhs, rhs, scale)
    check_deconv_model(p)


@pytest.mark.parametrize(
    ("op_type", "extra", "inits", "attrs"),
    [("Flatten", [], {}, {"axis": 0}), ("Unsqueeze", ["a"], {"a": np.array([0])}, {})],
    ids=["flatten_axis0", "unsqueeze_axis0"],
)
def test_batch_mixing_at_dynamic_batch(op_type: str, extra: list, inits: dict, attrs: dict) -> None:
    model = rc.make_model(
        [rc.node(op_type, ["x", *extra], ["y"], name="mixer", **attrs)], (2, 3), inits
    )
    _raises_naming(model, "mixer", op_type)


@pytest.mark.parametrize(
    "attrs", [{"axes": [0, 2]}, {"keepdims": 1}], ids=["batch_axis", "all_axes"]
)
def test_reduce_mean_over_batch_is_refused(attrs: dict) -> None:
    model = rc.make_model([rc.node("ReduceMean", ["x"], ["y"], name="mean", **attrs)], (2, 3))
    _raises_naming(model, "mean", "ReduceMean")
