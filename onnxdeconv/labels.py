"""Class names: read them from a file, and turn ``--label`` (an index or a name) into an index."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.errors import InputError, SelectionError, require_path

#: The model metadata entry that holds its class names: a JSON list of strings.
METADATA_KEY = "onnxdeconv.labels"

_INDEXED = re.compile(r"^(\d+)\s*[,:\t ]\s*(.+)$")


def read_labels(path: Path) -> list[str]:
    """Class names from a text file: one name per line, or ``index,name`` lines in any order.

    Raises:
        InputError: The file is missing or holds no names.
    """
    missing = f"labels file '{path}' does not exist: check its path"
    give = "a labels file (one class name a line)"
    require_path(path, "file", give, missing, error=InputError, parameter="labels")
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"labels file '{path}' is empty: give one class name per line")
    indexed = [_INDEXED.match(line) for line in lines]
    if all(indexed):
        table = {int(m.group(1)): m.group(2).strip() for m in indexed if m}
        return [table.get(i, f"class {i}") for i in range(max(table) + 1)]
    return lines


def resolve_label(label: str | int, names: Sequence[str] | None, classes: int | None = None) -> int:
    """The class index for ``label``: an index (``"7"``), a whole name or one of its synonyms.

    Names match case-insensitively a whole label or one of its comma-separated synonyms
    (``"tabby"`` for ``"tabby, tabby cat"``).

    Args:
        label: What the user gave.
        names: Class names, from the model's metadata or a ``--labels`` file.
        classes: Number of classes, to check an index against.

    Raises:
        SelectionError: The index is out of range, or the name is unknown or ambiguous.
    """
    text = str(label).strip()
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
        if classes is not None and not 0 <= index < classes:
            raise SelectionError(
                f"class {index} is out of range: the model has {classes} classes (0..{classes - 1})"
            )
        return index
    if not names:
        raise SelectionError(
            f"the model has no class names, so '{text}' cannot be looked up: give the class "
            "index, or a file of class names",
            parameter="labels",
        )
    wanted = text.casefold()
    exact = [i for i, name in enumerate(names) if name.strip().casefold() == wanted]
    if exact:
        return exact[0]
    synonyms = [
        i
        for i, name in enumerate(names)
        if wanted in (part.strip().casefold() for part in name.split(","))
    ]
    if len(synonyms) == 1:
        return synonyms[0]
    if synonyms:
        listed = "; ".join(f"{i} '{names[i]}'" for i in synonyms[:4])
        raise SelectionError(f"'{text}' names several classes ({listed}): give the class index")
    close = difflib.get_close_matches(text, list(names), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise SelectionError(f"unknown class name '{text}': {hint}give a class index or a label name")
