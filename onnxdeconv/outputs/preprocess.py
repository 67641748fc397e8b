"""The table ``onnxdeconv preprocess`` prints: each candidate's top classes on each image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.analysis.preprocess import CLOSE, DECLARED, PreprocessingReport

#: Class names are cut to their first synonym and this many characters, to keep rows short.
NAME_WIDTH = 24


def preprocess_table(report: PreprocessingReport, labels: Sequence[str] | None = None) -> list[str]:
    """One block per candidate (its values and certainty, then a row per image), best first."""

    def name(index: int) -> str:
        if labels is None or not 0 <= index < len(labels):
            return f"class {index}"
        return labels[index].split(",")[0].strip()[:NAME_WIDTH]

    certainty, mean_top1 = report.certainty, report.mean_top1
    width = max(len(Path(image).name) for image in report.images)
    lines = []
    for c in sorted(range(len(report.candidates)), key=lambda c: -certainty[c]):
        candidate = report.candidates[c]
        mark = "  <- recommended" if candidate == report.recommended else ""
        values = report.preprocessings[c].describe()
        scores = f"certainty {certainty[c]:.3f}, mean top-1 {mean_top1[c]:.3f}"
        lines.append(f"{candidate}: {scores}{mark}  ({values})")
        for i, image in enumerate(report.images):
            top = ", ".join(
                f"{name(int(k))} {p:.3f}"
                for k, p in zip(
                    report.top_classes[c, i], report.top_probabilities[c, i], strict=True
                )
            )
            lines.append(f"  {Path(image).name:<{width}}  {top}")
    why = (
        "the model's own, as certain as the best"
        if report.recommended == DECLARED
        else "the model is most certain under it: the highest mean of 1 - entropy/log(classes)"
    )
    lines.append(f"recommended: {report.recommended} ({why})")
    if report.close:
        lines.append(
            f"caution: {', '.join(report.close)} come within {CLOSE} of it: these images do not "
            "tell them apart; try harder images, or choose by what the model was trained with"
        )
    return lines
