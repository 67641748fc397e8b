"""``onnxdeconv report``: one self-contained HTML page with the analyses that apply to a model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import click
import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from onnxdeconv.analysis.filters import analyse_filters
from onnxdeconv.analysis.invariance import invariance_curves, model_image_size, sweep
from onnxdeconv.analysis.layers import evolution_layers, invariance_layers, occlusion_layer
from onnxdeconv.analysis.occlusion import (
    mid_grey,
    occlusion_maps,
    occlusion_projections,
    to_probabilities,
)
from onnxdeconv.cli import options
from onnxdeconv.errors import InputError, OnnxDeconvError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import (
    ModelInput,
    Preprocessing,
    fit_image,
    load_input,
    read_image,
)
from onnxdeconv.labels import read_labels
from onnxdeconv.prepared import Layer, PreparedModel, prepare
from onnxdeconv.projector import Projector
from onnxdeconv.render import display_projection
from onnxdeconv.render.filters import filters_figure
from onnxdeconv.render.invariance import invariance_figure, layer_titles, transformed_examples
from onnxdeconv.render.occlusion import occlusion_figure, short_label
from onnxdeconv.render.report import (
    LayerRow,
    Picture,
    Report,
    Section,
    Tile,
    array_png,
    figure_png,
    render_html,
)
from onnxdeconv.runtime import Device, create_session, provider_of, run_bound

CONTEXT = options.CONTEXT
#: Layers projected when --layers is not given, spread over the depth.
DEFAULT_LAYERS = 6
#: Steps of the rotation sweep: few, since the report is an overview.
INVARIANCE_STEPS = 7
#: Images the invariance curves are measured on.
INVARIANCE_IMAGES = 3
ALIASING_THRESHOLD = 0.1


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of images (searched recursively) to analyse.",
)
@options.preset_option
@options.labels_option
@click.option(
    "--layers",
    help=f"Comma-separated tensor names or aliases to project; default: up to {DEFAULT_LAYERS} "
    "rectified layers spread over the depth.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use at most N images (sorted by path).")
@click.option(
    "--show",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Images whose projections are shown for each layer.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Strongest channels projected per image and layer.",
)
@options.size_option
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Folder to write index.html into (created if missing).",
)
def report(
    model: Path,
    images: Path,
    preset: str | None,
    labels_path: Path | None,
    layers: str | None,
    limit: int | None,
    show: int,
    top: int,
    size: str | None,
    device: str,
    output: Path,
) -> None:
    """Write one self-contained HTML page that shows a model layer by layer.

    The page (OUTPUT/index.html) holds the model summary, the table of layers, the predictions on
    the images, the first-layer filter diagnostics, the occlusion maps of the first image, the
    feature invariance under rotation, and for each chosen layer the projections of the
    strongest channels on the first images, each beside the image patch its unit sees. Every
    picture is embedded, so the page opens from disk with no server. An analysis that does not
    apply to the model becomes a note on the page; unreadable images are skipped.

    Example: onnxdeconv report models/digitnet.onnx --images models/examples -o report
    """
    started = time.monotonic()
    files = options.image_files(images, limit)
    folder = _output_folder(output)
    loaded = load_model(model)
    prepared = prepare(loaded, options.input_shape_for(loaded, options.int_pair(size, "--size")))
    preprocessing, source = options.resolve_preprocessing(loaded, preset, None, None, None, False)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    chosen = (
        [prepared.resolve(name.strip()) for name in layers.split(",") if name.strip()]
        if layers
        else None
    )
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    inputs, names, skipped = _load(files, images, prepared, preprocessing)
    batch = np.concatenate([i.array for i in inputs])
    rows = prepared.layers()
    if chosen is None:
        try:
            chosen = evolution_layers(prepared, DEFAULT_LAYERS)
        except OnnxDeconvError as exc:
            click.echo(f"no layer to project: {exc}", err=True)
            chosen = []
    session = create_session(prepared.loaded.model, cast(Device, device))
    provider = provider_of(session)
    click.echo(f"running on {provider}", err=True)
    aliases = {tensor: alias for alias, tensor in prepared.aliases.items()}
    context = _Context(
        model, prepared, inputs, names, batch, labels, cast(Device, device), aliases, top, show
    )
    steps: list[tuple[str, Callable[[], Section]]] = [
        ("predictions", lambda: _predictions(context, session)),
        ("filters", lambda: _filters(context)),
        ("occlusion", lambda: _occlusion(context)),
        ("invariance", lambda: _invariance(context, preprocessing, images)),
    ]
    steps += [(aliases.get(name, name), _layer_step(context, name)) for name in chosen]
    sections: list[Section] = []
    for title, step in tqdm(steps, desc="report", unit="section", leave=False, disable=None):
        sections.append(_guarded(title, step))
    analyses, layer_sections = sections[:4], sections[4:]
    section_of = {name: s.anchor for name, s in zip(chosen, layer_sections, strict=True)}
    summary = [
        ("model", str(model)),
        ("input", f"{loaded.input_name} {_shape(loaded.input_shape)} {loaded.input_dtype}"),
        ("opset", str(loaded.opset)),
        ("provider", provider),
        ("preprocessing", f"{source}: {preprocessing.describe()}"),
        ("images", f"{len(inputs)} of {len(files)} from {images}"),
        ("skipped", "; ".join(skipped) or "none"),
        ("layers", f"{len(rows)} ({sum(r.projectable for r in rows)} projectable)"),
        ("projected layers", ", ".join(aliases.get(n, n) for n in chosen) or "none"),
        ("run time", f"{time.monotonic() - started:.1f} s"),
    ]
    page = Report(
        title=f"onnxdeconv report · {model.name}",
        summary=summary,
        layers=[_row(r, section_of.get(r.name, "")) for r in rows],
        analyses=analyses,
        layer_sections=layer_sections,
    )
    target = folder / "index.html"
    with atomic_path(target) as temp:
        temp.write_text(render_html(page), encoding="utf-8")
    click.echo(f"{len(sections)} sections in {time.monotonic() - started:.1f} s", err=True)
    click.echo(str(target))


class _Context:
    """What every section needs: the model, the images and the options."""

    def __init__(
        self,
        model: Path,
        prepared: PreparedModel,
        inputs: list[ModelInput],
        names: list[str],
        batch: np.ndarray,
        labels: list[str] | None,
        device: Device,
        aliases: dict[str, str],
        top: int,
        show: int,
    ) -> None:
        self.model = model
        self.prepared = prepared
        self.inputs = inputs
        self.names = names
        self.batch = batch
        self.labels = labels
        self.device = device
        self.aliases = aliases
        self.top = top
        self.show = show

    @property
    def bgr(self) -> bool:
        first = self.inputs[0].preprocessing
        return bool(first and first.bgr)


def _output_folder(output: Path) -> Path:
    if output.exists() and not output.is_dir():
        raise click.BadParameter(
            f"'{output}' is a file: give a folder for index.html", param_hint="-o"
        )
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise click.BadParameter(
            f"the folder above '{output}' does not exist: create it first", param_hint="-o"
        )
    output.mkdir(exist_ok=True)
    return output


def _load(
    files: list[Path], folder: Path, prepared: PreparedModel, preprocessing: Preprocessing
) -> tuple[list[ModelInput], list[str], list[str]]:
    # Like options.load_images, but keeps each image's display picture for the page.
    height, width = model_image_size(prepared)
    inputs, names, skipped = [], [], []
    for path in files:
        try:
            inputs.append(load_input(path, prepared.loaded, preprocessing, (height, width)))
            names.append(str(path.relative_to(folder)))
        except InputError as exc:
            click.echo(f"skipped {path}: {exc}", err=True)
            skipped.append(f"{path.relative_to(folder)}: {exc}")
    if not inputs:
        raise InputError(f"none of the {len(files)} images in '{folder}' is readable: check them")
    click.echo(f"using {len(inputs)} of {len(files)} images from {folder}", err=True)
    return inputs, names, skipped


def _guarded(title: str, step: Callable[[], Section]) -> Section:
    try:
        return step()
    except OnnxDeconvError as exc:
        click.echo(f"{title}: not shown: {exc}", err=True)
        return Section(anchor=title, title=title, note=f"Not available for this model: {exc}")


def _shape(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _row(layer: Layer, section: str) -> LayerRow:
    return LayerRow(
        alias=layer.alias,
        tensor=layer.name,
        op=layer.op,
        shape="x".join(map(str, layer.shape)),
        receptive_field=layer.receptive_field.describe(),
        projectable=layer.projectable,
        reason=layer.reason,
        section=section,
    )


def _predictions(context: _Context, session: ort.InferenceSession) -> Section:
    loaded = context.prepared.loaded
    output = loaded.model.graph.output[-1].name
    fixed = loaded.input_shape[0]
    chunk = fixed if isinstance(fixed, int) and fixed > 0 else len(context.batch)
    scores = np.concatenate(
        [
            run_bound(session, {loaded.input_name: context.batch[i : i + chunk]}, [output])[
                output
            ].numpy()
            for i in range(0, len(context.batch), chunk)
        ]
    ).reshape(len(context.batch), -1)
    probabilities, applied = to_probabilities(scores.astype(np.float64))
    tiles = []
    for index, (name, model_input) in enumerate(zip(context.names, context.inputs, strict=True)):
        best = np.argsort(-probabilities[index])[:3]
        lines = [
            f"{short_label(int(c), context.labels)}: {probabilities[index, c]:.2f}" for c in best
        ]
        picture = Picture(array_png(model_input.display), alt=name)
        tiles.append(Tile(picture, None, f"{index}: {name}\n" + "\n".join(lines)))
    read_as = "logits, softmax applied" if applied else "probabilities"
    return Section(
        anchor="predictions",
        title="Images and predictions",
        paragraphs=[
            f"The images as the model sees them (resized and centre-cropped), with the three most "
            f"probable classes of its last output '{output}' (read as {read_as})."
        ],
        tiles=tiles,
    )


def _filters(context: _Context) -> Section:
    result = analyse_filters(context.prepared, context.batch, aliasing_threshold=ALIASING_THRESHOLD)
    figure = filters_figure(
        result,
        title=f"{context.model.name} · first layer {result.layer}",
        bgr=context.bgr,
        aliasing_threshold=ALIASING_THRESHOLD,
    )
    return Section(
        anchor="filters",
        title="First-layer filters",
        paragraphs=[
            "The diagnostics of Zeiler & Fergus Fig. 6 (see 'onnxdeconv filters'): frequency "
            "coverage, dead filters and the aliasing score of the first convolution.",
            f"Verdict: {result.verdict}",
        ],
        figures=[Picture(figure_png(figure), alt="first-layer filters")],
    )


def _occlusion(context: _Context) -> Section:
    prepared = context.prepared
    first = context.inputs[0]
    projector = Projector(
        prepared, occlusion_layer(prepared), device=context.device, keep_outputs=True
    )
    fill = None
    if first.preprocessing is not None:
        fill = mid_grey(first.preprocessing, prepared.input_shape, prepared.loaded.input_dtype)
    result = occlusion_maps(projector, first.array, fill=fill)
    panel = occlusion_projections(projector, first.array, result, count=3)
    alias = context.aliases.get(result.layer, result.layer)
    figure = occlusion_figure(
        result,
        first.display,
        panel,
        labels=context.labels,
        layout=first.layout,
        bgr=context.bgr,
        layer_name=alias,
        title=f"{context.model.name} · {context.names[0]} · occlusion sensitivity",
    )
    label = short_label(result.label, context.labels)
    return Section(
        anchor="occlusion",
        title="Occlusion sensitivity",
        paragraphs=[
            f"Zeiler & Fergus Fig. 7 on the first image: a {result.size}x{result.size} grey square "
            f"slides with stride {result.stride}; the maps show the total activation of {alias} "
            f"channel {result.channel} and the probability of class {result.label} ({label}), "
            f"p = {result.baseline_probability:.3f} unoccluded, lowest "
            f"{result.probability.min():.3f}."
        ],
        figures=[Picture(figure_png(figure), alt="occlusion maps")],
    )


def _invariance(context: _Context, preprocessing: Preprocessing, folder: Path) -> Section:
    prepared = context.prepared
    size = model_image_size(prepared)
    pictures, names = [], []
    for name in context.names[:INVARIANCE_IMAGES]:
        # The transforms work on the picture before preprocessing.
        pictures.append(fit_image(read_image(folder / name), size))
        names.append(name)
    layers = invariance_layers(prepared)
    amounts = sweep("rotate", size[0], INVARIANCE_STEPS)
    curves = invariance_curves(
        prepared, pictures, preprocessing, "rotate", amounts, layers, device=context.device
    )
    figure = invariance_figure(
        [curves],
        names,
        layer_titles=layer_titles(prepared, layers),
        class_names=context.labels,
        examples={"rotate": transformed_examples(pictures[0], "rotate", amounts)},
        title=f"{context.model.name} · invariance to rotation",
    )
    return Section(
        anchor="invariance",
        title="Invariance to rotation",
        paragraphs=[
            f"Zeiler & Fergus Fig. 5 on the first {len(pictures)} images: the relative distance "
            "of each layer's features from the unrotated image's, and the probability of the "
            f"predicted class, over {len(amounts)} rotations (reflected border)."
        ],
        figures=[Picture(figure_png(figure), alt="invariance curves")],
    )


def crop_box(
    field: ReceptiveField, position: tuple[int, ...] | None, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """The unit's receptive field clipped to the image, as (top, bottom, left, right).

    None when the unit sees the whole image or at least half of it: then the whole picture says
    more than a patch, as in ``onnxdeconv project``.
    """
    box = field.box(position) if position else None
    if box is None or len(box) != 2:
        return None
    (top, bottom), (left, right) = box
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height), min(right, width)
    if (bottom - top) * (right - left) >= height * width / 2:
        return None
    return top, bottom, left, right


def _layer_step(context: _Context, name: str) -> Callable[[], Section]:
    return lambda: _layer(context, name)


def _layer(context: _Context, name: str) -> Section:
    alias = context.aliases.get(name, name)
    anchor = f"projections-{alias}"
    projector = Projector(context.prepared, name, device=context.device)
    count = min(context.show, len(context.batch))
    forward = projector.forward(context.batch[:count])
    picks = [
        p for i in range(count) for p in projector.strongest(forward, top=context.top, image=i)
    ]
    projections = projector.project(forward, picks)
    field = context.prepared.receptive_fields[name]
    tiles = []
    for projection, pick in zip(projections, picks, strict=True):
        model_input = context.inputs[pick.image]
        picture = display_projection(projection, model_input.layout, context.bgr)
        patch = model_input.display
        height, width = picture.shape[:2]
        where = "" if pick.position is None else f" @{','.join(map(str, pick.position))}"
        caption = (
            f"ch {pick.channel}{where} · act {pick.value:.3g}\n"
            f"image {pick.image}: {context.names[pick.image]}"
        )
        box = crop_box(field, pick.position, height, width)
        if box is not None:
            top, bottom, left, right = box
            picture = picture[top:bottom, left:right]
            patch = patch[top:bottom, left:right]
            caption += f"\ncrop y{top}:{bottom} x{left}:{right}"
        tiles.append(
            Tile(
                Picture(array_png(picture), alt=f"{alias} channel {pick.channel} projection"),
                Picture(array_png(patch), alt="image patch"),
                caption,
            )
        )
    shape = "x".join(map(str, projector.layer_shape))
    return Section(
        anchor=anchor,
        title=f"Layer {alias}",
        paragraphs=[
            f"Tensor '{name}' ({context.prepared.producers[name].op_type}, {shape}, receptive "
            f"field {field.describe()}). For each of the first {count} images, the {context.top} "
            "strongest channels, each projected from its strongest activation with the deconvnet "
            "(left; mid-grey is zero) beside the image patch that unit sees (right)."
        ],
        tiles=tiles,
    )
