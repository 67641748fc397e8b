"""``python -m onnxdeconv`` runs the command line."""

from __future__ import annotations

import sys

try:
    from onnxdeconv.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: no traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)

main()
