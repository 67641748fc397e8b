"""A copy of a model that declares its preprocessing and class names in its metadata.

Two metadata entries, both JSON strings, which every command reads when no option overrides them:

- ``onnxdeconv.preprocess`` (:data:`onnxdeconv.inputs.METADATA_KEY`):
  ``{"scale": 1.0, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0], "bgr": true}``, meaning
  ``value = (pixel * scale - mean) / std`` per channel on 0-255 pixels, mean and std in the model's
  channel order (BGR when ``bgr`` is true);
- ``onnxdeconv.labels`` (:data:`onnxdeconv.labels.METADATA_KEY`): the class names, a JSON list
  of strings in class-index order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import external_data_helper

from onnxdeconv import inputs, labels
from onnxdeconv.errors import InputError, ModelLoadError
from onnxdeconv.files import atomic_path
from onnxdeconv.inputs import Preprocessing


def check_copy_target(model: Path, output: Path) -> None:
    """Refuse to write the copy of ``model`` over ``model`` itself.

    Raises:
        InputError: ``output`` is ``model``.
    """
    if output.resolve() == model.resolve():
        raise InputError(
            f"'{output}' is the model itself: write the copy to another file", parameter="output"
        )


def write_model_metadata(
    model: Path,
    output: Path,
    preprocessing: Preprocessing,
    class_names: Sequence[str] | None = None,
) -> None:
    """Copy ``model`` to ``output`` with its preprocessing (and class names) in its metadata.

    The graph and weights are copied as they are; entries of the same keys are replaced. The
    file is written atomically, and never over ``model`` itself.

    Raises:
        InputError: ``output`` is ``model``.
        ModelLoadError: The model keeps its weights in external data files (not copied here).
    """
    check_copy_target(model, output)
    proto = onnx.load(str(model), load_external_data=False)
    if any(
        external_data_helper.uses_external_data(tensor)
        for tensor in external_data_helper._get_all_tensors(proto)
    ):
        raise ModelLoadError(
            f"'{model}' keeps its weights in external data files, which are not copied: add "
            f"the '{inputs.METADATA_KEY}' entry to its metadata with onnx yourself"
        )
    entries = {inputs.METADATA_KEY: json.dumps(inputs.preprocessing_json(preprocessing))}
    if class_names is not None:
        entries[labels.METADATA_KEY] = json.dumps(list(class_names))
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_path(output) as temp:
        onnx.save(proto, str(temp))
