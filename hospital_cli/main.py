"""Root of the ``medvec`` command: registers one Typer group per module in ``commands``."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from medvec.errors import MedVecError

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


def main() -> None:
    """Console entry point: known errors become one line on stderr and exit code 1."""
    try:
        app()
    except MedVecError as exc:
        if os.environ.get("MEDVEC_DEBUG") == "1":
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
