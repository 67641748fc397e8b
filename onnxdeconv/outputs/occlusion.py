"""The files of ``occlusion``: the figure of the maps (Zeiler & Fergus Fig. 7), and a JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.analysis.occlusion import OcclusionResult
from onnxdeconv.inputs import ModelInput
from onnxdeconv.outputs.tables import OutputPaths, write_json
from onnxdeconv.render import save_figure
from onnxdeconv.render.occlusion import occlusion_figure, occlusion_summary


def write_occlusion(
    result: OcclusionResult,
    model_input: ModelInput,
    paths: OutputPaths,
    *,
    labels: Sequence[str] | None,
    layer_name: str,
    model: Path,
    image: Path,
) -> str:
    """Write the figure, and the JSON ``paths`` ask for; return the summary lines.

    Args:
        result: The occlusion maps.
        model_input: The occluded image, for the figure.
        paths: Where to write.
        labels: The class names (None: indices).
        layer_name: The name (alias) of the feature map's layer to show.
        model: The model file, named in the title and the JSON.
        image: The image file, likewise.
    """
    figure = occlusion_figure(
        result,
        model_input.display,
        result.projections,
        labels=labels,
        layout=model_input.layout,
        bgr=bool(model_input.preprocessing and model_input.preprocessing.bgr),
        layer_name=layer_name,
        title=f"{model.name} · {image.name} · occlusion sensitivity",
    )
    save_figure(figure, paths.output)
    if paths.json is not None:
        data = {"model": str(model), "image": str(image), "layer_alias": layer_name}
        write_json(paths.json, {**data, **result.to_json(labels)})
    return "\n".join(occlusion_summary(result, labels, layer_name))
