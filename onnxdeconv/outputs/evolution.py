"""The files of ``evolution``: the figure of the maps through training (Fig. 4), and a JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.analysis.evolution import EvolutionReport
from onnxdeconv.inputs import image_layout
from onnxdeconv.outputs.tables import OutputPaths, skipped_json, write_json
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
    skipped: Sequence[tuple[str, str]] = (),
) -> str:
    """Write the figure, and the JSON ``paths`` ask for; return the text table.

    Args:
        report: What the checkpoints' maps did.
        paths: Where to write.
        checkpoints: The checkpoint files, in training order.
        image_names: The images the maps' strongest activations were found in.
        input_shape: The per-sample input shape, for the image layout.
        bgr: Whether the input's channels are in BGR order.
        skipped: ``(image, reason)`` for each unreadable image left out, listed in the JSON.
    """
    layout, _ = image_layout(input_shape)
    title = f"{Path(checkpoints[0]).parent.name or 'checkpoints'} · {len(image_names)} images"
    figure = evolution_figure(report, layout=layout, bgr=bgr, title=title, image_names=image_names)
    save_figure(figure, paths.output)
    if paths.json is not None:
        document = report.to_json(image_names, checkpoints)
        write_json(paths.json, {**document, "skipped_images": skipped_json(skipped)})
    return report.text_table()
