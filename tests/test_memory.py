"""The memory budget: how many rows a deconv run carries, and that runs in parts change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DIGIT_7, DIGITNET
from helpers import run
from onnx import TensorProto, helper
from test_window import CHAINS, chain_model

from onnxdeconv import Projector
from onnxdeconv import projector as projector_module
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.runtime import memory
from onnxdeconv.runtime.memory import (
    HELD_PER_PLANNED,
    bytes_per_row,
    memory_budget,
    parse_size,
    rows_per_run,
    run_sizes,
)


def relu_chain() -> onnx.ModelProto:
    """signal [K, 2, 3] -> Relu -> Relu -> Identity, plus a forward input [N, 5] that stays."""
    nodes = [
        helper.make_node("Relu", ["signal"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["b", "per_image"], ["c"]),
        helper.make_node("Identity", ["c"], ["projection"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["K", 2, 3]),
            helper.make_tensor_value_info("per_image", TensorProto.FLOAT, ["N", 1, 1]),
        ],
        [helper.make_tensor_value_info("projection", TensorProto.FLOAT, ["K", 2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bytes_per_row_is_the_largest_set_of_live_row_tensors() -> None:
    # By hand: one row of each tensor is 2 * 3 float32 = 24 bytes. While the second Relu runs,
    # a and b are live (48); then b and c (48); then c and projection (48). Inputs are not
    # counted (they are the caller's), nor the per-image tensor.
    assert bytes_per_row(relu_chain()) == 48


def test_rows_per_run_shares_the_budget_out() -> None:
    assert rows_per_run(int(48 * HELD_PER_PLANNED * 10), 48) == 10
    assert rows_per_run(int(48 * HELD_PER_PLANNED * 10) - 1, 48) == 9
    assert rows_per_run(1, 48) == 1  # always at least one row


def test_run_sizes_are_even_and_within_the_limit() -> None:
    assert run_sizes(5, 10) == [5]
    assert run_sizes(10, 10) == [10]
    assert run_sizes(11, 10) == [6, 5]
    assert run_sizes(256, 100) == [86, 85, 85]
    assert run_sizes(7, 1) == [1] * 7
    for rows in range(1, 60):
        for most in range(1, 20):
            sizes = run_sizes(rows, most)
            assert sum(sizes) == rows and max(sizes) <= most
            assert max(sizes) - min(sizes) <= 1 and len(sizes) == -(-rows // most)


def test_sizes_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_size("512M") == 512 << 20
    assert parse_size("1.5GB") == 3 << 29
    assert parse_size("2g") == 2 << 30
    assert parse_size("1000") == 1000
    for wrong in ("", "-1G", "1X", "0", "lots"):
        with pytest.raises(OnnxDeconvError, match="memory budget") as caught:
            parse_size(wrong)
        assert caught.value.parameter == "memory_budget"
    monkeypatch.delenv(memory.MEMORY_BUDGET_ENV, raising=False)
    assert memory_budget() == memory.DEFAULT_MEMORY_BUDGET
    monkeypatch.setenv(memory.MEMORY_BUDGET_ENV, "64M")
    assert memory_budget() == 64 << 20
    assert memory_budget("1G") == 1 << 30  # the caller's wins
    assert memory_budget(12345) == 12345


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_projections_in_parts_equal_one_run(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    specs, shape = CHAINS["zfnet_like"]
    model = chain_model(specs, shape)
    x = np.random.default_rng(5).normal(size=(2, *shape)).astype(np.float32)
    whole = Projector(model, layer="relu4", rule=rule, device="cpu", memory_budget="8G")
    forward = whole.forward(x)
    picks = whole.strongest(forward, top=4) + whole.strongest(forward, top=3, image=1)
    signal = whole.signal(forward, picks)
    images = [p.image for p in picks]
    assert whole.windowed is not None
    # A budget of three rows of the windowed graph, and of two rows of the dense one.
    windowed_rows = bytes_per_row(whole.windowed[0].model)
    dense_rows = bytes_per_row(whole.plan.model)
    small = Projector(model, layer="relu4", rule=rule, device="cpu")
    small.memory_budget = int(3 * HELD_PER_PLANNED * windowed_rows)
    assert small.rows_per_run(small.windowed[0]) == 3
    runs = []
    real_run = projector_module.run_bound

    def counted(session, feeds, outputs, to_host):  # type: ignore[no-untyped-def]
        runs.append(len(feeds["signal"]))
        return real_run(session, feeds, outputs, to_host)

    monkeypatch.setattr(projector_module, "run_bound", counted)
    crops = small.project_crops(forward, picks)
    assert runs == [3, 2, 2]
    expected = whole.project_crops(forward, picks)
    np.testing.assert_array_equal(crops.offsets, expected.offsets)
    np.testing.assert_allclose(crops.crops, expected.crops, rtol=1e-6, atol=0)
    runs.clear()
    small.memory_budget = int(2 * HELD_PER_PLANNED * dense_rows)
    dense = small.project_signal(forward, signal, images)
    assert runs == [2, 2, 2, 1]
    np.testing.assert_allclose(
        dense, whole.project_signal(forward, signal, images), rtol=1e-6, atol=0
    )


def test_the_command_line_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, parts = tmp_path / "whole.npy", tmp_path / "parts.npy"
    base = ["project", DIGITNET, DIGIT_7, "--layer", "relu2", "--top", "6", "-o"]
    assert run([*base, whole], capsys)[0] == 0
    # 1K holds less than one row of DigitNet's relu2 graph: six runs of one row.
    assert run([*base, parts, "--memory-budget", "1K"], capsys)[0] == 0
    np.testing.assert_allclose(np.load(parts), np.load(whole), rtol=1e-6, atol=0)
    code, _, err = run([*base, tmp_path / "x.npy", "--memory-budget", "lots"], capsys)
    assert code == 2 and "memory budget 'lots'" in err and "--memory-budget" in err
