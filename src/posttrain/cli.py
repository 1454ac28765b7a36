"""The command line: a thin typer layer over the Python API (`posttrain.*`).

Each command family lives in `posttrain.commands.<name>` and registers itself; every command is
wrapped so a user error prints one line and exits non-zero (`--debug` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated

import typer

from posttrain import __version__
from posttrain.commands._common import DEBUG, handle_errors

# Command modules, in the order of the pipeline. A module that is not there yet is skipped, so a
# partial checkout still has a working CLI.
COMMAND_MODULES = (
    "look",
    "validate",
    "rehydrate",
    "report",
    "dedup",
    "decontaminate",
    "select",
    "prepare",
    "export",
    "train",
)

app = typer.Typer(
    name="posttrain",
    help="Nemotron post-training data, from the hub to packed, verified training shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"posttrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    DEBUG["on"] = debug or bool(os.environ.get("POSTTRAIN_DEBUG"))


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"posttrain.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"posttrain.commands.{name}":
                continue
            raise
        module.register(app)
    for cmd in app.registered_commands:
        cmd.callback = handle_errors(cmd.callback)


_register_all()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
