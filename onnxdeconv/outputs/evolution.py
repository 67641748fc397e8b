"""The files of ``evolution``: the figure of the maps through training (Fig. 4), and a JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.analysis.evolution import EvolutionReport
from onnxdeconv.inputs import image_layout
from onnxdeconv.outputs.tables import OutputPaths, write_json
from onnxdeconv.render import save_figure
from onnxdeconv.render.evolution import evolution_figure


def write_evolution(
    report: EvolutionReport,
    paths: OutputPaths,
    *,
    checkpoints: Sequence[str],
    image_names: Sequence[str],
    input_shape: tuple[int, ...],
    bgr: bool = False,
) -> str:
    """Write the figure, and the JSON ``paths`` ask for; return the text table.

    Args:
        report: What the checkpoints' maps did.
        paths: Where to write.
        checkpoints: The checkpoint files, in training order.
        image_names: The images the maps' strongest activations were found in.
        input_shape: The per-sample input shape, for the image layout.
        bgr: Whether the input's channels are in BGR order.
    """
    layout, _ = image_layout(input_shape)
    title = f"{Path(checkpoints[0]).parent.name or 'checkpoints'} · {len(image_names)} images"
    figure = evolution_figure(report, layout=layout, bgr=bgr, title=title, image_names=image_names)
    save_figure(figure, paths.output)
    if paths.json is not None:
        write_json(paths.json, report.to_json(image_names, checkpoints))
    return report.text_table()
