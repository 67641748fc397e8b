"""The report as one self-contained HTML page, ``OUTPUT/index.html``.

:func:`write_report` turns what :func:`~onnxdeconv.analysis.report.build_report` computed into the
page's sections (figures from :mod:`onnxdeconv.render`, embedded as PNG) and writes the page
atomically; :mod:`onnxdeconv.render.report` holds the HTML pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from onnxdeconv.analysis.filters import FilterReport
from onnxdeconv.analysis.occlusion import OcclusionResult
from onnxdeconv.analysis.report import (
    ALIASING_THRESHOLD,
    LayerProjections,
    Predictions,
    Report,
    RotationInvariance,
    aliasing_note,
    first_layer_aliases,
)
from onnxdeconv.inputs import ModelInput
from onnxdeconv.outputs.tables import write_text
from onnxdeconv.prepared import Layer, PreparedModel
from onnxdeconv.render import display_projection
from onnxdeconv.render.filters import filters_figure
from onnxdeconv.render.invariance import invariance_figure
from onnxdeconv.render.occlusion import occlusion_figure, short_label
from onnxdeconv.render.report import (
    LayerRow,
    Page,
    Picture,
    Section,
    Tile,
    array_png,
    figure_png,
    render_html,
)

R = TypeVar("R")


#: How the page names each rule in a sentence.
RULE_NAMES = {
    "deconvnet": "the deconvnet",
    "guided": "guided backpropagation",
    "gradient": "the gradient",
}


class _Context:
    """What every section needs beside its result: the model's name, aliases and the images."""

    def __init__(
        self, report: Report, prepared: PreparedModel, inputs: Sequence[ModelInput], model: Path
    ) -> None:
        self.report = report
        self.prepared = prepared
        self.inputs = list(inputs)
        self.model = model
        self.aliases = prepared.alias_of
        first = self.inputs[0].preprocessing
        self.bgr = bool(first and first.bgr)

    def alias(self, name: str) -> str:
        return self.aliases.get(name, name)


def write_report(
    folder: Path,
    report: Report,
    prepared: PreparedModel,
    inputs: Sequence[ModelInput],
    *,
    model: Path,
    preprocessing: str,
    images: str,
    skipped: Sequence[str] = (),
    started: float | None = None,
) -> Path:
    """Write ``folder/index.html``: the model summary, the layers table and every section.

    Args:
        folder: An existing folder.
        report: What :func:`~onnxdeconv.analysis.report.build_report` computed.
        prepared: The model it ran on.
        inputs: The images it ran on, for their pictures.
        model: The model's path, as the page names it.
        preprocessing: How the images were preprocessed, in words.
        images: Which images the report ran on, in words (``3 of 4 from photos``).
        skipped: The images left out, each with the reason.
        started: ``time.monotonic()`` when the run started, for the run time in the summary.

    Returns:
        The page's path.
    """
    context = _Context(report, prepared, inputs, model)
    analyses = [
        _section(context, "predictions", "predictions", report.predictions, _predictions),
        _section(context, "filters", "filters", report.filters, _filters),
        _section(context, "occlusion", "occlusion", report.occlusion, _occlusion),
        _section(context, "invariance", "invariance", report.invariance, _invariance),
    ]
    projected = {layer.layer: layer for layer in report.projections}
    layer_sections = [
        _section(
            context,
            name,
            f"projections-{context.alias(name)}",
            projected.get(name),
            _projections,
            title=context.alias(name),
        )
        for name in report.projected
    ]
    section_of = {n: s.anchor for n, s in zip(report.projected, layer_sections, strict=True)}
    loaded = prepared.loaded
    projectable = sum(layer.projectable for layer in report.layers)
    shape = "[" + ", ".join(map(str, loaded.input_shape)) + "]"
    summary = [
        ("model", str(model)),
        ("input", f"{loaded.input_name} {shape} {loaded.input_dtype}"),
        ("opset", str(loaded.opset)),
        ("provider", report.provider),
        ("preprocessing", preprocessing),
        ("images", images),
        ("skipped", "; ".join(skipped) or "none"),
        ("layers", f"{len(report.layers)} ({projectable} projectable)"),
        ("projected layers", ", ".join(context.alias(n) for n in report.projected) or "none"),
    ]
    if started is not None:
        summary.append(("run time", f"{time.monotonic() - started:.1f} s"))
    page = Page(
        title=f"onnxdeconv report · {model.name}",
        summary=summary,
        layers=[_row(layer, section_of.get(layer.name, "")) for layer in report.layers],
        analyses=analyses,
        layer_sections=layer_sections,
    )
    target = folder / "index.html"
    write_text(target, render_html(page))
    return target


def _section(
    context: _Context,
    key: str,
    anchor: str,
    result: R | None,
    draw: Callable[[_Context, R], Section],
    title: str | None = None,
) -> Section:
    if result is None:
        reason = context.report.notes.get(key, "not computed")
        return Section(
            anchor=anchor, title=title or key, note=f"Not available for this model: {reason}"
        )
    return draw(context, result)


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


def _predictions(context: _Context, predictions: Predictions) -> Section:
    labels = context.report.labels
    tiles = []
    for index, (name, model_input) in enumerate(
        zip(context.report.names, context.inputs, strict=True)
    ):
        lines = [f"{short_label(c, labels)}: {p:.2f}" for c, p in predictions.top(index)]
        picture = Picture(array_png(model_input.display), alt=name)
        tiles.append(Tile(picture, None, f"{index}: {name}\n" + "\n".join(lines)))
    read_as = "logits, softmax applied" if predictions.softmax_applied else "probabilities"
    return Section(
        anchor="predictions",
        title="Images and predictions",
        paragraphs=[
            f"The images as the model sees them (resized and centre-cropped), with the three most "
            f"probable classes of its last output '{predictions.output}' (read as {read_as})."
        ],
        tiles=tiles,
    )


def _filters(context: _Context, result: FilterReport) -> Section:
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
            *([aliasing_note(result)] if first_layer_aliases(result) else []),
        ],
        figures=[Picture(figure_png(figure), alt="first-layer filters")],
    )


def _occlusion(context: _Context, result: OcclusionResult) -> Section:
    first = context.inputs[0]
    labels = context.report.labels
    alias = context.alias(result.layer)
    figure = occlusion_figure(
        result,
        first.display,
        result.projections,
        labels=labels,
        layout=first.layout,
        bgr=context.bgr,
        layer_name=alias,
        title=f"{context.model.name} · {context.report.names[0]} · occlusion sensitivity",
    )
    label = short_label(result.label, labels)
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


def _invariance(context: _Context, invariance: RotationInvariance) -> Section:
    curves = invariance.curves
    info = context.prepared.info
    titles = {
        name: f"{context.alias(name)} " + "x".join(map(str, info[name].per_sample))
        for name in curves.layers
    }
    figure = invariance_figure(
        [curves],
        invariance.images,
        layer_titles=titles,
        class_names=context.report.labels,
        examples={"rotate": invariance.examples},
        title=f"{context.model.name} · invariance to rotation",
    )
    return Section(
        anchor="invariance",
        title="Invariance to rotation",
        paragraphs=[
            f"Zeiler & Fergus Fig. 5 on the first {len(invariance.images)} images: the relative "
            "distance of each layer's features from the unrotated image's, and the probability "
            f"of the predicted class, over {len(curves.amounts)} rotations (reflected border)."
        ],
        figures=[Picture(figure_png(figure), alt="invariance curves")],
    )


def _projections(context: _Context, layer: LayerProjections) -> Section:
    names = context.report.names
    tiles = []
    guided = [None] * len(layer.selections) if layer.guided is None else list(layer.guided)
    for projection, pick, crop, beside in zip(
        layer.projections, layer.selections, layer.crops, guided, strict=True
    ):
        model_input = context.inputs[pick.image]
        picture = display_projection(projection, model_input.layout, context.bgr)
        guided_picture = (
            None if beside is None else display_projection(beside, model_input.layout, context.bgr)
        )
        patch = model_input.display
        where = "" if pick.position is None else f" @{','.join(map(str, pick.position))}"
        caption = (
            f"ch {pick.channel}{where} · act {pick.value:.3g}\nimage {pick.image}: "
            f"{names[pick.image]}"
        )
        if crop is not None:
            top, bottom, left, right = crop
            picture = picture[top:bottom, left:right]
            patch = patch[top:bottom, left:right]
            if guided_picture is not None:
                guided_picture = guided_picture[top:bottom, left:right]
            caption += f"\ncrop y{top}:{bottom} x{left}:{right}"
        tiles.append(
            Tile(
                Picture(array_png(picture), alt=f"{layer.alias} channel {pick.channel} projection"),
                Picture(array_png(patch), alt="image patch"),
                caption,
                guided=None
                if guided_picture is None
                else Picture(array_png(guided_picture), alt="guided backpropagation"),
            )
        )
    shape = "x".join(map(str, layer.shape))
    return Section(
        anchor=f"projections-{layer.alias}",
        title=f"Layer {layer.alias}",
        paragraphs=[
            f"Tensor '{layer.layer}' ({layer.op}, {shape}, receptive field "
            f"{layer.receptive_field.describe()}). For each of the first {layer.images} images, "
            f"the {layer.top} strongest channels, each projected from its strongest activation "
            f"with {RULE_NAMES[context.report.rule]} (left; mid-grey is zero)"
            + (
                ", then with guided backpropagation (middle; the first layer aliases, see the "
                "filters section),"
                if layer.guided is not None
                else ""
            )
            + " beside the image patch that unit sees (right)."
        ],
        tiles=tiles,
    )
