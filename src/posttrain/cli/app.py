"""The command line: a thin typer layer over the Python API (`posttrain.*`).

Each command family lives in `posttrain.cli.<name>` and registers itself; every command is
wrapped so a user error prints one line and exits non-zero (`--debug` shows the traceback).

The command modules load when typer first asks for the commands (`--help`, a test's `CliRunner`),
except under `main()` with a command named: then only that command's module loads, so that
`posttrain validate` does not import what `decontaminate`, `inspect` or `eval` need (~0.1 s of a run).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from posttrain import __version__
from posttrain.cli.options import DEBUG, handle_errors, with_wait

#: command -> the module under posttrain.cli that declares it; modules in the order of the pipeline
COMMANDS = {
    "info": "info", "inspect": "inspect", "validate": "validate", "rehydrate": "rehydrate", "report": "report",
    "dedup": "dedup", "decontaminate": "decontaminate", "select": "select", "prepare": "prepare", "recipe": "prepare",
    "export": "export", "train": "train", "eval": "eval", "reasons": "reasons",
}  # fmt: skip
#: the commands that write an --out folder (they take --wait)
WRITERS = ("validate", "rehydrate", "dedup", "decontaminate", "select", "prepare", "export")


class _LazyTyper(typer.Typer):
    """A Typer that imports the command modules when its commands are first read."""

    def __init__(self, **kwargs: Any) -> None:
        self._pending = list(dict.fromkeys(COMMANDS.values()))
        self._commands: list[Any] = []
        self._loading = False
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def registered_commands(self) -> list[Any]:
        if not self._loading:  # a module registering its command appends here: that must not load the next
            self.load(self._pending)
        return self._commands

    @registered_commands.setter
    def registered_commands(self, value: list[Any]) -> None:
        self._commands = value

    def load(self, modules: list[str]) -> None:
        """Register the commands of `modules` (those not registered yet), wrapped."""
        import importlib

        for name in [m for m in modules if m in self._pending]:
            self._pending.remove(name)
            before = len(self._commands)
            self._loading = True
            try:
                importlib.import_module(f"posttrain.cli.{name}").register(self)
            finally:
                self._loading = False
            for cmd in self._commands[before:]:
                if cmd.name in WRITERS:
                    cmd.callback = with_wait(cmd.callback)
                cmd.callback = handle_errors(cmd.callback)

    def only(self, command: str) -> None:
        """Register `command`'s module alone: typer then builds just that command."""
        self.load([COMMANDS[command]])
        self._pending = []


app = _LazyTyper(
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


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the first word that is not an option names the command (the root options take no value)
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in COMMANDS and "--help" not in sys.argv[1 : sys.argv.index(command)]:
        app.only(command)
    app()


if __name__ == "__main__":
    main()
