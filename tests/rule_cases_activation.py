"""Rule cases for activation functions, fused composite activations, gates and arithmetic.

Merged into the tables of ``rule_cases.py``. Expectations come from the formulas below, written
here in float64 numpy: the derivative of each smooth activation is a central finite difference
of its forward formula (independent of the derivatives the rules write), kinks are literal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import rule_cases as rc

F64 = np.float64
RULES = ("deconvnet", "guided", "gradient")
#: Inputs away from the kinks and from the zeros of the derivatives (GELU -0.75, SiLU -1.28,
#: Mish -1.19, HardSwish -1.5), so that the guided mask is well defined in float32.
X_VALUES = [[-4.0, -2.5, -1.0, -0.3], [0.2, 0.7, 1.5, 3.5]]
SIGNAL = [[[1.0, -2.0, 3.0, -0.5], [-1.5, 2.5, 0.75, -3.0]]]

Forward = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Forward formulas (float64) and their finite-difference derivatives
# --------------------------------------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


_erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def elu(alpha: float) -> Forward:
    return lambda x: np.where(x > 0, x, alpha * (np.exp(x) - 1.0))


FORWARD: dict[str, Forward] = {
    "Sigmoid": sigmoid,
    "Tanh": np.tanh,
    "Softplus": softplus,
    "Softsign": lambda x: x / (1.0 + np.abs(x)),
    "Erf": _erf,
    "Gelu": gelu,
    "GeluTanh": gelu_tanh,
    "Mish": lambda x: x * np.tanh(softplus(x)),
    "Swish": lambda x: x * sigmoid(x),
    "Swish2": lambda x: x * sigmoid(2.0 * x),
    "Elu": elu(0.7),
    "Selu": lambda x: 1.0507 * np.where(x > 0, x, 1.6733 * (np.exp(x) - 1.0)),
    "Celu": lambda x: np.maximum(0, x) + np.minimum(0, 0.5 * (np.exp(x / 0.5) - 1.0)),
    "HardSwish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "HardSigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
}


def derivative(f: Forward, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central difference in float64 (the inputs stay away from kinks)."""
    x = np.asarray(x, F64)
    return (f(x + h) - f(x - h)) / (2 * h)


def expected(mode: str, signal: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """The three rules for one activation with derivative ``slope`` at the forward input."""
    signal = np.asarray(signal, F64)
    if mode == "deconvnet":
        out = np.maximum(signal, 0.0)
    elif mode == "guided":
        out = np.maximum(signal, 0.0) * (slope > 0)
    else:
        out = signal * slope
    return out.astype(np.float32)


def _three_modes(
    case_id: str, model: onnx.ModelProto, x: np.ndarray, slope: np.ndarray
) -> list[rc.GoldenCase]:
    signal = rc.arr(SIGNAL).reshape(1, *x.shape[1:])
    return [
        rc.GoldenCase(f"{case_id}_{mode}", model, x, signal, expected(mode, signal, slope), mode)
        for mode in RULES
    ]


def _x() -> np.ndarray:
    return rc.arr(X_VALUES).reshape(1, 1, 2, 4)


def _op(op: str, opset: int = 13, inits: dict[str, Any] | None = None, **attrs: Any) -> Any:
    extra = list(inits or {})
    return rc.make_model(
        [rc.node(op, ["x", *extra], ["y"], **attrs)], (1, 2, 4), inits, opset=opset
    )


# --------------------------------------------------------------------------------------------
# Golden cases
# --------------------------------------------------------------------------------------------


def _golden_smooth() -> dict[str, list[rc.GoldenCase]]:
    x = _x()
    smooth = {
        "Sigmoid": [("sigmoid", _op("Sigmoid"), "Sigmoid")],
        "Tanh": [("tanh", _op("Tanh"), "Tanh")],
        "Softplus": [("softplus", _op("Softplus"), "Softplus")],
        "Softsign": [("softsign", _op("Softsign"), "Softsign")],
        "Erf": [("erf", _op("Erf"), "Erf")],
        "Gelu": [
            ("gelu_op", _op("Gelu", 20), "Gelu"),
            ("gelu_op_tanh", _op("Gelu", 20, approximate="tanh"), "GeluTanh"),
        ],
        "Mish": [("mish_op", _op("Mish", 18), "Mish")],
        "Swish": [("swish_op_alpha2", _op("Swish", 24, alpha=2.0), "Swish2")],
        "Selu": [("selu", _op("Selu", alpha=1.6733, gamma=1.0507), "Selu")],
        "Celu": [("celu", _op("Celu", 12, alpha=0.5), "Celu")],
    }
    table: dict[str, list[rc.GoldenCase]] = {}
    for op, rows in smooth.items():
        table[op] = []
        for case_id, model, formula in rows:
            slope = derivative(FORWARD[formula], x)
            table[op] += _three_modes(case_id, model, x, slope)
    return table


def _golden_kinks() -> dict[str, list[rc.GoldenCase]]:
    """Piecewise activations, with inputs on the kinks and literal slopes there."""
    # Clip(0, 6) (ReLU6): slope 1 strictly inside, 0 at and beyond both bounds.
    x_clip = rc.arr([[[[-1, 0, 3, 6], [7, 0.5, 5.9, -0.1]]]])
    clip_slope = np.array([[[[0, 0, 1, 0], [0, 1, 1, 0]]]], F64)
    bounds = {"lo": rc.arr(0.0), "hi": rc.arr(6.0)}
    clip_min_only = rc.make_model(
        [rc.node("Clip", ["x", "lo", ""], ["y"])], (1, 2, 4), {"lo": rc.arr(0.0)}
    )
    clip_attrs = rc.make_model(
        [rc.node("Clip", ["x"], ["y"], min=0.0, max=6.0)], (1, 2, 4), opset=6
    )
    # LeakyRelu(0.1): slope 0.1 at 0 (PyTorch's convention), 1 above.
    x_leaky = rc.arr([[[[-2, 0, 1, 3], [-0.5, 0.25, -4, 0]]]])
    leaky_slope = np.where(x_leaky > 0, 1.0, 0.1)
    # PRelu with a per-channel slope [C, 1, 1], one negative slope: guided closes there.
    x_prelu = rc.arr([[[[-2, 1]], [[-3, 4]], [[0, -1]]]])  # [1, 3, 1, 2]
    prelu_slope = rc.arr([0.25, -0.5, 2.0]).reshape(3, 1, 1)
    prelu_model = rc.make_model(
        [rc.node("PRelu", ["x", "slope"], ["y"])], (3, 1, 2), {"slope": prelu_slope}
    )
    prelu_expected_slope = np.where(x_prelu > 0, 1.0, prelu_slope)
    prelu_signal = rc.arr([[[[1, -2]], [[3, 4]], [[5, 6]]]])
    # Elu(0.7): slope alpha * exp(x) at and below 0.
    x_elu = rc.arr([[[[-2, 0, 1, 3], [-0.5, 0.25, -4, 2]]]])
    elu_slope = np.where(x_elu > 0, 1.0, 0.7 * np.exp(x_elu.astype(F64)))
    # HardSigmoid(1/6, 1/2): slope 1/6 strictly inside (-3, 3).
    x_hard = rc.arr([[[[-4, -3, 0, 2.5], [3, 3.5, -1, 1]]]])
    hard_slope = np.where((x_hard > -3) & (x_hard < 3), 1 / 6, 0.0)
    # HardSwish: 0 below -3, x / 3 + 1/2 on [-3, 3] (-0.5 at -3 and 1.5 at 3), 1 above.
    x_swish = rc.arr([[[[-4, -3, -2, -1], [0, 2, 3, 4]]]])
    swish_slope = np.array([[[[0, -0.5, -1 / 6, 1 / 6], [0.5, 7 / 6, 1.5, 1]]]], F64)
    return {
        "Clip": _three_modes("clip_relu6", _op("Clip", 13, bounds), x_clip, clip_slope)
        + _three_modes(
            "clip_min_only",
            clip_min_only,
            x_clip,
            np.where(x_clip > 0, 1.0, 0.0),
        )
        + _three_modes("clip_opset6_attributes", clip_attrs, x_clip, clip_slope),
        "LeakyRelu": _three_modes("leaky", _op("LeakyRelu", alpha=0.1), x_leaky, leaky_slope),
        "PRelu": [
            rc.GoldenCase(
                f"prelu_channels_{mode}",
                prelu_model,
                x_prelu,
                prelu_signal,
                expected(mode, prelu_signal, prelu_expected_slope),
                mode,
            )
            for mode in RULES
        ],
        "Elu": _three_modes("elu_at_zero", _op("Elu", alpha=0.7), x_elu, elu_slope),
        "HardSigmoid": _three_modes(
            "hardsigmoid_torch",
            _op("HardSigmoid", alpha=1 / 6, beta=0.5),
            x_hard,
            hard_slope,
        ),
        "HardSwish": _three_modes("hardswish_op", _op("HardSwish", 14), x_swish, swish_slope),
    }


# --------------------------------------------------------------------------------------------
# Composite activations as exporters write them (fused into one node by the builder)
# --------------------------------------------------------------------------------------------

N = rc.node


def _c(value: float) -> np.ndarray:
    return rc.arr(value)


def composite_models() -> dict[str, tuple[str, onnx.ModelProto, str]]:
    """Case id -> (fused op, model with the composite from ``x`` to ``y``, forward formula)."""
    sqrt2 = _c(math.sqrt(2.0))
    return {
        # torch SiLU, both exporters
        "silu": (
            "Swish",
            rc.make_model([N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["y"])], (1, 2, 4)),
            "Swish",
        ),
        # Swish with beta, the sigmoid's argument scaled first (operands swapped)
        "swish_beta2": (
            "Swish",
            rc.make_model(
                [
                    N("Mul", ["two", "x"], ["bx"]),
                    N("Sigmoid", ["bx"], ["s"]),
                    N("Mul", ["s", "x"], ["y"]),
                ],
                (1, 2, 4),
                {"two": _c(2.0)},
            ),
            "Swish2",
        ),
        # torch HardSwish at opset < 14 (legacy exporter)
        "hardswish_hardsigmoid": (
            "HardSwish",
            rc.make_model(
                [
                    N("HardSigmoid", ["x"], ["h"], alpha=1 / 6),
                    N("Mul", ["x", "h"], ["y"]),
                ],
                (1, 2, 4),
            ),
            "HardSwish",
        ),
        # older exports: x * clip(x + 3, 0, 6) / 6
        "hardswish_clip_div6": (
            "HardSwish",
            rc.make_model(
                [
                    N("Add", ["x", "three"], ["x3"]),
                    N("Clip", ["x3", "zero", "six"], ["c"]),
                    N("Mul", ["x", "c"], ["xc"]),
                    N("Div", ["xc", "six"], ["y"]),
                ],
                (1, 2, 4),
                {"three": _c(3.0), "zero": _c(0.0), "six": _c(6.0)},
            ),
            "HardSwish",
        ),
        "hardsigmoid_clip_div6": (
            "HardSigmoid",
            rc.make_model(
                [
                    N("Add", ["x", "three"], ["x3"]),
                    N("Clip", ["x3", "zero", "six"], ["c"]),
                    N("Mul", ["c", "sixth"], ["y"]),
                ],
                (1, 2, 4),
                {"three": _c(3.0), "zero": _c(0.0), "six": _c(6.0), "sixth": _c(1 / 6)},
            ),
            "HardSigmoid",
        ),
        # torch GELU, legacy exporter: ((x * (erf(x / sqrt 2) + 1)) * 0.5
        "gelu_erf_legacy": (
            "Gelu",
            rc.make_model(
                [
                    N("Div", ["x", "sqrt2"], ["d"]),
                    N("Erf", ["d"], ["e"]),
                    N("Add", ["e", "one"], ["a"]),
                    N("Mul", ["x", "a"], ["m"]),
                    N("Mul", ["m", "half"], ["y"]),
                ],
                (1, 2, 4),
                {"sqrt2": sqrt2, "one": _c(1.0), "half": _c(0.5)},
            ),
            "Gelu",
        ),
        # torch GELU, dynamo exporter: x * (0.5 * (erf(x / sqrt 2) + 1))
        "gelu_erf_dynamo": (
            "Gelu",
            rc.make_model(
                [
                    N("Div", ["x", "sqrt2"], ["d"]),
                    N("Erf", ["d"], ["e"]),
                    N("Add", ["e", "one"], ["a"]),
                    N("Mul", ["half", "a"], ["h"]),
                    N("Mul", ["x", "h"], ["y"]),
                ],
                (1, 2, 4),
                {"sqrt2": sqrt2, "one": _c(1.0), "half": _c(0.5)},
            ),
            "Gelu",
        ),
        # torch GELU(approximate="tanh"), legacy: cube as x * (x * x)
        "gelu_tanh_legacy": (
            "Gelu",
            rc.make_model(
                [
                    N("Mul", ["x", "x"], ["sq"]),
                    N("Mul", ["x", "sq"], ["cube"]),
                    N("Mul", ["kappa", "cube"], ["kc"]),
                    N("Add", ["x", "kc"], ["u"]),
                    N("Mul", ["k", "u"], ["v"]),
                    N("Tanh", ["v"], ["t"]),
                    N("Add", ["one", "t"], ["a"]),
                    N("Mul", ["x", "a"], ["m"]),
                    N("Mul", ["half", "m"], ["y"]),
                ],
                (1, 2, 4),
                {
                    "kappa": _c(0.044715),
                    "k": _c(math.sqrt(2 / math.pi)),
                    "one": _c(1.0),
                    "half": _c(0.5),
                },
            ),
            "GeluTanh",
        ),
        # dynamo: cube as Pow(x, 3)
        "gelu_tanh_pow": (
            "Gelu",
            rc.make_model(
                [
                    N("Pow", ["x", "three"], ["cube"]),
                    N("Mul", ["kappa", "cube"], ["kc"]),
                    N("Add", ["x", "kc"], ["u"]),
                    N("Mul", ["k", "u"], ["v"]),
                    N("Tanh", ["v"], ["t"]),
                    N("Add", ["t", "one"], ["a"]),
                    N("Mul", ["half", "a"], ["h"]),
                    N("Mul", ["x", "h"], ["y"]),
                ],
                (1, 2, 4),
                {
                    "three": _c(3.0),
                    "kappa": _c(0.044715),
                    "k": _c(math.sqrt(2 / math.pi)),
                    "one": _c(1.0),
                    "half": _c(0.5),
                },
            ),
            "GeluTanh",
        ),
        # torch Mish, legacy exporter
        "mish_softplus_tanh": (
            "Mish",
            rc.make_model(
                [
                    N("Softplus", ["x"], ["sp"]),
                    N("Tanh", ["sp"], ["t"]),
                    N("Mul", ["x", "t"], ["y"]),
                ],
                (1, 2, 4),
            ),
            "Mish",
        ),
        # torch Softplus(beta=2, threshold=1), dynamo: the linear region as a Where
        "softplus_beta_threshold": (
            "Softplus",
            rc.make_model(
                [
                    N("Mul", ["x", "two"], ["bx"]),
                    N("Softplus", ["bx"], ["sp"]),
                    N("Div", ["sp", "two"], ["spb"]),
                    N("Greater", ["bx", "thr"], ["big"]),
                    N("Where", ["big", "x", "spb"], ["y"]),
                ],
                (1, 2, 4),
                {"two": _c(2.0), "thr": _c(1.0)},
            ),
            "SoftplusBeta2Threshold1",
        ),
        # torch Softsign, both exporters
        "softsign_abs_div": (
            "Softsign",
            rc.make_model(
                [
                    N("Abs", ["x"], ["ab"]),
                    N("Add", ["ab", "one"], ["d"]),
                    N("Div", ["x", "d"], ["y"]),
                ],
                (1, 2, 4),
                {"one": _c(1.0)},
            ),
            "Softsign",
        ),
    }


def _softplus_beta_threshold(x: np.ndarray) -> np.ndarray:
    return np.where(2.0 * x > 1.0, x, softplus(2.0 * x) / 2.0)


FORWARD["SoftplusBeta2Threshold1"] = _softplus_beta_threshold


def _golden_composites() -> dict[str, list[rc.GoldenCase]]:
    # Keep clear of the HardSwish kinks at +-3 and of the Softplus threshold at x = 0.5.
    x = rc.arr([[[[-4.0, -2.5, -1.0, -0.3], [0.2, 0.7, 1.5, 3.5]]]])
    table: dict[str, list[rc.GoldenCase]] = {}
    for case_id, (op, model, formula) in composite_models().items():
        slope = derivative(FORWARD[formula], x)
        table.setdefault(op, []).extend(_three_modes(case_id, model, x, slope))
    return table


# --------------------------------------------------------------------------------------------
# Gates and arithmetic
# --------------------------------------------------------------------------------------------


def se_gate_model(gate_op: str = "Sigmoid", opset: int = 13) -> onnx.ModelProto:
    """Squeeze-excitation: ``y = x * gate(w * mean(x) + b)`` with a per-channel gate."""
    attrs = {"alpha": 1 / 6} if gate_op == "HardSigmoid" else {}
    return rc.make_model(
        [
            N("GlobalAveragePool", ["x"], ["m"]),
            N("Conv", ["m", "w", "b"], ["z"]),
            N(gate_op, ["z"], ["g"], **attrs),
            N("Mul", ["x", "g"], ["y"]),
        ],
        (2, 2, 2),
        {"w": rc.arr([[[[1.0]], [[-2.0]]], [[[0.5]], [[3.0]]]]), "b": rc.arr([0.1, -0.2])},
        opset=opset,
    )


def _golden_mul() -> list[rc.GoldenCase]:
    cases = []
    # Mul by a per-channel constant [C, 1, 1] and by a scalar on the left.
    cases.append(
        rc.GoldenCase(
            "mul_channel_constant",
            rc.one_node("Mul", (2, 1, 2), {"c": rc.arr([[[2.0]], [[-3.0]]])}, ["c"]),
            rc.rand(500, 1, 2, 1, 2),
            rc.batch1([[[1, 2]], [[3, 4]]]),
            rc.batch1([[[2, 4]], [[-9, -12]]]),
        )
    )
    cases.append(
        rc.GoldenCase(
            "mul_scalar_first",
            rc.make_model([N("Mul", ["c", "x"], ["y"])], (1, 2), {"c": rc.arr(0.5)}),
            rc.rand(501, 1, 1, 2),
            rc.batch1([[4, -6]]),
            rc.batch1([[2, -3]]),
        )
    )
    # x [C, 1, 1] broadcast against a constant [1, 2, 2]: the signal is summed over H and W.
    cases.append(
        rc.GoldenCase(
            "mul_input_broadcast",
            rc.one_node("Mul", (2, 1, 1), {"c": rc.arr([[[1, 2], [3, 4]]])}, ["c"]),
            rc.rand(502, 1, 2, 1, 1),
            rc.batch1([[[1, 1], [1, 1]], [[1, 0], [0, -1]]]),
            rc.batch1([[[10]], [[-3]]]),
        )
    )
    # Squeeze-excitation: x [2, 2, 2] times a sigmoid gate g [2, 1, 1] of its channel means.
    x = (np.arange(8, dtype=np.float32) / 4 - 1).reshape(1, 2, 2, 2)
    mean = x.reshape(2, 4).mean(axis=1).astype(F64)
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    z = w @ mean + np.array([0.1, -0.2])
    gate = sigmoid(z)
    signal = rc.arr([[[[1, -2], [3, 0.5]], [[-1, 2], [0.25, -4]]]])
    s64 = signal.astype(F64)[0]
    to_x_gated = s64 * gate.reshape(2, 1, 1)
    # Gradient: the gate branch adds dL/dg = sum over the map of s * x, back through the
    # sigmoid, the 1x1 conv and the mean: d/dx = w^T (g (1 - g) sum(s x)) / 4 everywhere.
    dg = (s64 * x[0].astype(F64)).reshape(2, 4).sum(axis=1)
    dz = dg * gate * (1 - gate)
    dmean = w.T @ dz
    gradient = to_x_gated + (dmean / 4).reshape(2, 1, 1)
    model = se_gate_model()
    for mode, want in (
        ("deconvnet", to_x_gated),
        ("guided", to_x_gated),
        ("gradient", gradient),
    ):
        cases.append(
            rc.GoldenCase(
                f"mul_se_gate_{mode}", model, x, signal, want[None].astype(np.float32), mode
            )
        )
    # Gate marked by broadcasting only (the gate is a plain conv of the mean, no sigmoid).
    plain = rc.make_model(
        [
            N("GlobalAveragePool", ["x"], ["m"]),
            N("Mul", ["m", "x"], ["y"]),
        ],
        (2, 1, 2),
    )
    xp = rc.arr([[[[1, 3]], [[-2, 4]]]])  # means [2, 1]
    sp = rc.arr([[[[1, 1]], [[2, -1]]]])
    cases.append(
        rc.GoldenCase(
            "mul_broadcast_gate_deconvnet",
            plain,
            xp,
            sp,
            rc.arr([[[[2, 2]], [[2, -1]]]]),  # s * mean
        )
    )
    # Gradient: s * mean + (sum of s * x over the map) / 2 everywhere: [4 / 2, (-4 - 4) / 2].
    cases.append(
        rc.GoldenCase(
            "mul_broadcast_gate_gradient",
            plain,
            xp,
            sp,
            rc.arr([[[[4, 4]], [[-2, -5]]]]),
            mode="gradient",
        )
    )
    return cases


def _golden_sub_div() -> dict[str, list[rc.GoldenCase]]:
    both = rc.make_model(
        [N("GlobalAveragePool", ["x"], ["m"]), N("Sub", ["x", "m"], ["y"])], (1, 2, 2)
    )
    return {
        "Neg": [
            rc.GoldenCase(
                "neg",
                rc.one_node("Neg", (1, 2)),
                rc.rand(515, 1, 1, 2),
                rc.batch1([[1, -2]]),
                rc.batch1([[-1, 2]]),
            )
        ],
        "Sub": [
            rc.GoldenCase(
                "sub_constant_right",
                rc.one_node("Sub", (1, 2), {"c": rc.arr([[[5, 6]]])}, ["c"]),
                rc.rand(510, 1, 1, 2),
                rc.batch1([[1, -2]]),
                rc.batch1([[1, -2]]),
            ),
            rc.GoldenCase(
                "sub_constant_left",
                rc.make_model([N("Sub", ["c", "x"], ["y"])], (1, 2), {"c": rc.arr(3.0)}),
                rc.rand(511, 1, 1, 2),
                rc.batch1([[1, -2]]),
                rc.batch1([[-1, 2]]),
            ),
            # y = x - mean(x): dx = s - sum(s) / 4.
            rc.GoldenCase(
                "sub_mean_two_paths",
                both,
                rc.rand(512, 1, 1, 2, 2),
                rc.batch1([[[1, 2], [3, 6]]]),
                rc.batch1([[[-2, -1], [0, 3]]]),
            ),
        ],
        "Div": [
            rc.GoldenCase(
                "div_channel_constant",
                rc.one_node("Div", (2, 1, 1), {"c": rc.arr([[[2.0]], [[-4.0]]])}, ["c"]),
                rc.rand(513, 1, 2, 1, 1),
                rc.batch1([[[1]], [[2]]]),
                rc.batch1([[[0.5]], [[-0.5]]]),
            ),
            rc.GoldenCase(
                "div_scalar_255",
                rc.one_node("Div", (1, 2), {"c": rc.arr(255.0)}, ["c"]),
                rc.rand(514, 1, 1, 2),
                rc.batch1([[255, -510]]),
                rc.batch1([[1, -2]]),
            ),
        ],
    }


def layer_norm_model(eps: float = 0.1) -> onnx.ModelProto:
    """LayerNorm over the last axis as exporters decompose it (statistics from the path)."""
    return rc.make_model(
        [
            N("ReduceMean", ["x"], ["mu"], axes=[-1], keepdims=1),
            N("Sub", ["x", "mu"], ["c"]),
            N("Pow", ["c", "two"], ["c2"]),
            N("ReduceMean", ["c2"], ["var"], axes=[-1], keepdims=1),
            N("Add", ["var", "eps"], ["ve"]),
            N("Sqrt", ["ve"], ["sd"]),
            N("Div", ["c", "sd"], ["y"]),
        ],
        (2, 3),
        {"two": rc.arr(2.0), "eps": rc.arr(eps)},
    )


def _golden_statistics() -> dict[str, list[rc.GoldenCase]]:
    x = rc.arr([[[1.0, 2.0, 4.0], [-1.0, 0.5, 3.0]]])
    signal = rc.arr([[[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]]])
    x64, s64 = x.astype(F64)[0], signal.astype(F64)[0]
    centred = x64 - x64.mean(axis=1, keepdims=True)
    sd = np.sqrt((centred**2).mean(axis=1, keepdims=True) + 0.1)
    y = centred / sd
    scaled = s64 / sd
    # Statistics held at their forward values: divide by sd, then centre (the Sub's transpose).
    frozen = scaled - scaled.mean(axis=1, keepdims=True)
    # The LayerNorm gradient: (s - mean(s) - y mean(s y)) / sd.
    exact = (s64 - s64.mean(axis=1, keepdims=True) - y * (s64 * y).mean(axis=1, keepdims=True)) / sd
    model = layer_norm_model()
    div_cases = [
        rc.GoldenCase(
            f"div_layer_norm_{mode}",
            model,
            x,
            signal,
            (exact if mode == "gradient" else frozen)[None].astype(np.float32),
            mode,
        )
        for mode in RULES
    ]
    xp = rc.arr([[[0.5, 2.0, 4.0]]])
    sp = rc.arr([[[1.0, -2.0, 3.0]]])
    xp64, sp64 = xp.astype(F64), sp.astype(F64)

    def linearised(case_id: str, model: onnx.ModelProto, slope: np.ndarray) -> list[rc.GoldenCase]:
        return [
            rc.GoldenCase(
                f"{case_id}_{mode}", model, xp, sp, (sp64 * slope).astype(np.float32), mode
            )
            for mode in RULES
        ]

    def power(p: float) -> onnx.ModelProto:
        return rc.one_node("Pow", (1, 3), {"p": rc.arr(p)}, ["p"])

    return {
        "Div": div_cases,
        "Sqrt": linearised("sqrt", rc.one_node("Sqrt", (1, 3)), 0.5 / np.sqrt(xp64)),
        "Reciprocal": linearised("reciprocal", rc.one_node("Reciprocal", (1, 3)), -1 / xp64**2),
        "Pow": linearised("pow_square", power(2.0), 2 * xp64)
        + linearised("pow_cube", power(3.0), 3 * xp64**2)
        + linearised("pow_half", power(0.5), 0.5 * xp64**-0.5),
    }


def _build_golden() -> dict[str, list[rc.GoldenCase]]:
    table = _golden_smooth()
    for op, cases in {**_golden_kinks(), **_golden_sub_div()}.items():
        table.setdefault(op, []).extend(cases)
    for op, cases in {**_golden_composites()}.items():
        table.setdefault(op, []).extend(cases)
    for op, cases in _golden_statistics().items():
        table.setdefault(op, []).extend(cases)
    table["Mul"] = _golden_mul()
    return table


# --------------------------------------------------------------------------------------------
# Adjoint cases
# --------------------------------------------------------------------------------------------


def _build_adjoint() -> dict[str, list[rc.AdjointCase]]:
    shape = (3, 4, 5)
    per_channel = rc.rand(520, 3, 1, 1)
    return {
        # Positively homogeneous: f(x) = f'(x) x, so the gradient rule satisfies the identity.
        "LeakyRelu": [
            rc.AdjointCase("leaky_gradient", rc.one_node("LeakyRelu", shape, alpha=0.2), shape)
        ],
        "PRelu": [
            rc.AdjointCase(
                "prelu_gradient",
                rc.one_node("PRelu", shape, {"s": per_channel}, ["s"]),
                shape,
            )
        ],
        "Mul": [
            rc.AdjointCase(
                f"mul_constant_{mode}",
                rc.one_node("Mul", shape, {"c": per_channel}, ["c"]),
                shape,
                mode=mode,
            )
            for mode in RULES
        ]
        + [
            rc.AdjointCase(
                "mul_constant_broadcasts_input",
                rc.one_node("Mul", (3, 1, 5), {"c": rc.rand(521, 4, 1)}, ["c"]),
                (3, 1, 5),
            )
        ],
        "Div": [
            rc.AdjointCase(
                f"div_constant_{mode}",
                rc.one_node("Div", shape, {"c": np.abs(per_channel) + 0.5}, ["c"]),
                shape,
                mode=mode,
            )
            for mode in RULES
        ],
        "Neg": [rc.AdjointCase("neg", rc.one_node("Neg", shape), shape)],
        "Sub": [
            rc.AdjointCase(
                "sub_constant_affine",
                rc.one_node("Sub", shape, {"c": rc.rand(522, 4, 5)}, ["c"]),
                shape,
                affine=True,
            ),
            rc.AdjointCase(
                "sub_constant_left_affine",
                rc.make_model([N("Sub", ["c", "x"], ["y"])], shape, {"c": rc.arr(2.0)}),
                shape,
                affine=True,
            ),
            rc.AdjointCase(
                "sub_two_paths_broadcast",
                rc.make_model(
                    [
                        N("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
                        N("Sub", ["m", "x"], ["y"]),
                    ],
                    shape,
                ),
                shape,
            ),
        ],
    }


def _chains() -> list[rc.AdjointCase]:
    """Preprocessing and affine arithmetic as tf2onnx and Keras write it."""
    shape = (3, 4, 4)
    mean = rc.arr([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = rc.arr([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    preprocess = rc.make_model(
        [
            N("Div", ["x", "scale"], ["scaled"]),
            N("Sub", ["scaled", "mean"], ["centred"]),
            N("Div", ["centred", "std"], ["normed"]),
            N("Mul", ["normed", "gain"], ["gained"]),
            N("Add", ["gained", "x"], ["mixed"]),
            N("Sub", ["offset", "mixed"], ["y"]),
        ],
        shape,
        {
            "scale": rc.arr(255.0),
            "mean": mean,
            "std": std,
            "gain": rc.rand(530, 1, 1, 4),
            "offset": rc.arr(1.0),
        },
    )
    return [rc.AdjointCase("chain_preprocessing_affine", preprocess, shape, affine=True)]


_SMOOTH_REASON = (
    "f is not linear (nor positively homogeneous), so <f(x), y> = <x, J^T y> does not hold; the "
    "gradient rule is checked against a finite-difference derivative (GOLDEN), against torch "
    "autograd and against the frozen model of 'onnxdeconv check' (test_activations.py); "
    "deconvnet and guided are not linear in the signal"
)

_LINEARISED_REASON = (
    "linearised at the forward point in every mode: the rule is linear in the signal, but the "
    "forward map is not linear in x, so <f(x), y> = <x, J^T y> does not hold; GOLDEN checks "
    "the slope and test_activations.py the frozen model of 'onnxdeconv check'"
)

GOLDEN: dict[str, list[rc.GoldenCase]] = _build_golden()
ADJOINT: dict[str, list[rc.AdjointCase]] = _build_adjoint()
CHAINS: list[rc.AdjointCase] = _chains()
NONLINEAR: dict[str, str] = {
    op: _SMOOTH_REASON
    for op in (
        "Clip",
        "Elu",
        "Selu",
        "Celu",
        "HardSigmoid",
        "HardSwish",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softsign",
        "Erf",
        "Gelu",
        "Mish",
        "Swish",
    )
} | {op: _LINEARISED_REASON for op in ("Sqrt", "Pow", "Reciprocal")}
