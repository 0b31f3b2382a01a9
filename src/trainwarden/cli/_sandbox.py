"""``trainwarden run`` (a script under the load guard, optionally sandboxed) and
``trainwarden sandbox``: the kernel-enforced job sandbox."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
import typer.core

from trainwarden.cli._common import (
    FormatOpt,
    OutputFormat,
    PolicyOpt,
    err,
    out,
    print_json,
    with_ledger,
)
from trainwarden.cli._loading import load_policy
from trainwarden.errors import TrainWardenError

__all__ = ["register"]


class GuardMode(str, enum.Enum):
    """What the load guard does with a load that needs a global the policy does not allow."""

    block = "block"
    warn = "warn"


class _RunCommand(typer.core.TyperCommand):
    """``run`` with ``--sandbox`` usable bare (enforce) or as ``--sandbox=MODE``."""

    _VALUED = frozenset({"--guard", "--policy", "--events", "--sandbox-policy"})

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "--sandbox":
                args[i] = "--sandbox=enforce"
            elif args[i] in self._VALUED:
                i += 1
            i += 1
        return super().parse_args(ctx, args)


def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Script to run (or module name with -m).")],
    guard: Annotated[
        GuardMode,
        typer.Option("--guard", envvar="TRAINWARDEN_GUARD", help="block or warn."),
    ] = GuardMode.block,
    module: Annotated[
        bool, typer.Option("-m", "--module", help="Run TARGET as a module (python -m).")
    ] = False,
    policy_file: PolicyOpt = None,
    events: Annotated[
        str | None,
        typer.Option("--events", envvar="TRAINWARDEN_EVENTS", help="Append load events (JSONL)."),
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(
            "--sandbox",
            envvar="TRAINWARDEN_SANDBOX",
            help="Confine the job with Landlock: --sandbox (enforce) or "
            "--sandbox=enforce|warn|best-effort.",
        ),
    ] = None,
    sandbox_policy: Annotated[
        str | None,
        typer.Option(
            "--sandbox-policy",
            envvar="TRAINWARDEN_SANDBOX_POLICY",
            help="Sandbox policy file (TOML, [sandbox] table).",
        ),
    ] = None,
) -> None:
    """Run a Python script with the load guard installed (arguments after it go to the script)."""
    from trainwarden._internal.sink import JsonlSink
    from trainwarden.loading._runner import run_guarded
    from trainwarden.loading._types import UnsafeModelError

    args = list(ctx.args)
    sink = with_ledger(JsonlSink(events) if events else None)
    private_tmp = None
    try:
        if sandbox is not None:
            private_tmp = _start_sandbox(sandbox, sandbox_policy, target, module, sink)
        run_guarded(
            target,
            args,
            mode=guard.value,
            module=module,
            policy=load_policy(policy_file),
            sink=sink,
        )
    except UnsafeModelError as e:
        err.print(f"trainwarden: blocked an unsafe load: {e.diagnostics()}", markup=False)
        raise typer.Exit(e.exit_code) from None
    except TrainWardenError:
        raise
    except Exception:
        # The script's own uncaught exception: shown and exited as `python script.py` would
        # (this traceback is the script's output, not trainwarden's).
        import traceback

        traceback.print_exc()
        raise typer.Exit(1) from None
    finally:
        if sink is not None:
            sink.close()
        if private_tmp is not None:
            import shutil

            shutil.rmtree(private_tmp, ignore_errors=True)


def _start_sandbox(
    mode: str, policy_file: str | None, target: str, module: bool, sink: Any
) -> str | None:
    import os

    from trainwarden.sandbox import Mode, SandboxPolicy, apply

    policy = SandboxPolicy.from_file(policy_file) if policy_file else SandboxPolicy.default()
    code: list[str] = []
    if not module and os.path.isfile(target):
        code.append(os.path.dirname(os.path.abspath(target)))
    report = apply(policy, mode=Mode.parse(mode), code=code, sink=sink)
    if not report.enforced and report.mode is not Mode.warn:
        err.print(
            f"trainwarden: sandbox NOT enforced (best-effort): {report.kernel_reason}",
            markup=False,
        )
    elif report.not_enforced:
        err.print(
            "trainwarden: sandbox enforced without: " + ", ".join(report.not_enforced),
            markup=False,
        )
    return report.tmpdir


def sandbox_explain(
    policy_file: Annotated[
        str | None,
        typer.Option(
            "--policy", envvar="TRAINWARDEN_SANDBOX_POLICY", help="Sandbox policy file (TOML)."
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Print what a sandbox policy allows and what this kernel can enforce of it."""
    from trainwarden.sandbox._explain import explain

    explanation = explain(policy_file)
    if fmt is OutputFormat.json:
        print_json(explanation.to_dict())
        return
    for line in explanation.lines():
        out.print(line, markup=False)


def register(app: typer.Typer) -> None:
    app.command(
        "run",
        cls=_RunCommand,
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "allow_interspersed_args": False,
        },
    )(run)
    sandbox_app = typer.Typer(
        help="Kernel-enforced job sandbox (Landlock).", no_args_is_help=True, rich_markup_mode=None
    )
    sandbox_app.command("explain")(sandbox_explain)
    app.add_typer(sandbox_app, name="sandbox")
