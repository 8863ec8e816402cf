"""``effkit recipes``: the shipped recipes, listed, shown and copied to be edited."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from effkit.console import out

recipes_app = typer.Typer(
    help="The shipped recipes: list them, show one, copy one to edit. "
    "apply, validate and search also take a shipped recipe's name.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@recipes_app.callback()
def listing(ctx: typer.Context) -> None:
    """List the shipped recipes and search specs with what they do and what they measured."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape
    from rich.table import Table

    from effkit.shipped import recipes_dir, shipped

    found = shipped()
    if not found:
        out.print("this installation of effkit has no shipped recipes")
        return
    table = Table(title=f"Shipped recipes ({recipes_dir()})", show_lines=True)
    table.add_column("name", no_wrap=True)
    table.add_column("kind")
    table.add_column("what it does")
    table.add_column("measured")
    for item in found:
        table.add_row(item.name, item.kind, escape(item.description), escape(item.measured))
    out.print(table)
    out.print("effkit apply NAME runs one; effkit recipes copy NAME [DEST] copies it to edit",
              highlight=False)  # fmt: skip


@recipes_app.command()
def show(name: Annotated[str, typer.Argument(help="A shipped recipe's name.")]) -> None:
    """Print a shipped recipe's YAML."""
    from effkit.shipped import find

    sys.stdout.write(find(name).read_text(encoding="utf-8"))


@recipes_app.command()
def copy(
    name: Annotated[str, typer.Argument(help="A shipped recipe's name.")],
    dest: Annotated[
        Path | None, typer.Argument(help="File or folder (default: the working folder).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Copy a shipped recipe (a search spec with its base recipe) to edit and run."""
    from effkit.shipped import copy as copy_recipe

    for path in copy_recipe(name, dest, force=force):
        out.print(f"wrote {path}", highlight=False)
