"""The ``onnxdeconv`` command line: parse, call the library, show progress, write files."""
