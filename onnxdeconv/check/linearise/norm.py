"""Linearisers for LRN and InstanceNormalization: the linearisations their rules use.

Both are computed here in float64 numpy from the recorded pass, independently of the rules in
:mod:`onnxdeconv.deconv.rules.norm`, so that ``onnxdeconv check`` compares two implementations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.check.linearise import (
    Linearised,
    elementwise_affine,
    float_attribute,
    lineariser,
)


@lineariser("InstanceNormalization")
def _instance_normalization(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    # The statistics stay at their recorded values: y = gamma (x - mean0) / sqrt(var0 + eps) + b.
    x0 = np.asarray(values[node.input[0]], np.float64)
    gamma = np.asarray(values[node.input[1]], np.float64)
    axes = tuple(range(2, x0.ndim))
    variance = x0.var(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x0.ndim - 2)
    slope = gamma.reshape(shape) / np.sqrt(variance + float_attribute(node, "epsilon", 1e-5))
    return elementwise_affine(node, slope, values)


@lineariser("LRN")
def _lrn(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    # y = y0 + J(x0) (x - x0), with J(x0) d = d / D^beta - x0 beta D^(-beta-1) (2 alpha / size)
    # (window sum of x0 d), D = bias + alpha / size * (window sum of x0^2).
    x0 = np.asarray(values[node.input[0]], np.float64)
    y0 = np.asarray(values[node.output[0]], np.float64)
    size = int(float_attribute(node, "size", 0))
    alpha, beta = float_attribute(node, "alpha", 1e-4), float_attribute(node, "beta", 0.75)
    bias = float_attribute(node, "bias", 1.0)
    channels = x0.shape[1]
    window = np.zeros((channels, channels))
    for c in range(channels):
        low = max(0, c - (size - 1) // 2)
        high = min(channels - 1, c + math.ceil((size - 1) / 2))
        window[c, low : high + 1] = 1.0
    flat = x0.reshape(x0.shape[0], channels, -1)
    denominator = (bias + alpha / size * np.einsum("ck,nkl->ncl", window, flat**2)).reshape(
        x0.shape
    )
    direct = denominator**-beta
    cross = x0 * beta * denominator ** (-beta - 1) * (2 * alpha / size)
    stem = f"{node.output[0]}__frozen"
    linearised = Linearised()
    flat_shape = linearised.constant(np.array([x0.shape[0], channels, -1]), f"{stem}_flat")
    linearised.nodes = [
        helper.make_node(
            "Sub", [node.input[0], linearised.constant(x0, f"{stem}_x0")], [f"{stem}_d"]
        ),
        helper.make_node(
            "Mul", [f"{stem}_d", linearised.constant(x0, f"{stem}_x0m")], [f"{stem}_xd"]
        ),
        helper.make_node("Reshape", [f"{stem}_xd", flat_shape], [f"{stem}_xd_flat"]),
        helper.make_node(
            "MatMul",
            [linearised.constant(window, f"{stem}_window"), f"{stem}_xd_flat"],
            [f"{stem}_ws_flat"],
        ),
        helper.make_node(
            "Reshape",
            [f"{stem}_ws_flat", linearised.constant(np.array(x0.shape), f"{stem}_shape")],
            [f"{stem}_ws"],
        ),
        helper.make_node(
            "Mul", [f"{stem}_ws", linearised.constant(cross, f"{stem}_cross")], [f"{stem}_c"]
        ),
        helper.make_node(
            "Mul", [f"{stem}_d", linearised.constant(direct, f"{stem}_direct")], [f"{stem}_a"]
        ),
        helper.make_node("Sub", [f"{stem}_a", f"{stem}_c"], [f"{stem}_jd"]),
        linearised.output_sum(node, f"{stem}_jd", y0, f"{stem}_y0"),
    ]
    return linearised
