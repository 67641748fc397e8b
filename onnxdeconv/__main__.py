"""``python -m onnxdeconv`` runs the command line."""

from __future__ import annotations

from onnxdeconv.cli.main import main

main()
