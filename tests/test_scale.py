"""Cost that grows with the model, counted rather than timed.

Listing the layers of an N-node chain used to build one deconv graph per layer (N^2/2 node
transposes) and to probe fresh names one suffix at a time (quadratic too). These tests count
the work, so that a quadratic path cannot come back without a failure, whatever the machine.
Large weights are held once, as arrays that the forward and deconv sessions are given, rather
than copied into every graph built from the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import load_model, prepare
from onnxdeconv.deconv import builder
from onnxdeconv.deconv.emitter import DeconvGraph
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.passes import is_detached
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.projector import Projector


def chain(blocks: int, blocked_at: int | None = None) -> onnx.ModelProto:
    """Conv -> Relu blocks on a 2-channel 6x6 map, with a MaxPool every third block.

    ``blocked_at``: put a Sin (which has no transpose rule) after that block.
    """
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "input"
    for index in range(blocks):
        name = f"w{index}"
        weights.append(numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3), np.float32), name))
        nodes.append(helper.make_node("Conv", [x, name], [f"c{index}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        x = f"r{index}"
        if index % 3 == 2:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"p{index}"], kernel_shape=[3, 3], pads=[1] * 4)
            )
            x = f"p{index}"
        if index == blocked_at:
            nodes.append(helper.make_node("Sin", [x], [f"s{index}"]))
            x = f"s{index}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 2, 6, 6])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def count_work(
    monkeypatch: pytest.MonkeyPatch, prepared: PreparedModel
) -> tuple[list[str], dict[str, int]]:
    """Run ``layers()`` and count full deconv builds and node transposes."""
    counts = {"builds": 0, "transposes": 0}
    build, transpose = builder.build_deconv, builder._Transposer.transpose

    def counting_build(*args: object, **kwargs: object) -> builder.DeconvPlan:
        counts["builds"] += 1
        return build(*args, **kwargs)  # type: ignore[arg-type]

    def counting_transpose(self: builder._Transposer, node: onnx.NodeProto) -> None:
        counts["transposes"] += 1
        transpose(self, node)

    monkeypatch.setattr("onnxdeconv.prepared.build_deconv", counting_build)
    monkeypatch.setattr(builder._Transposer, "transpose", counting_transpose)
    reasons = [row.reason for row in prepared.layers()]
    return reasons, counts


@pytest.mark.parametrize("blocks", [6, 24])
def test_layers_of_a_chain_transpose_each_node_once(
    monkeypatch: pytest.MonkeyPatch, blocks: int
) -> None:
    prepared = prepare(load_model(chain(blocks)))
    nodes = len(prepared.graph.node)
    reasons, counts = count_work(monkeypatch, prepared)
    assert len(reasons) == nodes and not any(reasons)
    assert counts["builds"] == 0
    assert counts["transposes"] == nodes


@pytest.mark.parametrize("blocks", [6, 24])
def test_layers_behind_an_unsupported_node_build_once_per_block(
    monkeypatch: pytest.MonkeyPatch, blocks: int
) -> None:
    prepared = prepare(load_model(chain(blocks, blocked_at=1)))
    nodes = len(prepared.graph.node)
    reasons, counts = count_work(monkeypatch, prepared)
    counted = dict(counts)
    blocked = [reason for reason in reasons if reason]
    # Every layer from the Sin on is blocked by it, with the message a build gives.
    assert len(blocked) == nodes - 4
    assert len(set(blocked)) == 1 and "(Sin)" in blocked[0]
    with pytest.raises(OnnxDeconvError) as caught:
        prepare(load_model(chain(blocks, blocked_at=1))).plan(prepared.candidates[-1])
    assert str(caught.value) == blocked[0]
    # One walk, one build for the message, and one for its nearest projectable layer (relu2),
    # the same for a chain four times longer.
    assert counted["builds"] == 2
    assert counted["transposes"] <= nodes + 2 * 5


class CountingSet(set[str]):
    """A set that counts membership probes."""

    probes = 0

    def __contains__(self, item: object) -> bool:
        CountingSet.probes += 1
        return super().__contains__(item)


def test_fresh_names_probe_each_suffix_once() -> None:
    graph = DeconvGraph((1,), {})
    graph._names = CountingSet(graph._names)
    names = [graph.fresh("convt") for _ in range(500)]
    assert names[:3] == ["convt", "convt_1", "convt_2"] and len(set(names)) == 500
    assert CountingSet.probes <= 2 * 500


def dense_model() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> MatMul -> Relu, whose MatMul weight (1.25 MB) is shared."""
    rng = np.random.default_rng(1)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3), np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal((2048, 160), np.float32) * 0.05, "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["fc"]),
        helper.make_node("Relu", ["fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 160])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def projections(model: onnx.ModelProto) -> tuple[Projector, np.ndarray]:
    projector = Projector(model, layer="y", device="cpu")
    images = np.random.default_rng(2).random((2, 4, 16, 16), dtype=np.float32)
    forward = projector.forward(images)
    return projector, projector.project(forward, projector.strongest(forward, top=3))


def test_a_large_weight_is_held_once_and_shared_by_both_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    projector, projected = projections(dense_model())
    held = projector.prepared.constants["w2"]
    # The deconv graph names the forward weight, and neither graph carries its data.
    (tied,) = projector.plan.weights.values()
    assert np.shares_memory(tied, held)
    for graph in (projector.plan.model.graph, projector.runner.model.graph):
        (stored,) = [t for t in graph.initializer if t.name in ("w2", *projector.plan.weights)]
        assert is_detached(stored) and not stored.raw_data
    # The same projections as with every weight inside the graphs.
    monkeypatch.setattr("onnxdeconv.deconv.emitter.SHARED_WEIGHT_BYTES", 1 << 62)
    monkeypatch.setattr("onnxdeconv.graph.passes.SHARED_WEIGHT_BYTES", 1 << 62)
    inline, expected = projections(dense_model())
    assert not inline.plan.weights and not any(
        is_detached(t) for t in inline.runner.model.graph.initializer
    )
    assert np.any(expected) and np.array_equal(projected, expected)
    # A self-contained copy holds the data again, for export and other runtimes.
    contained = projector.plan.self_contained()
    assert not any(is_detached(t) for t in contained.graph.initializer)


def test_a_session_that_cannot_read_weights_in_place_copies_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, shared = projections(dense_model())
    # Without the placeholder file, reading in place fails as a graph optimizer that reads
    # the data would; the session is made again with the weights copied in.
    monkeypatch.setattr("onnxdeconv.runtime.sessions._placeholder_folder", lambda: str(tmp_path))
    _, copied = projections(dense_model())
    assert np.any(shared) and np.array_equal(shared, copied)
