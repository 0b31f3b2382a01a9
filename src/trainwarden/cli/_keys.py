"""``trainwarden keygen``: the one command that creates an Ed25519 signing key pair.

The same key signs checkpoint manifests (``manifest create --sign``) and environment snapshots
(``attest snapshot --sign``). ``manifest keygen`` and ``attest keygen`` remain as hidden aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from trainwarden.cli._common import err, out

__all__ = ["keygen", "keygen_alias", "register"]


def keygen(
    keyfile: Annotated[Path, typer.Argument(help="Private key to create (PEM, mode 0600).")],
    pub: Annotated[
        Path | None, typer.Option("--pub", help="Public key path (default KEYFILE.pub).")
    ] = None,
) -> None:
    """Create an Ed25519 key pair for signing manifests and snapshots (never overwrites)."""
    from trainwarden._internal.signing import generate_keypair

    priv, public, kid = generate_keypair(keyfile, pub)
    out.print(f"wrote {priv} (private, mode 0600) and {public} (keyid {kid})", markup=False)


def keygen_alias(old: str) -> Callable[..., None]:
    """``keygen`` under an older spelling (hidden; says which command to use)."""

    def alias(
        keyfile: Annotated[Path, typer.Argument(help="Private key to create (PEM, mode 0600).")],
        pub: Annotated[
            Path | None, typer.Option("--pub", help="Public key path (default KEYFILE.pub).")
        ] = None,
    ) -> None:
        """Create an Ed25519 key pair (use `trainwarden keygen`)."""
        err.print(f"note: `trainwarden {old}` is `trainwarden keygen`", markup=False)
        keygen(keyfile, pub)

    return alias


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
