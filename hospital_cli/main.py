"""Root of the ``medvec`` command: registers one Typer group per module in ``commands``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

import typer

from hospital_cli.errors import format_known_exception, one_line

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
    """Console entry point: every failure is one line on stderr and a non-zero exit.

    The traceback is shown only with ``MEDVEC_DEBUG=1``; unexpected errors say so.
    """
    try:
        code = app(args=argv, prog_name="medvec", standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        _usage_error(exc)
    except Exception as exc:
        if os.environ.get("MEDVEC_DEBUG") == "1":
            raise
        known = format_known_exception(exc)
        if known is None:
            message = f"unexpected {type(exc).__name__}: {one_line(str(exc))}"
            known = (f"{message} (rerun with MEDVEC_DEBUG=1 for the traceback)", 1)
        typer.echo(f"Error: {known[0]}", err=True)
        sys.exit(known[1])
    if isinstance(code, int) and code:
        sys.exit(code)


def _usage_error(exc: typer.TyperException) -> NoReturn:
    """Typer's usage errors as one line (help only when no arguments were given)."""
    exit_code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ == "NoArgsIsHelpError":  # Typer has printed the help already
        sys.exit(exit_code)
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    typer.echo(f"Error: {one_line(message)}{where}", err=True)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
