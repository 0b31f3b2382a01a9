"""``trainwarden data``: per-item content-hash manifests of training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainwarden.cli._common import FormatOpt, OutputFormat, out, print_json

__all__ = ["register"]


def data_manifest(
    directory: Annotated[Path, typer.Argument(help="The dataset: a directory of files.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write (default: DIR.manifest.json)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Write the SHA-256 of every file of a dataset, in the order trainwarden.data serves them."""
    from trainwarden.data import write_directory_manifest

    dest, manifest = write_directory_manifest(directory, output)
    if fmt is OutputFormat.json:
        print_json({"manifest": str(dest), "items": len(manifest)})
    else:
        out.print(f"wrote {dest}: {len(manifest)} items", markup=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Training data integrity.", no_args_is_help=True)
    data_app.command("manifest")(data_manifest)
    app.add_typer(data_app, name="data")
