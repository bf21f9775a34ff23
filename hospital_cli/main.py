"""Root of the ``medvec`` command: registers one Typer group per module in ``commands``."""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from hospital_cli.errors import format_known_exception

app = typer.Typer(
    name="medvec",
    help="MedVec: fine-tune locally, push data vectors, pull merged models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (module in hospital_cli.commands, group name or None to add its commands at the root)
COMMAND_MODULES: list[tuple[str, str | None]] = [
    ("vector", "vector"),
    ("merge", None),
    ("auth", None),
    ("profiles", "profiles"),
    ("base", "base"),
    ("train", None),
    ("push", None),
    ("status", None),
    ("pull", None),
    ("evaluate", None),
    ("predict", None),
    ("admin", "admin"),
    ("demo", None),
    ("simulate", None),
]


def _register(root: typer.Typer) -> None:
    for module_name, group in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"hospital_cli.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hospital_cli.commands.{module_name}":
                continue
            raise
        sub: typer.Typer = module.app
        if group is None:
            root.add_typer(sub)
        else:
            root.add_typer(sub, name=group)


_register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become one line on stderr and a non-zero exit.

    The traceback is shown only with ``MEDVEC_DEBUG=1``; unexpected errors say so.
    """
    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("MEDVEC_DEBUG") == "1":
            raise
        known = format_known_exception(exc)
        if known is None:
            message = f"unexpected {type(exc).__name__}: {exc} (rerun with MEDVEC_DEBUG=1)"
            known = (message, 1)
        typer.echo(f"Error: {known[0]}", err=True)
        sys.exit(known[1])


if __name__ == "__main__":
    main()
