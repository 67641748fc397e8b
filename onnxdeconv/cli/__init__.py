"""The ``onnxdeconv`` command line: parse, call the library, show progress, write files."""

from __future__ import annotations

#: Click settings every command shares: -h as --help, and help text 100 columns wide.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}
