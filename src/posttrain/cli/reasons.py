"""`posttrain reasons`: every reason code posttrain can write, its default severity and what it means."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("reasons")(reasons)


def reasons(
    prefix: Annotated[str | None, typer.Argument(help="Only codes starting with this, e.g. `privacy.` or `math`.")] = None,
) -> None:
    """List the reason codes (a recipe's `validate.severity` and `--severity` take these), default severity first."""
    from posttrain.jobs.reasons import load_all_reason_codes
    from posttrain.stage import reason_codes

    load_all_reason_codes()
    for code, rc in sorted(reason_codes().items()):
        if prefix is None or code.startswith(prefix):
            print(f"{code:32} {rc.severity:6} {rc.message}")
