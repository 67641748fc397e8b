"""The static site of ``onnxdeconv explore``: live projections in the browser, on onnxruntime-web.

The site is a folder that any static web server serves (the browser fetches the WebAssembly
runtime, which it refuses to do from ``file://``):

- ``index.html``, ``explore.js``, ``explore.css``: the page (package data, in ``explore_site/``);
- ``site.json``: the model's input, preprocessing, labels, layers (shape, receptive field of each
  unit), the images and, with a features run, each channel's top-k dataset examples;
- ``graphs/forward.onnx``: the model with every chosen layer as an output, for the maps;
- ``graphs/<layer>.<rule>.onnx``: one projector graph per layer and rule (from
  :func:`onnxdeconv.export.export_projector`, the position an input);
- ``graphs/weights.bin``: every graph's weights, each distinct tensor stored once (the graphs
  read it as ONNX external data), so tied weights cost nothing per layer or rule;
- ``images/``, ``dataset/``: the pictures at the model's input size (resized and cropped as
  :func:`onnxdeconv.inputs.fit_image` does, so the page feeds the model what Python feeds it);
- ``ort/``: onnxruntime-web, vendored from npm at the version ``web/package.json`` pins.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdeconv.analysis.features import unit_box
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.export import ExportOptions, export_projector
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.passes import instrument, tensor_values, with_input_shape
from onnxdeconv.inputs import Preprocessing, fit_image, image_layout, preprocessing_json
from onnxdeconv.outputs.tables import json_safe, write_json
from onnxdeconv.prepared import PreparedModel

logger = logging.getLogger(__name__)

#: The ``schema`` entry of ``site.json``.
SITE_SCHEMA = "onnxdeconv.explore/1"
#: The page's own files, copied into every site.
PAGE_FILES = ("index.html", "explore.js", "explore.css")
#: The onnxruntime-web files a site needs: the WebAssembly build (always) and, where vendored
#: with WebGPU, the WebGPU build.
ORT_WASM = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEBGPU = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
#: How to fetch onnxruntime-web into the package data (for the error message).
FETCH_ORT = "run web/fetch-ort.sh from the onnxdeconv source tree (needs npm)"
WEIGHTS = "weights.bin"
#: Tensors smaller than this stay inside their graph (selection constants, shapes).
EXTERNAL_THRESHOLD = 1024


def site_assets() -> Path:
    """The folder of the page's files and the vendored onnxruntime-web (package data)."""
    return Path(str(resources.files("onnxdeconv.outputs") / "explore_site"))


def ort_files(webgpu: bool = False) -> list[Path]:
    """The vendored onnxruntime-web files a site needs.

    Raises:
        OnnxDeconvError: They were not fetched into the package data.
    """
    folder = site_assets() / "ort"
    wanted = [*ORT_WASM, *(ORT_WEBGPU if webgpu else ())]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise OnnxDeconvError(
            f"onnxruntime-web is not in the package data ({folder} lacks {missing[0]}): {FETCH_ORT}"
        )
    return [folder / name for name in wanted]


@dataclass(frozen=True)
class SiteImage:
    """One picture for the page: its name and its pixels at the model's input size."""

    name: str
    #: RGB ``[H, W, 3]`` (or gray ``[H, W]`` for a one-channel model) uint8, already fitted.
    pixels: np.ndarray


@dataclass(frozen=True)
class FeaturesEntry:
    """One of a channel's top-k dataset examples: the image (index into the dataset), the unit."""

    image: int
    position: tuple[int, ...] | None
    value: float


@dataclass
class SiteSummary:
    """What :func:`write_site` wrote."""

    folder: Path
    layers: list[str]
    rules: list[Rule]
    #: Bytes per part of the site: ``graphs`` (weights included), ``weights``, ``runtime``,
    #: ``page``, ``images``, and ``total``.
    sizes: dict[str, int] = field(default_factory=dict)
    #: Bytes the graphs would take with each one's weights inside it (no sharing).
    unshared_bytes: int = 0


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as temp:
        shutil.copyfile(source, temp)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


class _WeightStore:
    """Moves large initializers into one shared file, each distinct tensor stored once."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.offsets: dict[str, tuple[int, int]] = {}
        #: Bytes of the tensors moved out, counting each graph's copy.
        self.inline_bytes = 0

    def externalise(self, model: onnx.ModelProto) -> None:
        """Point ``model``'s large initializers at :data:`WEIGHTS` (mutates it)."""
        self._narrow_widened_copies(model)
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data"):
                tensor.CopyFrom(numpy_helper.from_array(tensor_values(tensor), tensor.name))
            raw = tensor.raw_data
            if len(raw) < EXTERNAL_THRESHOLD:
                continue
            self.inline_bytes += len(raw)
            key = hashlib.sha256(raw).hexdigest() + f":{tensor.data_type}"
            if key not in self.offsets:
                # 64-byte alignment lets runtimes map tensors without copying.
                padding = -self.size % 64
                self.chunks.append(b"\0" * padding)
                self.offsets[key] = (self.size + padding, len(raw))
                self.chunks.append(raw)
                self.size += padding + len(raw)
            offset, length = self.offsets[key]
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for k, v in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = k, v

    def _narrow_widened_copies(self, model: onnx.ModelProto) -> None:
        """Read a float32 weight that widens a stored float16 one from the float16 bytes.

        The deconv graphs of a float16 model run in float32 on float32 copies of its weights;
        each such copy becomes the float16 tensor (already in the file) and a Cast, which is
        exact, so the copy costs nothing. Mutates ``model``.
        """
        graph = model.graph
        taken = {t.name for t in graph.initializer} | {n.name for n in graph.node}
        taken |= {name for node in graph.node for name in (*node.input, *node.output)}
        casts = []
        for tensor in graph.initializer:
            if (
                tensor.data_type != onnx.TensorProto.FLOAT
                or tensor.data_location == onnx.TensorProto.EXTERNAL
            ):
                continue
            wide = numpy_helper.to_array(tensor)
            if wide.nbytes < 2 * EXTERNAL_THRESHOLD:
                continue
            narrow = wide.astype(np.float16)
            key = hashlib.sha256(narrow.tobytes()).hexdigest() + f":{onnx.TensorProto.FLOAT16}"
            if key not in self.offsets or not np.array_equal(narrow.astype(np.float32), wide):
                continue
            name = _free(f"{tensor.name}/float16", taken)
            self.inline_bytes += wide.nbytes - narrow.nbytes
            casts.append(
                helper.make_node(
                    "Cast",
                    [name],
                    [tensor.name],
                    name=_free(f"widen/{tensor.name}", taken),
                    to=onnx.TensorProto.FLOAT,
                )
            )
            tensor.CopyFrom(numpy_helper.from_array(narrow, name))
        if casts:
            nodes = list(graph.node)
            del graph.node[:]
            graph.node.extend([*casts, *nodes])

    def write(self, path: Path) -> None:
        _write_bytes(path, b"".join(self.chunks))


def _free(name: str, taken: set[str]) -> str:
    """``name``, or ``name_<i>`` where that is taken; adds it to ``taken``."""
    free, count = name, 0
    while free in taken:
        count += 1
        free = f"{name}_{count}"
    taken.add(free)
    return free


def forward_graph(prepared: PreparedModel, layers: Sequence[str]) -> onnx.ModelProto:
    """The model at batch 1 with the chosen layers as outputs after its own, for the maps."""
    loaded = prepared.loaded
    sized = with_input_shape(loaded.model, loaded.input_name, (1, *prepared.input_shape))
    model, _ = instrument(sized, layers, [], prepared.info, batch=1)
    # Web runtimes refuse IR versions newer than their own; the opset decides the lowest one.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    del model.graph.value_info[:]
    return model


def _prediction(prepared: PreparedModel) -> dict[str, Any] | None:
    """The model's first output where it is one score per class (``[1, N]``, N > 1)."""
    output = prepared.loaded.model.graph.output[0]
    info = prepared.info.get(output.name)
    if info is None:
        return None
    try:
        shape = info.per_sample
    except ValueError:
        return None
    classes = int(np.prod(shape)) if shape else 1
    if classes < 2 or sum(d > 1 for d in shape) != 1:
        return None
    return {"name": output.name, "classes": classes}


def _boxes(prepared: PreparedModel, layer: str, spatial: Sequence[int]) -> list[list[list[int]]]:
    """Per spatial axis of the layer, the ``[begin, end)`` input range of each unit along it."""
    shape = prepared.info[layer].per_sample[1:]
    field_ = prepared.receptive_fields[layer]
    axes: list[list[list[int]]] = []
    for axis, units in enumerate(shape):
        ranges = []
        for q in range(units):
            position = tuple(q if a == axis else 0 for a in range(len(shape)))
            box = unit_box(field_, position, spatial)
            ranges.append(list(box[axis]) if axis < len(box) else [0, int(spatial[axis])])
        axes.append(ranges)
    return axes


def _write_picture(path: Path, pixels: np.ndarray) -> None:
    picture = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 picture
        raise OnnxDeconvError(f"cannot encode '{path.name}' as PNG")
    _write_bytes(path, encoded.tobytes())


def fitted_pixels(rgb: np.ndarray, prepared: PreparedModel) -> np.ndarray:
    """``rgb`` resized and cropped to the model's input size (gray for a one-channel model).

    The page reads these pixels back exactly, so it feeds the model what Python feeds it.
    """
    layout, channels = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
    fitted = fit_image(rgb, (int(spatial[0]), int(spatial[1])))
    if channels == 1:
        return np.ascontiguousarray(cv2.cvtColor(fitted, cv2.COLOR_RGB2GRAY))
    return fitted


def write_site(
    folder: Path,
    prepared: PreparedModel,
    layers: Sequence[str],
    rules: Sequence[Rule],
    preprocessing: Preprocessing,
    *,
    model_name: str,
    images: Sequence[SiteImage] = (),
    labels: Sequence[str] | None = None,
    dataset: Sequence[SiteImage] = (),
    features: Mapping[str, Mapping[int, Sequence[FeaturesEntry]]] | None = None,
    webgpu: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SiteSummary:
    """Write the explorer site for ``layers`` into ``folder`` (which exists).

    Args:
        folder: The site's folder; its files are replaced.
        prepared: The model, at the input size the page feeds it.
        layers: The tensors to explore (channels-first, projectable).
        rules: The rules the page offers; the first is shown first.
        preprocessing: How the page turns pixels into the model's input.
        model_name: The model, for the title.
        images: The pictures listed on the page.
        labels: Class names, for the prediction.
        dataset: The pictures of a features run that its entries name.
        features: Per layer and channel, its top-k examples in ``dataset``.
        webgpu: Also vendor the WebGPU build of onnxruntime-web (about 27 MB more).
        progress: Called with 1 after each graph written.

    Raises:
        OnnxDeconvError: A layer cannot be exported, or onnxruntime-web was not fetched.
    """
    runtime = ort_files(webgpu)
    graphs = folder / "graphs"
    # The site's own subfolders start empty (a previous site's graphs and pictures go); every
    # file is written atomically.
    for sub in ("graphs", "images", "dataset", "ort"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    for sub in ("graphs", "images", "ort"):
        (folder / sub).mkdir()
    store = _WeightStore()
    unshared = 0
    layout, channels = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]

    def save(model: onnx.ModelProto, name: str) -> str:
        nonlocal unshared
        before = store.inline_bytes
        store.externalise(model)
        unshared += store.inline_bytes - before
        _write_bytes(graphs / name, model.SerializeToString())
        unshared += (graphs / name).stat().st_size
        if progress is not None:
            progress(1)
        return f"graphs/{name}"

    forward = save(forward_graph(prepared, layers), "forward.onnx")
    layer_entries = []
    for layer in layers:
        shape = list(prepared.info[layer].per_sample)
        graph_files = {
            rule: save(
                export_projector(prepared, ExportOptions(layer, rule, position_input=True)),
                f"{_safe(prepared.alias_of.get(layer, layer))}.{rule}.onnx",
            )
            for rule in rules
        }
        chosen = (features or {}).get(layer, {})
        layer_entries.append(
            {
                "name": layer,
                "alias": prepared.alias_of.get(layer, layer),
                "shape": shape,
                "boxes": _boxes(prepared, layer, spatial),
                "field": prepared.receptive_fields[layer].describe(),
                "graphs": graph_files,
                "features": {
                    str(channel): [
                        {
                            "image": e.image,
                            "position": None if e.position is None else list(e.position),
                            "value": e.value,
                        }
                        for e in entries
                    ]
                    for channel, entries in chosen.items()
                },
            }
        )
    store.write(graphs / WEIGHTS)
    image_entries = []
    for index, image in enumerate(images):
        _write_picture(folder / "images" / f"{index}.png", image.pixels)
        image_entries.append({"name": image.name, "file": f"images/{index}.png"})
    dataset_entries = []
    if dataset:
        (folder / "dataset").mkdir()
    for index, image in enumerate(dataset):
        _write_picture(folder / "dataset" / f"{index}.png", image.pixels)
        dataset_entries.append({"name": image.name, "file": f"dataset/{index}.png"})
    notice = site_assets() / "ort" / "NOTICE"
    for path in [*runtime, *([notice] if notice.is_file() else [])]:
        _copy(path, folder / "ort" / path.name)
    loaded = prepared.loaded
    site = {
        "schema": SITE_SCHEMA,
        "model": model_name,
        "input": {
            "name": loaded.input_name,
            "shape": [1, *prepared.input_shape],
            "dtype": str(loaded.input_dtype),
            "layout": layout,
            "channels": channels,
        },
        "preprocessing": preprocessing_json(preprocessing),
        "labels": list(labels) if labels else None,
        "prediction": _prediction(prepared),
        "rules": list(rules),
        "forward": forward,
        "weights": f"graphs/{WEIGHTS}",
        "runtime": "ort/" + ("ort.webgpu.min.mjs" if webgpu else "ort.wasm.min.mjs"),
        "layers": layer_entries,
        "images": image_entries,
        "dataset": dataset_entries,
    }
    write_json(folder / "site.json", json_safe(site), indent=None)
    assets = site_assets()
    for name in PAGE_FILES:
        _copy(assets / name, folder / name)
    summary = SiteSummary(folder, list(layers), list(rules), unshared_bytes=unshared)
    summary.sizes = site_sizes(folder)
    return summary


def site_sizes(folder: Path) -> dict[str, int]:
    """Bytes per part of a site (see :attr:`SiteSummary.sizes`)."""

    def total(paths: Sequence[Path]) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file())

    sizes = {
        "graphs": total(list((folder / "graphs").iterdir())),
        "weights": total([folder / "graphs" / WEIGHTS]),
        "runtime": total(list((folder / "ort").iterdir())),
        "page": total([folder / name for name in (*PAGE_FILES, "site.json")]),
        "images": sum(
            total(list((folder / sub).iterdir()))
            for sub in ("images", "dataset")
            if (folder / sub).is_dir()
        ),
    }
    sizes["total"] = sizes["graphs"] + sizes["runtime"] + sizes["page"] + sizes["images"]
    return sizes


def read_features_run(
    run: Path, prepared: PreparedModel, layers: Sequence[str]
) -> tuple[Path, list[str], dict[str, dict[int, list[FeaturesEntry]]]]:
    """The image folder, image names and per-layer top-k entries of a ``features`` run.

    Only the entries of ``layers`` are kept; their images are numbered in the returned list.

    Raises:
        OnnxDeconvError: ``run`` holds no features state, or none of ``layers``.
    """
    state_path = run / "features_state.json"
    if not state_path.is_file():
        raise OnnxDeconvError(
            f"'{run}' holds no features_state.json: give the output folder of a features run",
            parameter="features",
        )
    state = json.loads(state_path.read_text())
    folder = Path(state.get("meta", {}).get("folder", run))
    names: list[str] = []
    number: dict[str, int] = {}
    found: dict[str, dict[int, list[FeaturesEntry]]] = {}
    for layer in layers:
        alias = prepared.alias_of.get(layer, layer.replace("/", "_"))
        path = run / f"{alias}.json"
        if not path.is_file():
            continue
        table = json.loads(path.read_text())
        if table.get("layer") != layer:
            continue
        per_channel: dict[int, list[FeaturesEntry]] = {}
        for row in table.get("channels", []):
            entries = []
            for entry in row.get("entries", []):
                name = entry["image"]
                if name not in number:
                    number[name] = len(names)
                    names.append(name)
                where = entry.get("position")
                entries.append(
                    FeaturesEntry(
                        number[name], None if where is None else tuple(where), entry["value"]
                    )
                )
            per_channel[int(row["channel"])] = entries
        found[layer] = per_channel
    if not found:
        wanted = ", ".join(prepared.alias_of.get(n, n) for n in layers)
        held = ", ".join(
            prepared.alias_of.get(entry["name"], entry["name"]) for entry in state.get("layers", [])
        )
        raise OnnxDeconvError(
            f"the features run '{run}' has none of the layers {wanted}: explore its layers "
            f"({held})",
            parameter="features",
        )
    return folder, names, found


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a site's files, cross-origin isolated, and logs nothing."""

    extensions_map = {  # noqa: RUF012 - the base class declares it a plain dict
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def end_headers(self) -> None:
        # Cross-origin isolation lets onnxruntime-web run on several threads.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def start_server(folder: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """Serve ``folder`` on 127.0.0.1 (``port`` 0: a free one) from a daemon thread.

    Stop it with ``server.shutdown()``; ``server.server_port`` is the port.
    """
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise OnnxDeconvError(
            f"cannot serve on port {port} ({exc.strerror}): choose another port", parameter="port"
        ) from exc
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
