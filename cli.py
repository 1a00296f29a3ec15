"""`star`: the command-line interface. A thin Typer layer: parse, build a config, call one function, print."""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from pipeline.errors import StarError


class _StarGroup(TyperGroup):
    """Turns a `StarError` from any command into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StarError as err:
            raise click.ClickException(str(err)) from err


app = typer.Typer(
    cls=_StarGroup,
    help="STAR: action recognition from RGB video and skeletons (STAR-Transformer, WACV 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


if __name__ == "__main__":
    app()
