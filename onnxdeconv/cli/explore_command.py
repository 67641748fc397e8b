"""``onnxdeconv explore``: a static site that projects units live in the browser."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from onnxdeconv.analysis.layers import feature_layers
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, output_folder, progress
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.errors import InputError
from onnxdeconv.inputs import read_image
from onnxdeconv.labels import read_labels
from onnxdeconv.outputs.explore import (
    SiteImage,
    fitted_pixels,
    ort_files,
    read_features_run,
    start_server,
    write_site,
)
from onnxdeconv.prepared import PreparedModel

#: Images listed on the page at most.
MAX_IMAGES = 48


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.layers_option("the deepest rectified layer at each resolution")
@options.images_option("listed on the page")
@click.option(
    "--features",
    "features_run",
    type=options.PATH,
    help="Output folder of a 'features' run: each channel shows its top-k dataset examples.",
)
@click.option(
    "--rule",
    "rules",
    type=click.Choice(RULES),
    multiple=True,
    help="Rule the page offers (repeatable; the first is shown first); default: all three.",
)
@options.labels_option
@click.option("--webgpu", is_flag=True, help="Also vendor the WebGPU build (27 MB more).")
@click.option("--serve", is_flag=True, help="Serve the site on localhost and print its URL.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve.")
@options.model_options(device=None)
@options.output_option("Folder to write the site into (created); default: explore.")
def explore(
    model: Path,
    layers: list[str] | None,
    images: Path | None,
    features_run: Path | None,
    rules: tuple[Rule, ...],
    labels_path: Path | None,
    webgpu: bool,
    serve: bool,
    port: int,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Write a static site to explore a model: maps, and live projections in the browser.

    Pick or drop an image, see a layer's activation maps sorted by strength, click a channel or
    a unit and see its projection beside the input patch it sees, computed in the browser by
    ONNX Runtime Web (WebAssembly). Any static web server serves the folder (--serve starts
    one); it works offline.

    Example: onnxdeconv explore models/digitnet.onnx --images models/examples -o site --serve
    """
    ort_files(webgpu)  # before any work: the runtime must have been fetched
    folder = output_folder(output or Path("explore"))
    loaded, prepared, preprocessing, how = model_options.load(model)
    info(f"preprocessing: {how}")
    chosen = [prepared.resolve(name) for name in layers] if layers else feature_layers(prepared)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    listed = [_picture(path, images, prepared) for path in _files(images)]
    dataset: list[SiteImage] = []
    features = None
    if features_run is not None:
        root, names, features = read_features_run(features_run, prepared, chosen)
        # The run's entries number these images: each must be there (the run read them all).
        dataset = [SiteImage(n, fitted_pixels(read_image(root / n), prepared)) for n in names]
    rule_list = list(dict.fromkeys(rules)) or list(RULES)
    with progress(1 + len(chosen) * len(rule_list), "explore", "graph") as advance:
        summary = write_site(
            folder,
            prepared,
            chosen,
            rule_list,
            preprocessing,
            model_name=model.name,
            images=[p for p in listed if p is not None],
            labels=labels,
            dataset=dataset,
            features=features,
            webgpu=webgpu,
            progress=advance,
        )
    mib = {k: f"{v / 2**20:.1f} MiB" for k, v in summary.sizes.items()}
    info(
        f"site {mib['total']}: graphs {mib['graphs']} (weights {mib['weights']}, "
        f"{summary.unshared_bytes / 2**20:.1f} MiB unshared), runtime {mib['runtime']}, "
        f"images {mib['images']}"
    )
    click.echo(str(folder / "index.html"))
    if serve:
        _serve(folder, port)


def _files(images: Path | None) -> list[Path]:
    return [] if images is None else find_images(images, MAX_IMAGES)


def _picture(path: Path, folder: Path | None, prepared: PreparedModel) -> SiteImage | None:
    """The picture at ``path``, named by its path inside ``folder``; None (said) if unreadable."""
    name = path.relative_to(folder).as_posix() if folder is not None else path.name
    try:
        return SiteImage(name, fitted_pixels(read_image(path), prepared))
    except InputError as exc:
        info(f"skipped {path}: {exc}")
        return None


def _serve(folder: Path, port: int) -> None:
    server = start_server(folder, port)
    url = f"http://127.0.0.1:{server.server_port}/"
    info(f"serving {folder} at {url} (Ctrl-C stops)")
    click.echo(url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
