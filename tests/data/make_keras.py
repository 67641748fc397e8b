"""Regenerate the Keras models exported by tf2onnx in this folder, and the twin's weights.

The tests only read the files this writes; they never need TensorFlow. Versions used for the
committed files are in README.md here. Run from the repository root, in an environment with
tensorflow-cpu and tf2onnx (not the project's)::

    python -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "numpy<2"
    /tmp/tfvenv/bin/python tests/data/make_keras.py [name ...]

Names (``keras_nhwc``, ...) regenerate only those models. Every model takes NHWC images with a
dynamic batch (tf2onnx puts a Transpose to NCHW in front of the first Conv), and has random
weights from a fixed seed and non-trivial BatchNormalization
statistics.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

keras = tf.keras
L = keras.layers
HERE = Path(__file__).resolve().parent
#: The models' own preprocessing is in the graph: feed pixels 0..255 as they are.
RAW_PIXELS = json.dumps({"scale": 1.0, "mean": [0.0], "std": [1.0]})


def randomize(model: keras.Model, seed: int) -> None:
    """Give every bias random values (tf2onnx drops a zero bias), and every BatchNormalization
    layer statistics and an affine part far from identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(rng.normal(0.0, 0.1, bias.shape).astype(np.float32))
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # gamma
                    rng.normal(0.0, 0.2, n).astype(np.float32),  # beta
                    rng.normal(0.0, 0.3, n).astype(np.float32),  # moving mean
                    rng.uniform(0.3, 2.0, n).astype(np.float32),  # moving variance
                ]
            )


def nhwc_classifier() -> keras.Model:
    """Rescaling to [-1, 1] (Mul/Add), SAME convs with stride 2 (asymmetric pads), a SAME max
    pool, BatchNormalization after it (which tf2onnx cannot fold into a Conv), Flatten of an NHWC
    map (a Transpose back) and Dense heads (MatMul + Add)."""
    image = keras.Input((32, 32, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)  # 32 -> 16, pads (0, 1)
    x = L.ReLU()(x)
    x = L.MaxPool2D(3, strides=2, padding="same")(x)  # 16 -> 8
    x = L.BatchNormalization()(x)
    x = L.Conv2D(16, 3, padding="same")(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="relu")(x)
    return keras.Model(image, L.Dense(10)(x), name="keras_nhwc")


def normalized_classifier() -> keras.Model:
    """Normalization (Sub/Div), a strided conv with zero padding folded in, a depthwise SAME conv
    with BatchNormalization (folded), ZeroPadding2D before a max pool (an explicit Pad), average
    pooling, a 1x1 conv and global average pooling."""
    image = keras.Input((24, 24, 3), name="image")
    norm = L.Normalization(mean=[123.7, 116.3, 103.5], variance=[58.4**2, 57.1**2, 57.4**2])
    x = norm(image)
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(x)  # 24x24 -> 27x25
    x = L.Conv2D(8, 5, strides=2)(x)  # -> 12x11
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.ZeroPadding2D(((0, 1), (1, 1)))(x)  # -> 13x13
    x = L.MaxPool2D(2, strides=1)(x)  # -> 12x12
    x = L.AveragePooling2D(2)(x)  # -> 6x6
    x = L.Conv2D(12, 1)(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(image, L.Dense(10)(x), name="keras_norm")


def uint8_classifier() -> keras.Model:
    """A uint8 image input cast to float in the graph, then Rescaling(1/255) and a small net."""
    image = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = tf.cast(image, tf.float32)
    x = L.Rescaling(1 / 255)(x)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)  # 32 -> 16
    x = L.ReLU()(x)
    x = L.MaxPool2D(2)(x)  # -> 8
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(image, L.Dense(5)(x), name="keras_uint8")


def twin() -> keras.Model:
    """The net that tests/test_frameworks.py rebuilds in PyTorch from twin_weights.npz."""
    image = keras.Input((20, 20, 3), name="image")
    x = L.Conv2D(6, 3, strides=2, padding="same", name="conv1")(image)  # 20 -> 10, pads (0, 1)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPool2D(2, name="pool1")(x)  # -> 5
    x = L.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="bn2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Flatten(name="flatten")(x)  # NHWC order: h, w, c
    x = L.Dense(12, name="fc1")(x)
    x = L.ReLU(name="relu3")(x)
    return keras.Model(image, L.Dense(4, name="fc2")(x), name="keras_twin")


def default_names_classifier() -> keras.Model:
    """Layers with Keras' default names: tf2onnx names a model's output after its last layer, and
    the softmax head is the first Activation layer made, so the output tensor is ``activation``
    (the name of an output of ``onnxdeconv export``); the ReLUs are ``activation_1`` to ``_3``."""
    keras.backend.clear_session()  # restart Keras' name counters: activation, activation_1, ...
    head = L.Activation("softmax")
    image = keras.Input((32, 32, 3), name="image")
    x = L.Rescaling(1 / 255)(image)
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.Activation("relu")(x)
    x = L.MaxPool2D(3, strides=2, padding="same")(x)  # 32 -> 16, overlapping windows
    x = L.Conv2D(12, 3, padding="same")(x)
    x = L.Activation("relu")(x)
    x = L.MaxPool2D(2)(x)  # -> 8
    x = L.Flatten()(x)
    x = L.Dense(16)(x)
    x = L.Activation("relu")(x)
    return keras.Model(image, head(L.Dense(10)(x)), name="keras_default_names")


def save_twin_weights(model: keras.Model, path: Path) -> None:
    """Save each layer's weights as ``<layer>.<kernel|bias|gamma|...>`` in Keras layouts."""
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for weight in layer.weights:
            key = weight.name.split("/")[-1].split(":")[0]
            arrays[f"{layer.name}.{key}"] = weight.numpy()
    np.savez(path, **arrays)


def export(
    model: keras.Model, name: str, opset: int, dtype: tf.DType, raw_pixels: bool
) -> onnx.ModelProto:
    """Convert with tf2onnx (dynamic batch) and write ``name.onnx`` here."""
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), dtype, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    if raw_pixels:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "onnxdeconv.preprocess", RAW_PIXELS
    onnx.checker.check_model(proto, full_check=True)
    path = HERE / f"{name}.onnx"
    onnx.save(proto, path)
    ops = sorted({node.op_type for node in proto.graph.node})
    print(f"{path.name}: opset {opset}, {path.stat().st_size // 1024} KB, ops {ops}")
    return proto


def main() -> None:
    builds: list[tuple[Callable[[], keras.Model], str, int, tf.DType, bool]] = [
        (nhwc_classifier, "keras_nhwc", 13, tf.float32, True),
        (normalized_classifier, "keras_norm", 15, tf.float32, True),
        (uint8_classifier, "keras_uint8", 17, tf.uint8, True),
        (twin, "keras_twin", 13, tf.float32, False),
        # Last: it restarts Keras' layer names, which the models above were made without.
        (default_names_classifier, "keras_default_names", 13, tf.float32, True),
    ]
    wanted = set(sys.argv[1:])
    for seed, (build, name, opset, dtype, raw) in enumerate(builds):
        if wanted and name not in wanted:
            continue
        keras.utils.set_random_seed(seed)
        model = build()
        randomize(model, seed)
        if name == "keras_twin":
            save_twin_weights(model, HERE / "twin_weights.npz")
        export(model, name, opset, dtype, raw)
    print(f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}")


if __name__ == "__main__":
    main()
