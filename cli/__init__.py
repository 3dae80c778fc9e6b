"""The ``diccae`` command line: thin Typer wrappers over importable functions."""
