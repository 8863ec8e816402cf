"""The ``effkit`` command line: apply, validate, schema, plugins, bench, eval, predict, export,
search."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from effkit import cli_models
from effkit.cli_common import bench_table, metrics_table
from effkit.cli_recipes import recipes_app
from effkit.console import console, out, setup_logging, switches
from effkit.errors import EffkitError
from effkit.pareto.command import checked
from effkit.pareto.command import search as search_command

app = typer.Typer(
    name="effkit",
    help="Composable efficiency transforms for transformer encoders.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: stages.finetune.train.steps=300."),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    switches.debug = debug
    switches.quiet = quiet
    setup_logging(logging.WARNING if quiet else logging.INFO)


@app.command()
def apply(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file, or a shipped recipe's name.")],
    set_: SetOption = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/RECIPE-NAME).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not reuse stages from the cache.")
    ] = False,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="Skip the benchmark.")] = False,
) -> None:
    """Run a recipe: stages, evaluation, benchmark, report. Re-running resumes."""
    from effkit.recipe import load_recipe
    from effkit.runner import Runner
    from effkit.shipped import recipe_path

    spec = load_recipe(recipe_path(recipe), set_ or [])
    result = Runner(
        spec, run_dir, cache=not no_cache, benchmark=not no_bench, progress=not switches.quiet
    ).run()
    if result.metrics:
        out.print(metrics_table(result.metrics, f"{spec.name}: task metrics"))
    if result.bench:
        out.print(bench_table(result.bench))
    out.print(f"report: {result.report}")


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file, or a shipped recipe's name.")],
    set_: SetOption = None,
) -> None:
    """Check a recipe (or a search spec) against its models, data and devices, without running
    or writing anything: the checks apply makes before it starts."""
    from effkit.pareto.spec import is_search_spec
    from effkit.preflight import preflight, unneeded_stages
    from effkit.recipe import load_recipe
    from effkit.shipped import recipe_path

    recipe = recipe_path(recipe)
    if recipe.is_file() and is_search_spec(recipe):
        out.print(f"{recipe}: search spec, {checked(recipe, set_ or [])}")
        return
    spec = load_recipe(recipe, set_ or [])
    found = preflight(spec)
    skipped = unneeded_stages(spec)
    run = [s for s in spec.stages if s.name not in skipped]
    steps = sum(s.train.steps for s in run)
    out.print(f"{recipe}: valid ({len(run)} stage(s) to run, {steps} training steps; "
              f"{found.summary()}; checked in {found.seconds:.1f} s)", highlight=False,
              soft_wrap=True)  # fmt: skip
    for note in found.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    format_: Annotated[
        str, typer.Option("--format", help="json (for editors) or markdown (the reference).")
    ] = "json",
    search: Annotated[
        bool, typer.Option("--search", help="The schema of search specs instead of recipes.")
    ] = False,
) -> None:
    """Print the recipe schema, installed plugins included: JSON schema or a Markdown reference.
    Shipped recipes name their schema in a first line for editors
    (`# yaml-language-server: $schema=recipe.schema.json`)."""
    from effkit.errors import RecipeError
    from effkit.schema import reference_markdown, schema_text
    from effkit.storage import write_text

    if format_ not in ("json", "markdown"):
        raise RecipeError(f"unknown schema format '{format_}'", hint="json or markdown")
    if search and format_ != "json":
        raise RecipeError("--search gives the JSON schema of search specs", hint="--format json")
    if format_ == "json":
        text = schema_text("search" if search else "recipe")
    else:
        text = reference_markdown()
    if output is None:
        sys.stdout.write(text)
    else:
        write_text(output, text)


@app.command()
def plugins() -> None:
    """List installed transforms and objectives with their config fields."""
    from effkit import registry

    for group in registry.GROUPS:
        table = Table(title=group, show_lines=True)
        table.add_column("name")
        table.add_column("summary / origin")
        table.add_column("fields")
        for row in registry.describe(group):
            fields = "\n".join(
                f"{f['name']}: {f['type']}" + ("" if f["required"] else f" = {f['default']!r}")
                for f in row["fields"]
            )
            from rich.markup import escape

            table.add_row(
                row["name"],
                f"{escape(row['summary'])}\n[dim]{escape(row['origin'])}[/dim]",
                escape(fields),
            )
        out.print(table)


app.command(name="search")(search_command)
app.command(name="bench")(cli_models.bench)
app.command(name="eval")(cli_models.eval_)
app.command(name="predict")(cli_models.predict)
app.command(name="export")(cli_models.export_)
app.add_typer(recipes_app, name="recipes")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors print one message and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except EffkitError as exc:
        if switches.debug:
            raise
        from rich.markup import escape

        console.print(f"[bold red]{exc.kind}:[/bold red] {escape(exc.render())}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume where it stopped")
        sys.exit(130)
    except Exception as exc:
        import click

        # typer may bring its own copy of click: its exceptions are not click's
        if isinstance(exc, (click.exceptions.Exit, typer.Exit)):
            sys.exit(exc.exit_code)
        show = getattr(exc, "show", None)
        if isinstance(exc, (click.ClickException, typer.TyperException)) and callable(show):
            show()
            sys.exit(2)
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.exit(130)
        if isinstance(exc, OSError) and exc.filename is not None and not switches.debug:
            # a path given that cannot be read or written: which one, and why
            from rich.markup import escape

            name = exc.filename2 if exc.filename2 is not None else exc.filename
            console.print(f"[bold red]error:[/bold red] {escape(f'{name}: {exc.strerror or exc}')}",
                          highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(2)
        from pydantic import ValidationError

        if isinstance(exc, ValidationError) and not switches.debug:
            for err in exc.errors():
                field = ".".join(str(part) for part in err["loc"]) or exc.title
                console.print(f"[bold red]invalid value:[/bold red] {field}: {err['msg']}",
                              highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
