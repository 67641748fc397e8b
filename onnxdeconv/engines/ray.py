"""The Ray engine: a run of :func:`~onnxdeconv.engines.mine_features` on a Ray cluster.

Ray Data streams the run's images. Tasks read and decode them (the model's preprocessing). An
actor pool runs the streaming graph, one :class:`~onnxdeconv.analysis.features.MaximaRunner`
per worker (on CUDA where the worker has a GPU), and reduces each batch to its own top-k: a
:class:`~onnxdeconv.analysis.features.FeaturesState` of the batch's images, which the driver
merges into the run's state with :meth:`~onnxdeconv.analysis.features.FeaturesState.absorb`
(exact and order-independent, so retries and the order batches finish in change nothing). The
entries are then projected page by page on an actor pool of the same shape. The state, the
pages and their JSON equal those of the local engine.

Ray retries a batch whose worker died (the actors restart), up to :data:`WORKER_RETRIES` times,
then the run stops with one error; unreadable images are skipped and listed; the driver
checkpoints the state as the local engine does, so a run whose driver died resumes from its
checkpoint. Ray Data streams with backpressure: only the batches in flight are in the object
store, whose peak :meth:`RayEngine.describe` reports.

Ray is imported only when the engine runs (``pip install 'onnxdeconv[ray]'``).

Example:
    >>> engine = RayEngine(address="10.0.0.1:6379", gpus_per_worker=1)
    >>> result = mine_features(prepared, names, root="/data/val", engine=engine)
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from onnxdeconv.analysis.features import (
    EMPTY,
    FeaturesState,
    FeatureTile,
    LayerTopK,
    MaximaRunner,
)
from onnxdeconv.engines.local import FeaturesPage, FeaturesResult, ImageLoader, StreamJob
from onnxdeconv.errors import InputError, OnnxDeconvError
from onnxdeconv.inputs import (
    IMAGE_ERRORS,
    ModelInput,
    Preprocessing,
    load_input,
    quiet_opencv,
    skip_reason,
)
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.projector import Projector
from onnxdeconv.runtime import Device

logger = logging.getLogger(__name__)


def import_ray() -> ModuleType:
    """Ray, with Ray Data.

    Raises:
        OnnxDeconvError: Ray is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise OnnxDeconvError(
            f"the Ray engine needs Ray Data ({exc}): pip install 'onnxdeconv[ray]'",
            parameter="engine",
        ) from exc
    return ray


def check_reachable(address: str, timeout: float) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray itself waits a minute or more).

    ``auto``, ``local`` and ``ray://`` client addresses are left to Ray.

    Raises:
        OnnxDeconvError: The address is malformed or nothing answers there.
    """
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"'{address}' is not a Ray address: give HOST:PORT (the head's GCS port, 6379 by "
            "default), ray://HOST:PORT or auto",
            parameter="address",
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise OnnxDeconvError(
            f"no Ray cluster answers at '{address}' ({exc or 'timed out'}): start a Ray head "
            "node there, or give the address of a running cluster",
            parameter="address",
        ) from exc


#: How many seconds Ray tries to reach a cluster's GCS before it gives up (default: about 20).
GCS_WAIT = "RAY_gcs_server_port_wait_time_s"

#: How many times a batch is retried after its worker process died. Ray Data's actor pools
#: would restart and retry without limit, so a batch that kills its worker every time (out of
#: memory, a crash in native code) would hang the run.
WORKER_RETRIES = 3


def results(ray: ModuleType, dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's output batches as they come, a batch whose worker kept dying as one error."""
    with worker_deaths(ray):
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


def on_actors(dataset: Any, udf: type, **arguments: Any) -> Any:
    """``dataset.map_batches(udf, ...)`` whose batches are retried :data:`WORKER_RETRIES` times."""
    with warnings.catch_warnings():
        # Ray Data takes an actor's restart limits only as extra remote arguments, which Ray
        # 2.60 calls deprecated while no named parameter replaces them yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return dataset.map_batches(
            udf, max_restarts=WORKER_RETRIES, max_task_retries=WORKER_RETRIES, **arguments
        )


@contextmanager
def worker_deaths(ray: ModuleType) -> Iterator[None]:
    """Turn a batch whose worker died :data:`WORKER_RETRIES` + 1 times into one error."""
    try:
        yield
    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
        raise OnnxDeconvError(
            f"a Ray worker process died {WORKER_RETRIES + 1} times on the same batch (killed "
            "for memory, or a crash in native code; the worker logs on the cluster say which): "
            "give the workers more memory or smaller batches, or run the same images on the "
            "local engine to see the error",
            parameter="batch_size",
        ) from exc


@contextmanager
def joining(timeout: float) -> Iterator[None]:
    """While joining a cluster: give up after ``timeout`` seconds, and keep Ray's retries quiet.

    Ray's C++ client logs a line per failed attempt to the process's stderr; the caller turns a
    failure into one error line instead. Only the joining is affected: the environment and
    stderr are restored after it.
    """
    saved = os.environ.get(GCS_WAIT)
    os.environ[GCS_WAIT] = str(max(1, round(timeout)))
    sys.stderr.flush()
    stderr, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(null)
        if saved is None:
            del os.environ[GCS_WAIT]
        else:
            os.environ[GCS_WAIT] = saved


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``s3://``, ``gs://``, ...) rather than a local path."""
    return "://" in path


def join(root: str | Path | None, name: str) -> str:
    """The full path of image ``name`` under ``root`` (a folder or a URI prefix)."""
    if root is None or is_uri(name):
        return name
    if is_uri(str(root)):
        return f"{str(root).rstrip('/')}/{name}"
    return str(Path(root) / name)


@contextmanager
def local_file(path: str) -> Iterator[str]:
    """``path`` itself, or for a URI a temporary copy read through pyarrow's filesystems."""
    if not is_uri(path):
        yield path
        return
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    with tempfile.NamedTemporaryFile(suffix=Path(inner).suffix) as copy:
        with filesystem.open_input_stream(inner) as stream:
            copy.write(stream.read())
        copy.flush()
        yield copy.name


def uri_images(uri: str) -> list[str]:
    """The image files under the URI prefix ``uri`` (recursively, sorted), relative to it.

    Raises:
        InputError: Nothing can be listed there, or it holds no image.
    """
    from pyarrow import fs

    from onnxdeconv.inputs import IMAGE_SUFFIXES

    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
    except (OSError, ValueError) as exc:
        message = f"cannot list '{uri}' ({exc}): check the URI and its credentials"
        raise InputError(message) from exc
    prefix = inner.rstrip("/") + "/"
    names = sorted(
        info.path[len(prefix) :]
        for info in infos
        if info.type == fs.FileType.File and Path(info.path).suffix.lower() in IMAGE_SUFFIXES
    )
    if not names:
        raise InputError(f"no images under '{uri}': point at a prefix that holds photos")
    return names


@dataclass(frozen=True)
class InputSpec:
    """What decoding needs of the model (see :class:`~onnxdeconv.inputs.ModelInputSpec`).

    Decoding tasks get this, not the model.
    """

    input_name: str
    input_shape: list[int | str]
    input_dtype: np.dtype
    metadata: dict[str, str]


class PathLoader(ImageLoader):
    """An :class:`ImageLoader` whose names are full paths or URIs."""

    def __call__(self, image_id: int) -> ModelInput:
        """The model input of image ``image_id``."""
        with local_file(self.names[image_id]) as path:
            return load_input(path, self.prepared.loaded, self.preprocessing, self.size)


def decode_images(
    batch: dict[str, np.ndarray],
    spec: InputSpec,
    preprocessing: Preprocessing,
    size: tuple[int, int],
    per_sample: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Read and preprocess a batch ``{id, path}``: ``{id, array, error}`` (``""``: read)."""
    count = len(batch["id"])
    arrays = np.zeros((count, *per_sample), spec.input_dtype)
    errors = np.full(count, "", dtype=object)
    with quiet_opencv():
        for index, path in enumerate(batch["path"]):
            try:
                with local_file(str(path)) as file:
                    arrays[index] = load_input(file, spec, preprocessing, size).array[0]
            except IMAGE_ERRORS as exc:
                errors[index] = skip_reason(exc)
    return {"id": np.asarray(batch["id"], np.int64), "array": arrays, "error": errors}


def fetch(prepared: Any) -> PreparedModel:
    """The model an actor was given: itself, or the object store's copy of it."""
    if isinstance(prepared, PreparedModel):
        return prepared
    fetched: PreparedModel = import_ray().get(prepared)
    return fetched


@dataclass
class BatchPart:
    """The top-k of one batch, as a worker sends it: its state and its images' run ids."""

    state: FeaturesState
    image_ids: np.ndarray
    provider: str | None


class BatchTopK:
    """The actor of the mining pool: each batch's per-channel top-k, as a state of its images."""

    def __init__(
        self,
        prepared: Any,
        channels: Mapping[str, Sequence[int]],
        bounds: Mapping[str, float],
        device: Device,
        threads: int,
        k: int,
    ) -> None:
        prepared = fetch(prepared)
        self.runner = MaximaRunner(prepared, channels, device, threads, bounds)
        self.channels = {name: list(chosen) for name, chosen in channels.items()}
        self.ranks = {name: len(prepared.info[name].per_sample) - 1 for name in channels}
        self.k = k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{id, array, error}`` -> one row ``{part}``: a pickled :class:`BatchPart`."""
        # In run order, so that ties (the lower id first) rank alike in the part and the run.
        order = np.argsort(batch["id"], kind="stable")
        ids = np.asarray(batch["id"], np.int64)[order]
        errors = batch["error"][order]
        part = FeaturesState(self.k, [str(i) for i in ids])
        for name, chosen in self.channels.items():
            part.add_layer(name, chosen, self.ranks[name])
        good = np.flatnonzero(errors == "")
        if good.size:
            part.update_maxima(self.runner(batch["array"][order][good]), good.tolist())
        for index in np.flatnonzero(errors != ""):
            part.skip(int(index), str(errors[index]))
        blob = pickle.dumps(BatchPart(part, ids, self.runner.provider))
        return {"part": np.array([blob], dtype=object)}


@dataclass
class PageJob:
    """One page to project: its rows of a layer's top-k and the paths of their images."""

    index: int
    layer: str
    rows: list[int]
    top: LayerTopK
    paths: dict[int, str]
    k: int
    meta: dict[str, Any]


@dataclass
class PageDone:
    """A projected page: its tiles (by page row and slot) and the positions found."""

    index: int
    tiles: dict[tuple[int, int], FeatureTile]
    positions: np.ndarray
    provider: str | None


class PageProjector:
    """The actor of the projection pool: projects pages (a projector per layer, kept)."""

    def __init__(
        self,
        prepared: Any,
        preprocessing: Preprocessing,
        device: Device,
        batch_size: int,
        memory_budget: int | None = None,
    ) -> None:
        self.prepared = fetch(prepared)
        self.preprocessing = preprocessing
        self.device = device
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.projectors: dict[tuple[str, str], Projector] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{job}`` (pickled :class:`PageJob`) -> ``{done}`` (pickled :class:`PageDone`)."""
        done = [pickle.dumps(self.project(pickle.loads(blob))) for blob in batch["job"]]
        return {"done": np.array(done, dtype=object)}

    def project(self, job: PageJob) -> PageDone:
        """Project a page as the local engine does (same batches of images, same passes)."""
        # The page's own state: its images in run order, so batches form as in the run.
        ids = sorted(job.paths)
        top = job.top
        images = np.where(
            top.images == EMPTY, EMPTY, np.searchsorted(ids, np.maximum(top.images, 0))
        )
        state = FeaturesState(job.k, [job.paths[i] for i in ids], meta=job.meta)
        state.layers[job.layer] = LayerTopK(top.channels, top.values, images, top.positions)
        result = FeaturesResult(
            state, self.prepared, self.preprocessing, device=self.device, batch_size=self.batch_size
        )
        # The names are full paths or URIs, which ImageLoader's Path joining would not keep.
        loader = PathLoader(self.prepared, self.preprocessing, None, state.images)
        result.__dict__["loader"] = loader
        key = (job.layer, result.rule)
        if key not in self.projectors:
            self.projectors[key] = Projector(
                self.prepared, job.layer, result.rule, self.device, memory_budget=self.memory_budget
            )
        projector = self.projectors[key]
        with quiet_opencv():
            tiles = result.project_rows(projector, list(range(len(job.rows))), lambda _: None)
        positions = state.layers[job.layer].positions
        return PageDone(job.index, tiles, positions, projector.provider)


def call_with(function: Callable[[Any], Any], item: Any) -> Any:
    """``function(item)``: the body of the tasks of :meth:`RayEngine.map`."""
    return function(item)


def object_store_bytes(dataset: Any) -> int | None:
    """The object store memory Ray Data's executor of ``dataset`` holds now (None: unknown)."""
    try:
        manager = dataset._current_executor._resource_manager
        return int(manager.get_global_usage().object_store_memory)
    except (AttributeError, TypeError):  # an internal of Ray Data: other versions may lack it
        return None


@dataclass
class RayEngine:
    """Stream a run's images and project its entries on a Ray cluster (see the module doc).

    Args:
        address: The cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); None: the Ray
            instance this process already has, or a new local one.
        workers: Actors in the pools (default: one per ``gpus_per_worker`` of the cluster's
            GPUs, else one per ``cpus_per_worker`` of its CPUs).
        gpus_per_worker: GPUs each actor holds (0: none, ONNX Runtime on the CPU).
        cpus_per_worker: CPUs each actor holds (its ONNX Runtime threads).
        connect_timeout: Seconds to wait for the cluster's address to answer.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    connect_timeout: float = 5.0
    #: What the runs measured (see :meth:`describe`).
    measured: dict[str, Any] = field(default_factory=dict)

    def connect(self) -> ModuleType:
        """Ray, connected to the cluster (once per process).

        Raises:
            OnnxDeconvError: Ray is missing, or the cluster does not answer.
        """
        ray = import_ray()
        if self.address is not None:
            check_reachable(self.address, self.connect_timeout)
        if ray.is_initialized():
            return ray
        try:
            if self.address is None:
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                with joining(self.connect_timeout):
                    ray.init(address=self.address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at '{self.address}'" if self.address else "locally"
            raise OnnxDeconvError(
                f"cannot start or join Ray {where} ({exc}): check the address and that the "
                "cluster runs the same Ray and Python versions",
                parameter="address",
            ) from exc
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        return ray

    def pool(self, ray: ModuleType, batches: int) -> dict[str, Any]:
        """The ``map_batches`` arguments of an actor pool for ``batches`` batches.

        Ray Data restarts an actor whose process died and retries its batch, up to
        :data:`WORKER_RETRIES` times.

        Raises:
            InputError: The cluster lacks the GPUs or CPUs the pool asks for.
        """
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        if self.gpus_per_worker > gpus:
            raise InputError(
                f"the Ray cluster has {gpus:g} GPUs, fewer than the {self.gpus_per_worker:g} "
                "each worker asks for: give fewer GPUs per worker, or none",
                parameter="gpus_per_worker",
            )
        if self.workers is not None:
            workers = self.workers
        elif self.gpus_per_worker > 0:
            workers = max(1, int(gpus // self.gpus_per_worker))
        else:
            workers = max(1, int(cpus // self.cpus_per_worker))
        if workers * self.cpus_per_worker > cpus or workers * self.gpus_per_worker > gpus:
            raise InputError(
                f"{workers} workers need {workers * self.cpus_per_worker:g} CPUs and "
                f"{workers * self.gpus_per_worker:g} GPUs; the Ray cluster has {cpus:g} and "
                f"{gpus:g}: ask for fewer workers",
                parameter="workers",
            )
        self.measured["workers"] = workers
        return {
            "compute": ray.data.ActorPoolStrategy(size=max(1, min(workers, batches))),
            "num_cpus": self.cpus_per_worker,
            "num_gpus": self.gpus_per_worker,
        }

    def decoders(self, ray: ModuleType) -> int:
        """How many decoding tasks run at once: the CPUs the actors leave, at least one each.

        Each task runs in a worker process of its own: more of them than CPUs would only start
        processes that compete with the actors.
        """
        cpus = float(ray.cluster_resources().get("CPU", 1))
        workers = int(self.measured.get("workers", 1))
        return max(1, workers, int(cpus - workers * self.cpus_per_worker))

    def _note_memory(self, dataset: Any) -> None:
        used = object_store_bytes(dataset)
        if used is not None:
            peak = self.measured.get("object_store_peak_bytes") or 0
            self.measured["object_store_peak_bytes"] = max(peak, used)

    def stream(self, job: StreamJob) -> str | None:
        """Count ``job.image_ids`` into ``job.state`` on the cluster; the provider it ran on."""
        import pyarrow as pa

        ray = self.connect()
        start = time.perf_counter()
        state, loader = job.state, job.loader
        prepared = job.prepared
        paths = pa.table(
            {
                "id": pa.array(job.image_ids, pa.int64()),
                "path": pa.array([join(loader.root, loader.names[i]) for i in job.image_ids]),
            }
        )
        loaded = prepared.loaded
        spec = InputSpec(
            loaded.input_name, list(loaded.input_shape), loaded.input_dtype, dict(loaded.metadata)
        )
        # One block per batch: as many decoding tasks, no shuffle.
        blocks = [paths.slice(i, job.batch_size) for i in range(0, paths.num_rows, job.batch_size)]
        pool = self.pool(ray, len(blocks))
        # The model goes to the object store once and to each actor from there.
        model = ray.put(prepared)
        decoded = ray.data.from_arrow(blocks).map_batches(
            decode_images,
            fn_kwargs={
                "spec": spec,
                "preprocessing": loader.preprocessing,
                "size": loader.size,
                "per_sample": tuple(int(d) for d in prepared.input_shape),
            },
            batch_size=job.batch_size,
            # Decoding holds no CPU of its own, so that the actors may take them all (no
            # deadlock); the CPUs the actors leave bound how many tasks decode at once.
            num_cpus=0,
            concurrency=self.decoders(ray),
        )
        dataset = on_actors(
            decoded,
            BatchTopK,
            fn_constructor_kwargs={
                "prepared": model,
                "channels": job.channels,
                "bounds": job.bounds,
                "device": job.device,
                "threads": max(1, round(self.cpus_per_worker)),
                "k": state.k,
            },
            batch_size=job.batch_size,
            **pool,
        )
        provider = None
        done = parts = 0
        for output in results(ray, dataset):
            for blob in output["part"]:
                part: BatchPart = pickle.loads(blob)
                state.absorb(part.state, part.image_ids)
                provider = provider or part.provider
                for index, reason in part.state.skipped.items():
                    image_id = int(part.image_ids[index])
                    if job.on_skip is not None:
                        job.on_skip(image_id, reason)
                    else:
                        logger.warning("skipped: %s", reason)
                done += len(part.image_ids)
                parts += 1
                if job.progress is not None:
                    job.progress(done)
                if job.checkpoint is not None and parts % job.checkpoint_every == 0:
                    state.save(job.checkpoint)
            self._note_memory(dataset)
        del model
        seconds = time.perf_counter() - start
        self.measured.update(streamed=done, stream_seconds=round(seconds, 3))
        logger.info("ray: %s", self.describe())
        return provider

    def pages(
        self, result: FeaturesResult, per_page: int, advance: Callable[[int], None]
    ) -> Iterator[FeaturesPage]:
        """Project the pages on the cluster's actor pool; yield them in order."""
        import pyarrow as pa

        ray = self.connect()
        state = result.state
        jobs: list[tuple[str, int, int, list[int]]] = []
        blobs = []
        for name, groups in result.page_rows(per_page).items():
            layer = state.layers[name]
            for number, rows in enumerate(groups):
                index = len(jobs)
                jobs.append((name, number, len(groups), rows))
                used = {int(i) for i in layer.images[rows].ravel() if i != EMPTY}
                top = LayerTopK(
                    layer.channels[rows],
                    layer.values[rows],
                    layer.images[rows],
                    layer.positions[rows],
                )
                paths = {i: join(result.root, state.images[i]) for i in used}
                meta: dict[str, Any] = {
                    key: state.meta[key] for key in ("rule", "skip_saturated") if key in state.meta
                }
                blobs.append(pickle.dumps(PageJob(index, name, rows, top, paths, state.k, meta)))
        table = pa.table({"job": pa.array(blobs, pa.binary())})
        model = ray.put(result.prepared)
        dataset = on_actors(
            ray.data.from_arrow([table.slice(i, 1) for i in range(table.num_rows)]),
            PageProjector,
            fn_constructor_kwargs={
                "prepared": model,
                "preprocessing": result.preprocessing,
                "device": result.device,
                "batch_size": result.batch_size,
                "memory_budget": result.memory_budget,
            },
            batch_size=1,
            **self.pool(ray, len(blobs)),
        )
        finished: dict[int, PageDone] = {}
        following = 0
        for output in results(ray, dataset):
            for blob in output["done"]:
                page: PageDone = pickle.loads(blob)
                finished[page.index] = page
            self._note_memory(dataset)
            while following in finished:
                page = finished.pop(following)
                name, number, count, rows = jobs[following]
                layer = state.layers[name]
                layer.positions[rows] = page.positions
                result.provider = result.provider or page.provider
                tiles = {(rows[row], slot): tile for (row, slot), tile in page.tiles.items()}
                advance(int((layer.images[rows] != EMPTY).sum()))
                yield FeaturesPage(name, number, count, rows, tiles)
                following += 1
        del model

    def map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, as Ray tasks of a worker's resources each.

        A task lost with its worker is retried, up to :data:`WORKER_RETRIES` times. For analyses
        whose items are independent (:func:`~onnxdeconv.analysis.evolution.trace_evolution`'s
        checkpoints).
        """
        ray = self.connect()
        self.pool(ray, len(items))
        remote = ray.remote(
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker,
            max_retries=WORKER_RETRIES,
        )(call_with)
        function_ref = ray.put(function)
        with worker_deaths(ray):
            return list(ray.get([remote.remote(function_ref, item) for item in items]))

    def describe(self) -> dict[str, Any]:
        """The engine, its address and workers, and what the runs measured.

        ``object_store_peak_bytes`` is the most object store memory Ray Data held for the
        run's batches at once (sampled as each result came back).
        """
        return {
            "name": "ray",
            "address": self.address,
            "gpus_per_worker": self.gpus_per_worker,
            "cpus_per_worker": self.cpus_per_worker,
            **self.measured,
        }
