"""The command line: one thin module per command over the Python API; `posttrain.cli.app` assembles them."""

from posttrain.cli.app import app, main

__all__ = ["app", "main"]
