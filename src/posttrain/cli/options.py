"""What every command shares: the console, opening a source from CLI options, one-line errors."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from posttrain.errors import PosttrainError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: Set by the app's `--debug` option: show tracebacks instead of one-line errors.
DEBUG = {"on": False}

SOURCE_HELP = (
    "A local file, directory or glob (parquet / JSONL / JSONL.gz), or a hub id such as "
    "nvidia/Nemotron-Post-Training-Dataset-v1 (hf://datasets/... also works). Default: the bundled sample."
)

# The options every streaming command shares, declared once.
SourceArg = Annotated[str | None, typer.Argument(help=SOURCE_HELP, show_default=False)]
SplitOpt = Annotated[list[str] | None, typer.Option("--split", "-s", help="Split(s) to read; repeat or comma-separate.")]
FormatOpt = Annotated[
    str | None,
    typer.Option(help="Force the input format: nemotron-v1, nemotron-v2, llama-nemotron, llama-nemotron-text, openai."),
]
MirrorOpt = Annotated[
    str | None, typer.Option(help="Read a hub id from this local directory laid out like the hub repo (offline).")
]

# The engine options every row-streaming command shares (validate, decontaminate, export, rehydrate;
# dedup and select accept them and explain that they need the local engine).
EngineOpt = Annotated[
    str, typer.Option(help="Where the work runs: local (this process), processes (a local pool over fragments), ray.")
]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (ray engine; default: start a local one).")]
OutOpt = Annotated[
    str,
    typer.Option("--out", "-o", help="Output directory (default out/COMMAND). posttrain writes only inside it and refuses "
                 "one that holds an input or files it did not write."),
]
LimitOpt = Annotated[int | None, typer.Option(help="Read at most this many rows (the first ones, in fragment order).")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes (processes) or CPUs (ray); 0 = the CPU count.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")]
UnitRowsOpt = Annotated[
    int | None, typer.Option(hidden=True, help="Rows per work unit (fragment) for processes/ray (default 10,000).")
]


def engine_workers(engine: str, workers: int) -> int:
    """`--workers 0` means the CPU count (at most 8), whatever the engine."""
    import os

    from posttrain.runner.units import check_engine

    check_engine(engine, workers)
    return workers if workers > 0 else min(os.cpu_count() or 1, 8)


def open_cli_source(
    source: str | None,
    split: list[str] | str | None = None,
    limit: int | None = None,
    format: str | None = None,
    hub_mirror: str | None = None,
):
    """`posttrain.io.sources.open_source` with CLI conventions (comma-separated splits)."""
    from posttrain.io.sources import open_source
    from posttrain.io.sources.discover import parse_splits

    return open_source(source, split=parse_splits(split), limit=limit, format=format, hub_mirror=hub_mirror)


def handle_errors(fn: F) -> F:
    """Turn PosttrainError into one line on stderr and a non-zero exit; other errors too, as bugs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except PosttrainError as exc:
            if DEBUG["on"]:
                traceback.print_exc()
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug in posttrain: still one line, the traceback with --debug
            if DEBUG["on"]:
                traceback.print_exc()
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
