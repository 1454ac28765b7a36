"""The command line: a thin typer layer over the Python API (`posttrain.*`).

Each command family lives in `posttrain.cli.<name>` and registers itself; every command is
wrapped so a user error prints one line and exits non-zero (`--debug` shows the traceback).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from posttrain import __version__
from posttrain.cli.options import DEBUG, handle_errors, with_wait

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


#: the commands that write an --out folder (they take --wait)
WRITERS = ("validate", "rehydrate", "dedup", "decontaminate", "select", "prepare", "export")


def _register_all() -> None:
    # in the order of the pipeline; each module declares its commands with `register(app)`
    from posttrain.cli import (
        decontaminate,
        dedup,
        eval,
        export,
        info,
        inspect,
        prepare,
        reasons,
        rehydrate,
        report,
        select,
        train,
        validate,
    )

    for module in (info, inspect, validate, rehydrate, report, dedup, decontaminate, select, prepare, export, train,
                   eval, reasons):
        module.register(app)
    for cmd in app.registered_commands:
        if cmd.name in WRITERS:
            cmd.callback = with_wait(cmd.callback)
        cmd.callback = handle_errors(cmd.callback)


_register_all()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
