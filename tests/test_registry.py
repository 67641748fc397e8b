"""The per-op tables: one registry class, and an entry in each table for every op.

Adding an op means one transpose rule, one receptive-field entry, one lineariser (or a reason
why the op is affine) and one golden test. The golden test and the adjoint case are enforced by
``test_rules.py::test_every_rule_is_covered``; the other tables are enforced here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Collection
from pathlib import Path

import pytest

from onnxdeconv.check.linearise import LINEARISERS
from onnxdeconv.deconv.rules import TRANSPOSE_RULES, transpose_rule
from onnxdeconv.graph.receptive_field.field import FIELD_RULES
from onnxdeconv.registry import DuplicateOpError, OpRegistry

#: Ops with a transpose rule and no lineariser, with the reason ``check`` needs none: the
#: forward map is affine in the path input (constants held), or linearise() handles it itself.
AFFINE: dict[str, str] = {
    **dict.fromkeys(
        ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"),
        "linear in the path input; the weights are constants (one input on the path)",
    ),
    **dict.fromkeys(("Add", "Sub", "Neg"), "linear"),
    **dict.fromkeys(("AveragePool", "GlobalAveragePool", "ReduceMean"), "a mean: linear"),
    **dict.fromkeys(
        ("Resize", "Upsample"), "interpolation weights fixed by the constant scales: linear"
    ),
    **dict.fromkeys(
        (
            *("Concat", "Split", "Slice", "Pad", "Tile", "Expand", "Transpose"),
            *("Reshape", "Flatten", "Squeeze", "Unsqueeze"),
        ),
        "moves or copies values (Pad adds a constant): affine",
    ),
    **dict.fromkeys(
        ("Identity", "Dropout", "Cast", "CastLike"),
        "the identity at inference (Cast: on the float path)",
    ),
    "MaxPool": "piecewise linear: linearise() gathers at the recorded switches itself",
}

#: Ops with a lineariser and no transpose rule, with the reason.
LINEARISED_WITHOUT_RULE: dict[str, str] = {
    "Abs": "inside composite activations (Softsign's |x|), which the deconv graph fuses into "
    "one rule; check linearises the forward graph op by op",
    "Where": "inside composite activations (ELU, SELU as exported by dynamo), fused likewise",
}


def missing_entries(
    rules: Collection[str], linearisers: Collection[str], fields: Collection[str]
) -> list[str]:
    """What the tables lack; empty when every op has its entry in each."""
    problems = [f"{op}: no receptive-field entry" for op in sorted(set(rules) - set(fields))]
    problems += [
        f"{op}: no lineariser and not listed in AFFINE"
        for op in sorted(set(rules) - set(linearisers) - set(AFFINE))
    ]
    problems += [
        f"{op}: has a lineariser but is listed in AFFINE"
        for op in sorted(set(linearisers) & set(AFFINE))
    ]
    problems += [f"{op}: in AFFINE but has no rule" for op in sorted(set(AFFINE) - set(rules))]
    problems += [
        f"{op}: lineariser without a rule, not listed in LINEARISED_WITHOUT_RULE"
        for op in sorted(set(linearisers) - set(rules) - set(LINEARISED_WITHOUT_RULE))
    ]
    problems += [
        f"{op}: lineariser without a receptive-field entry"
        for op in sorted(set(linearisers) - set(fields))
    ]
    return problems


# --- the tables agree ------------------------------------------------------------------------


def test_every_op_has_its_entry_in_each_table() -> None:
    assert missing_entries(TRANSPOSE_RULES, LINEARISERS, FIELD_RULES) == []
    assert all(reason.strip() for reason in (*AFFINE.values(), *LINEARISED_WITHOUT_RULE.values()))
    assert set(LINEARISED_WITHOUT_RULE).isdisjoint(TRANSPOSE_RULES)


def test_meta_test_notices_an_op_without_its_entries() -> None:
    rules = {*TRANSPOSE_RULES, "Exp"}
    assert missing_entries(rules, LINEARISERS, FIELD_RULES) == [
        "Exp: no receptive-field entry",
        "Exp: no lineariser and not listed in AFFINE",
    ]
    assert missing_entries(rules, {*LINEARISERS, "Exp"}, {*FIELD_RULES, "Exp"}) == []
    assert missing_entries(TRANSPOSE_RULES, {*LINEARISERS, "Conv"}, FIELD_RULES) == [
        "Conv: has a lineariser but is listed in AFFINE"
    ]
    assert "Relu: no lineariser and not listed in AFFINE" in missing_entries(
        TRANSPOSE_RULES, set(LINEARISERS) - {"Relu"}, FIELD_RULES
    )


# --- the registry itself ---------------------------------------------------------------------


def test_registry_rejects_a_second_entry_for_an_op() -> None:
    table: OpRegistry[int] = OpRegistry("number")
    table.register("A", "B")(1)
    with pytest.raises(DuplicateOpError, match="two numbers for B"):
        table.register("C", "B")(2)
    with pytest.raises(DuplicateOpError, match="two numbers for D"):
        table.register("D", "D")(3)
    assert table.ops() == ["A", "B"]  # a clash registers none of the ops
    assert table["B"] == 1


def test_a_second_transpose_rule_is_rejected() -> None:
    conv = TRANSPOSE_RULES["Conv"]
    with pytest.raises(DuplicateOpError, match="two transpose rules for Conv"):
        transpose_rule("Conv")(lambda ctx, signal: {0: signal})
    assert TRANSPOSE_RULES["Conv"] is conv


def test_registry_reads_like_a_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    table: OpRegistry[str] = OpRegistry("word")
    table.register("B")("bee")
    table.register("A")("ay")
    assert "A" in table and "Z" not in table
    assert table.get("Z") is None and table.get("Z", "zed") == "zed"
    assert sorted(table) == table.ops() == ["A", "B"]
    assert len(table) == 2 and dict(table) == {"A": "ay", "B": "bee"}
    # Tests replace an entry, or add one, for a while.
    monkeypatch.setitem(table, "A", "other")
    monkeypatch.setitem(table, "C", "sea")
    assert table["A"] == "other" and table["C"] == "sea"
    monkeypatch.undo()
    assert dict(table) == {"A": "ay", "B": "bee"}


def test_registry_imports_its_package_on_first_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fake_ops"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from onnxdeconv.registry import OpRegistry\n"
        "TABLE = OpRegistry('thing', __name__)\n"
        "thing = TABLE.register\n"
    )
    (package / "first.py").write_text("from fake_ops import thing\nthing('A')(1)\n")
    # A module that reads the table while it loads sees the entries so far, without a loop.
    (package / "second.py").write_text(
        "from fake_ops import TABLE, thing\nthing('B')(2)\nSEEN = 'B' in TABLE\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_ops  # type: ignore[import-not-found]

    try:
        assert "fake_ops.first" not in sys.modules
        assert fake_ops.TABLE.ops() == ["A", "B"]
        assert sys.modules["fake_ops.second"].SEEN
    finally:
        for name in ("fake_ops", "fake_ops.first", "fake_ops.second"):
            sys.modules.pop(name, None)


def test_each_family_module_imports_first_without_a_cycle() -> None:
    # Before the registry, importing a lineariser module first went through an import at the
    # bottom of its parent: a cycle. Each table must be whole whichever module comes first.
    code = textwrap.dedent(
        """
        import onnxdeconv.check.linearise.norm
        import onnxdeconv.graph.receptive_field.conv
        import onnxdeconv.deconv.rules.pool
        from onnxdeconv.check.linearise import LINEARISERS
        from onnxdeconv.deconv.rules import TRANSPOSE_RULES
        from onnxdeconv.graph.receptive_field.field import FIELD_RULES
        print(len(LINEARISERS), len(TRANSPOSE_RULES), len(FIELD_RULES))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    counts = [int(n) for n in result.stdout.split()]
    assert counts == [len(LINEARISERS), len(TRANSPOSE_RULES), len(FIELD_RULES)]
