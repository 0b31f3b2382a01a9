"""Safe-loading commands: ``load``, ``convert`` and ``manifest create|verify``."""

from __future__ import annotations

import enum
import itertools
from typing import Annotated, Any

import typer

from trainwarden.cli._common import (
    DeprecatedKeyOpt,
    FormatOpt,
    OutputFormat,
    OutputOpt,
    PolicyOpt,
    deprecated_flag,
    emit,
    err,
    ledger_record,
    out,
    print_json,
    print_refusal,
)

__all__ = ["load_policy", "register"]


def _brief(key: object, width: int = 60) -> str:
    """A key as the summary shows it, within ``width`` characters whatever the file chose: text
    and bytes cut, an integer too long to print named by its size, other keys by their type."""
    if isinstance(key, str):
        text = key[: width + 1]
    elif isinstance(key, bytes):
        text = repr(key[:width])
    elif isinstance(key, int) and key.bit_length() > 64:
        text = f"<an integer of {key.bit_length()} bits>"
    elif isinstance(key, int | float):
        text = str(key)
    else:
        text = f"<{type(key).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


def load_policy(policy_file: str | None) -> Any:
    """The scan policy of ``--policy`` (None: the loader's default)."""
    if not policy_file:
        return None
    from trainwarden.scan._policy import Policy

    return Policy.from_file(policy_file)


def load_cmd(
    path: Annotated[str, typer.Argument(help="Checkpoint, pickle, numpy or joblib file.")],
    policy_file: PolicyOpt = None,
    pub: Annotated[
        str | None,
        typer.Option("--pub", envvar="TRAINWARDEN_MANIFEST_PUBKEY", help="Trusted public key."),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
    output: OutputOpt = None,
) -> None:
    """Load a file safely and summarise it (exit 1 if it was refused, 2 on a manifest error)."""
    from trainwarden.loading import load_with_report
    from trainwarden.loading._types import ManifestError, UnsafeModelError

    try:
        obj, report = load_with_report(
            path, policy=load_policy(policy_file), manifest_key=pub, hash_file=True
        )
    except (UnsafeModelError, ManifestError) as e:
        if fmt is OutputFormat.json:
            print_json(
                {
                    "path": path,
                    "refused": True,
                    "error": e.message,
                    "findings": [f.to_dict() for f in e.findings],
                },
                output,
            )
        else:
            err.print(f"refused: {e.diagnostics()}", markup=False)
        raise typer.Exit(e.exit_code) from None
    summary = type(obj).__name__
    if isinstance(obj, dict):
        # The file's keys, shortened: a key is the file's to choose, however long.
        keys = (_brief(k) for k in itertools.islice(obj, 8))
        summary += f" with {len(obj)} keys: " + ", ".join(keys)
        summary += ", ..." if len(obj) > 8 else ""
    if fmt is OutputFormat.json:
        print_json({**report.to_dict(), "refused": False, "object": summary}, output)
        return

    def text(console: Any) -> None:
        console.print(
            f"{report.path}: {report.format}, {report.size} bytes, sha256 {report.sha256}"
        )
        console.print(f"manifest: {report.manifest or 'none'}")
        console.print(f"object: {summary}", markup=False)
        for f in report.findings:
            if f.severity.value > 0:
                console.print(f"  [{f.severity}] {f.rule_id}: {f.message}", markup=False)

    emit(report, fmt, text, output)


def manifest_create(
    path: Annotated[str, typer.Argument(help="Checkpoint file or folder.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--sign",
            envvar="TRAINWARDEN_MANIFEST_KEY",
            help="Ed25519 private key (PEM): sign the manifest.",
        ),
    ] = None,
    old_key: DeprecatedKeyOpt = None,
) -> None:
    """Write the manifest of a checkpoint file or folder (signed with --sign)."""
    from trainwarden.loading._manifest import create_manifest, subjects_of

    key = key or deprecated_flag(old_key, "--key", "--sign")
    target = create_manifest(path, key=key)
    n = len(list(subjects_of(target)))
    out.print(f"wrote {target} ({n} file{'s' if n != 1 else ''}{', signed' if key else ''})")
    ledger_record("manifest.create", {"path": path, "manifest": str(target), "files": n})


def manifest_verify(
    path: Annotated[str, typer.Argument(help="Checkpoint file or folder.")],
    pub: Annotated[
        str | None,
        typer.Option(
            "--pub", envvar="TRAINWARDEN_MANIFEST_PUBKEY", help="Require a signature by this key."
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Check every file against the manifest (exit 2 on a changed, missing or extra file)."""
    from trainwarden.loading._manifest import verify_manifest
    from trainwarden.loading._types import ManifestError

    try:
        check = verify_manifest(path, public_key=pub)
    except ManifestError as e:
        failure = {
            "path": path,
            "ok": False,
            "error": e.message,
            "findings": [f.to_dict() for f in e.findings],
        }
        if fmt is OutputFormat.json:
            print_json(failure)
        else:
            err.print(f"FAILED: {e.message}", markup=False)
            print_refusal(e.findings)
            if e.hint:
                err.print(f"  hint: {e.hint}", markup=False)
        ledger_record("manifest.verify", failure)
        raise typer.Exit(e.exit_code) from None
    ledger_record(
        "manifest.verify",
        {"path": path, "ok": True, "manifest": check.manifest, "files": check.subjects},
    )

    def text(console: Any) -> None:
        # An unchecked signature entry proves nothing (anyone can write any key id): never name it.
        n_unverified = len(check.unverified_keyids)
        sig = (
            f"signature verified (key {check.signed_by[0][:16]})"
            if check.signature_verified
            else (
                f"signature NOT verified ({n_unverified} unchecked signature "
                f"entr{'ies' if n_unverified != 1 else 'y'}; give --pub to check)"
                if n_unverified
                else "unsigned"
            )
        )
        console.print(f"OK: {check.subjects} file(s) match {check.manifest}; {sig}")

    emit(check, fmt, text)


class ConvertTarget(str, enum.Enum):
    """Formats ``convert`` can write."""

    safetensors = "safetensors"


def convert(
    path: Annotated[str, typer.Argument(help="Pickle-based checkpoint to convert.")],
    to: Annotated[ConvertTarget, typer.Option("--to", help="Output format.")],
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="Output file (default PATH.safetensors).")
    ] = None,
    policy_file: PolicyOpt = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Scan, safely load and rewrite a checkpoint as safetensors plus a JSON sidecar."""
    from trainwarden.loading._convert import to_safetensors
    from trainwarden.loading._types import UnsafeModelError

    try:
        result = to_safetensors(path, output, policy=load_policy(policy_file))
    except UnsafeModelError as e:
        err.print(f"refused to convert: {e.diagnostics()}", markup=False)
        raise typer.Exit(e.exit_code) from None

    def text(console: Any) -> None:
        console.print(
            f"wrote {result.output} ({result.tensors} tensors, {result.aliases} aliases) and "
            f"{result.sidecar} ({result.metadata_keys} metadata keys)",
            markup=False,
        )
        for item in result.lossy:
            err.print(f"  kept only as text (not a tensor or plain data): {item}", markup=False)

    emit(result, fmt, text)


def register(app: typer.Typer) -> None:
    from trainwarden.cli._keys import keygen_alias

    app.command("load")(load_cmd)
    manifest_app = typer.Typer(
        help="Create and verify checkpoint manifests (in-toto, optionally Ed25519-signed).",
        no_args_is_help=True,
    )
    manifest_app.command("create")(manifest_create)
    manifest_app.command("verify")(manifest_verify)
    manifest_app.command("keygen", hidden=True)(keygen_alias("manifest keygen"))
    app.add_typer(manifest_app, name="manifest")
    app.command("convert")(convert)
