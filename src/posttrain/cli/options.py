"""What every command shares: the console, opening a source from CLI options, one-line errors."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

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

# The engine options every command that runs work units shares (validate, rehydrate, dedup,
# decontaminate, select, prepare, export).
EngineOpt = Annotated[
    str, typer.Option(help="Where the work runs: local (this process), processes (a local pool over fragments), ray.")
]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (ray engine; default: start a local one).")]
OutOpt = Annotated[
    str,
    typer.Option("--out", "-o", help="Output directory (default out/COMMAND). posttrain writes only inside it and refuses "
                 "one that holds an input or files it did not write."),
]
LimitOpt = Annotated[
    int | None, typer.Option(help="Read at most this many rows (the first ones, in fragment order).", min=0)
]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes (processes) or CPUs (ray); 0 = the CPU count.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="When another run is writing the same --out, wait for it instead of refusing.")
]
UnitRowsOpt = Annotated[
    int | None, typer.Option(hidden=True, help="Rows per work unit (fragment) for processes/ray (default 10,000).")
]


def with_wait(fn: F) -> F:
    """`fn` with the `--wait` option (every command that writes an --out folder), declared here once."""
    import inspect

    sig = inspect.signature(fn, eval_str=True)  # typer reads this signature as given: annotations resolved

    @functools.wraps(fn)
    def wrapper(*args: Any, wait: bool = False, **kwargs: Any) -> Any:
        from posttrain.io.outdir import WAIT

        WAIT["on"] = wait
        try:
            return fn(*args, **kwargs)
        finally:
            WAIT["on"] = False

    param = inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=WaitOpt)
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), param])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def engine_workers(engine: str, workers: int) -> int:
    """`--workers 0` means the cores this process may use (at most 8), whatever the engine."""
    from posttrain.io.cores import usable_cores
    from posttrain.runner.units import check_engine

    check_engine(engine, workers)
    return workers if workers > 0 else min(usable_cores(), 8)


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


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the CLI: which path, what happened, what to do.

    >>> import errno
    >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "out/x/shard.parquet"))
    'out/x/shard.parquet: No space left on device (fix: free disk space and rerun; finished work is kept)'
    """
    import errno

    fixes = {
        errno.ENOSPC: "free disk space and rerun; finished work is kept",
        errno.EDQUOT: "free disk space (quota) and rerun; finished work is kept",
        errno.EFBIG: "the file size limit (ulimit -f) was reached; raise it and rerun",
        errno.EACCES: "check the permissions, or choose another path",
        errno.EPERM: "check the permissions, or choose another path",
        errno.EROFS: "the file system is read-only; choose another path",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
        errno.EISDIR: "the path is a folder; give a file",
        errno.EEXIST: "the path exists already; choose another",
    }
    place = exc.filename if exc.filename is not None else "the file system"
    message = exc.strerror or str(exc)
    fix = fixes.get(exc.errno or 0, "check the path and the disk, then rerun")
    if exc.errno is None and "written" in message:  # a short write: the disk (or a size limit) is full
        fix = "free disk space (or raise the file size limit) and rerun; finished work is kept"
    return f"{place}: {message} (fix: {fix})"


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
            # user text (paths, recipe keys) is printed as given: never read as rich markup
            err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:  # `posttrain recipe --default | head`: the reader left; nothing went wrong
            # Python's advice: point stdout at devnull so the interpreter's final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as exc:  # the disk, not posttrain: a full disk, a read-only or missing folder
            if DEBUG["on"]:
                traceback.print_exc()
            err_console.print(Text.assemble(("error:", "bold red"), " ", os_error_line(exc)), highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug in posttrain: still one line, the traceback with --debug
            if DEBUG["on"]:
                traceback.print_exc()
            err_console.print(
                Text.assemble(("internal error:", "bold red"),
                              f" {type(exc).__name__}: {exc} (run with --debug for the traceback)"),
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
