"""Mutation testing of the modules that make security decisions (run on demand, never in CI).

For each target (a module, optionally narrowed to the functions that decide), this copies
``src/``, ``tests/`` and ``pyproject.toml`` into a scratch folder, configures mutmut to mutate
that module only and to run only the test files that cover it, runs ``mutmut run`` under
``nice``, and then reviews every surviving mutant against ``bench/mutation_reviewed.py``: a
survivor is *explained* when a one-line reason says why it is equivalent (or why no test can
tell it apart), and *unexplained* otherwise. It prints one Markdown table (mutants, killed,
survived, explained, score per target) and the diff of every unexplained survivor;
``--write FILE`` replaces the ``mutation`` section of FILE (docs/BENCHMARKS.md).

    python bench/mutation.py --list
    python bench/mutation.py policy enforcer --write docs/BENCHMARKS.md
    python bench/mutation.py constructors --workdir /tmp/m --rerun-survivors  # after new tests
    python bench/mutation.py monitor-continuity --workdir /tmp/m --rerun-survivors --include-unrun

The score is killed / (killed + survived); timeouts count as killed, as mutmut counts them, and
a mutant no test reaches counts as survived.
Run it with the worktree's ``src`` first on ``PYTHONPATH`` and the venv's ``mutmut`` on PATH.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import fnmatch
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reviewed() -> dict[str, dict[str, str]]:
    path = Path(__file__).resolve().with_name("mutation_reviewed.py")
    reviewed: dict[str, dict[str, str]] = runpy.run_path(str(path))["REVIEWED"]
    return reviewed


REVIEWED = _reviewed()


@dataclass(frozen=True)
class Target:
    """One module under mutation and the test files that must kill its mutants."""

    source: str
    tests: tuple[str, ...]
    # mutmut names functions x_NAME and methods xǁCLASSǁNAME; empty means the whole module
    functions: tuple[str, ...] = ()
    # forkserver: each mutant runs in a process that never ran the tests, so module-level caches
    # (the default policy) are rebuilt by the mutant; fork is faster but shares those caches
    isolation: str = "fork"

    @property
    def module(self) -> str:
        return self.source.removeprefix("src/").removesuffix(".py").replace("/", ".")

    def patterns(self) -> list[str]:
        return [f"{self.module}.{f}__mutmut_*" for f in self.functions] or [
            f"{self.module}.*__mutmut_*"
        ]


TARGETS: dict[str, Target] = {
    "policy": Target(
        "src/trainwarden/scan/_policy.py", ("tests/scan/test_policy.py",), isolation="forkserver"
    ),
    "enforcer": Target(
        "src/trainwarden/loading/_unpickler.py",
        ("tests/loading/test_load_guard.py", "tests/loading/test_load_formats.py"),
        (
            "xǁEnforcerǁcheck",
            "xǁEnforcerǁ_record",
            "xǁEnforcerǁfinding_for",
            "x_check_pickle_bytes",
        ),
    ),
    # the restricted unpickler: which globals it materialises, whom it trusts, and every
    # opcode that calls something going through the closed constructor set
    "unpickler": Target(
        "src/trainwarden/loading/_unpickler.py",
        (
            "tests/loading/test_unpickler_opcodes.py",
            "tests/loading/test_closed_set_decisions.py",
            "tests/loading/test_constructors.py",
            "tests/loading/test_load_guard.py",
            "tests/loading/test_load_formats.py",
        ),
        (
            *tuple(
                f"xǁRestrictedUnpicklerǁ{m}"
                for m in (
                    "__init__",
                    "find_class",
                    "_refused",
                    "_call",
                    "load_reduce",
                    "load_newobj",
                    "load_newobj_ex",
                    "_instantiate",
                    "load_build",
                    "_method",
                    "load_append",
                    "load_appends",
                    "load_setitem",
                    "load_setitems",
                    "load_additems",
                )
            ),
            "x_restricted_pickle_module",
            "x_restricted_loads",
        ),
    ),
    "guard": Target(
        "src/trainwarden/loading/_guard.py",
        ("tests/loading/test_load_guard.py", "tests/loading/test_guard_entry_points.py"),
        (
            "x__guard_find_class",
            "x__guarded_load_method",
            "x__read_rest",
            # not _make_load/_make_loads: they run when the module is imported, before mutmut
            # selects a mutant, so no test run can see their mutants (checked by hand instead)
            "x__read_checked",
            "x__prescan_file",
            "x__guarded_torch_load",
            "x__guarded_numpy_load",
            "x__guarded_joblib_load",
            "x__patch_existing_subclasses",
            "x__rebind_references",
        ),
    ),
    # block mode's closed-set construction in the guard (every unpickler it controls)
    "guard-closed": Target(
        "src/trainwarden/loading/_guard.py",
        ("tests/loading/test_load_guard.py", "tests/loading/test_guard_entry_points.py"),
        (
            "x__closed_enforcer",
            "x__trust_if_user_allowed",
            "x__closed_op",
            "x__closed_dispatch",
            "x__install_closed_set",
            "x__c_load",
            "xǁ_ClosedRunǁ__init__",
            "xǁ_ClosedRunǁfind_class",
            "x__capturing_init",
            "x__patch_c_subclass",
            "x__stock_find_class",
        ),
        # the closed ops are built when the module is imported: each mutant needs a fresh import
        isolation="forkserver",
    ),
    # the closed constructor set: what the safe loader (and the guard's block mode) may call
    "constructors": Target(
        "src/trainwarden/loading/_constructors.py",
        ("tests/loading/test_constructors.py", "tests/loading/test_closed_set_decisions.py"),
        (
            "x__check_allocatable",
            "x_allocate",
            "x_call",
            "x_apply_state",
            "x_check_mutator",
            "x__spec_for",
            "x__plain",
            "x__obj_state",
            "x__no_hooks",
        ),
    ),
    # the scanner's pickle VM: what it treats as a call, and the callables' checks. The
    # unit-level decisions file only: test_callables.py and test_pickle_vm.py take about 75 s
    # (one test 50 s), so mutmut never got past collecting their coverage (both run in the
    # normal suite)
    "pickle-vm-calls": Target(
        "src/trainwarden/scan/_pickle_vm.py",
        ("tests/scan/test_pickle_vm_decisions.py",),
        (
            "xǁ_VMǁimport_global",
            "xǁ_VMǁcheck_call",
            "xǁ_VMǁcheck_use",
        ),
    ),
    # the rest of the call checks: arguments, targets, BUILD state and tensor rebuilds (the
    # same fast file, for the same reason)
    "pickle-vm-args": Target(
        "src/trainwarden/scan/_pickle_vm.py",
        ("tests/scan/test_pickle_vm_decisions.py",),
        (
            "xǁ_VMǁcheck_call_args",
            "xǁ_VMǁcheck_target",
            "xǁ_VMǁcheck_build",
            "xǁ_VMǁcheck_state",
            "xǁ_VMǁcheck_rebuild",
        ),
    ),
    # the zip parsers' disagreement checks and the reader-by-name member rule
    "zip-checks": Target(
        "src/trainwarden/scan/_formats/zip.py",
        # the unit-level file only: test_member_kinds.py and test_containers.py import torch and
        # run a torch.load child, about 10 s per surviving mutant (they run in the normal suite)
        ("tests/scan/test_zip_decisions.py",),
        # _scan_members (212 mutants) is left out: at about a minute per surviving mutant on
        # the shared machine it did not fit a session; its by-name rule is unpickled_by's
        (
            "x_unpickled_by",
            "x__kind",
            "x__key",
            "xǁZipHandlerǁ_local",
            "xǁZipHandlerǁ_other_readers",
            "xǁZipHandlerǁ_plain_npy",
        ),
        # under fork, mutants blocked for minutes (forked after their tests started torch's
        # threads); forkserver children never ran the tests
        isolation="forkserver",
    ),
    # the zip handler's member walk: which members are read, skipped, or read as pickles
    "zip-members": Target(
        "src/trainwarden/scan/_formats/zip.py",
        ("tests/scan/test_zip_decisions.py",),
        ("xǁZipHandlerǁ_scan_members",),
        isolation="forkserver",
    ),
    # the compressed .npy members decided while they stream (never held)
    "zip-stream": Target(
        "src/trainwarden/scan/_formats/zip.py",
        ("tests/scan/test_zip_decisions.py",),
        (
            "xǁZipHandlerǁ_streamed_plain_npy",
            "xǁ_NpyProbeǁ__init__",
            "xǁ_NpyProbeǁwrite",
            "xǁ_NpyProbeǁplain",
            "x__plain_npy_head",
        ),
        isolation="forkserver",
    ),
    "npy-header": Target(
        "src/trainwarden/scan/_formats/_dtype.py",
        (
            "tests/scan/test_formats_core.py",
            "tests/scan/test_npy_plain_descrs.py",
            "tests/scan/test_npy_header_decisions.py",
        ),
        ("x_parse_npy_header", "x_dtype_info", "x__build", "x__plain"),
    ),
    # the monitor: weights and optimizer state unchanged between two step boundaries
    "monitor-continuity": Target(
        "src/trainwarden/monitor/_checks/continuity.py",
        ("tests/monitor/test_monitor_continuity.py", "tests/monitor/test_continuity_decisions.py"),
    ),
    # the monitor's independent re-computation of SGD/Adam/AdamW on a secret slice
    "monitor-update": Target(
        "src/trainwarden/monitor/_update_check.py",
        # the unit-level file only: test_monitor_update_check.py trains a model per test, about
        # a minute per surviving mutant on the shared machine (it runs in the normal suite)
        ("tests/monitor/test_update_decisions.py",),
    ),
    # the cross-rank comparison of the gathered digests and step counters
    "monitor-xrank": Target(
        "src/trainwarden/monitor/_distributed.py",
        ("tests/monitor/test_rank_exchange.py", "tests/monitor/test_xrank_decisions.py"),
        tuple(
            f"xǁReplicaComparatorǁ{m}"
            for m in (
                "__init__",
                "_schema_mismatch",
                "analyse",
                "_keys",
                "_same",
                "_groups",
                "_check_steps",
                "_check_digests",
            )
        ),
    ),
    "manifest": Target(
        "src/trainwarden/loading/_manifest.py",
        ("tests/loading/test_manifest_verify.py", "tests/loading/test_load_manifest.py"),
        (
            "x__read_envelope",
            "x__check_signature",
            "x_verify_manifest",
            "x__compare",
            "x_verify_file_bytes",
        ),
    ),
    # attestation: each installed file against its RECORD row through the hash cache, and the
    # files outside site-packages against their package manager's record
    "attest-record": Target(
        "src/trainwarden/attest/_snapshot.py",
        ("tests/attest/test_hash_compare_decisions.py",),
        ("x__file_state", "x__vouch", "x__is_link"),
    ),
    # attestation: a snapshot compared with its baseline, and the findings of the differences
    "attest-baseline": Target(
        "src/trainwarden/attest/_diff.py",
        ("tests/attest/test_hash_compare_decisions.py",),
        (
            "xǁSnapshotDiffǁbaseline_findings",
            "x__dist_findings",
            "x__first_by_key",
            "x__pairs",
            "x__rel",
            "x__path_map",
            "x_diff_snapshots",
        ),
    ),
    # attestation: the findings of one snapshot (RECORD mismatches, orphans, hooks, variables)
    "attest-check": Target(
        "src/trainwarden/attest/_verify.py",
        ("tests/attest/test_hash_compare_decisions.py",),
        ("x_check_snapshot",),
    ),
    # attestation: which bytecode is compiled, which verdicts are remembered, what a signed
    # baseline's content keys stand in for
    "attest-bytecode": Target(
        "src/trainwarden/attest/_bytecode.py",
        ("tests/attest/test_bytecode_decisions.py",),
        (
            "x_verify_bytecode",
            "x_check_bytecode",
            "x_bytecode_pairs",
            "x_content_key",
            "x__level",
            "x__used_by_python",
            "x__ints",
            "x__sha",
        ),
    ),
    "attest_memo": Target(
        "src/trainwarden/attest/_memo.py",
        ("tests/attest/test_memo_unit.py",),
        (
            "x_walk_fingerprint",
            "x_lstat_keys",
            "xǁSnapshotMemoǁ_load",
            "xǁSnapshotMemoǁget",
            "xǁSnapshotMemoǁput",
            "xǁSnapshotMemoǁsave",
            "xǁSnapshotMemoǁbeside",
        ),
    ),
}


def _mutmut() -> str:
    exe = Path(sys.executable).with_name("mutmut")
    return str(exe) if exe.exists() else "mutmut"


def _workdir(name: str, target: Target, base: Path) -> Path:
    work = base / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    _skip_other_functions(work, target)
    _write_pyproject(work, target)
    return work


def _skip_other_functions(work: Path, target: Target) -> None:
    """Mark the functions of the copied module that the target does not name with mutmut's
    ``# pragma: no mutate block``: mutmut generates every mutant of a module before it selects
    any, and one large function (the pickle VM's ``run_one``) took it longer than a session
    to write out. Only the work folder's copy is changed; the selected mutants are the same."""
    if not target.functions:
        return
    import libcst as cst  # mutmut's own dependency

    wanted = set(target.functions)
    path = work / target.source

    class Marker(cst.CSTTransformer):
        def __init__(self) -> None:
            self.classes: list[str] = []

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            self.classes.append(node.name.value)
            return True

        def leave_ClassDef(self, orig: cst.ClassDef, node: cst.ClassDef) -> cst.ClassDef:
            self.classes.pop()
            return node

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False  # nested functions go with their outer one

        def leave_FunctionDef(
            self, orig: cst.FunctionDef, node: cst.FunctionDef
        ) -> cst.FunctionDef:
            name = node.name.value
            mangled = f"xǁ{self.classes[-1]}ǁ{name}" if self.classes else f"x_{name}"
            body = node.body
            if (
                mangled in wanted
                or not isinstance(body, cst.IndentedBlock)
                or body.header.comment is not None
            ):
                return node
            header = body.header.with_changes(
                whitespace=cst.SimpleWhitespace("  "),
                comment=cst.Comment("# pragma: no mutate block"),
            )
            return node.with_changes(body=body.with_changes(header=header))

    tree = cst.parse_module(path.read_text(encoding="utf-8"))
    path.write_text(tree.visit(Marker()).code, encoding="utf-8")


def _write_pyproject(work: Path, target: Target) -> None:
    """The project's pyproject with a [tool.mutmut] table for ``target`` (its current tests)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = pyproject.split("\n[tool.mutmut]")[0]
    # a test file named by the target but not written yet is left out (a first pass)
    tests = ", ".join(f'"{t}"' for t in target.tests if (ROOT / t).is_file())
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["{target.source}"]\n'
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-x"]\n'
        "use_git_change_detection = false\n"
        f'process_isolation = "{target.isolation}"\n'
    )
    (work / "pyproject.toml").write_text(pyproject)


def _run(cmd: list[str], cwd: Path, log: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # mutmut puts its mutated copy of src/ first on sys.path
    proc = subprocess.run(
        ["nice", "-n", "10", *cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    return proc.stdout


@dataclass
class Survivor:
    name: str
    function: str
    removed: list[str]
    added: list[str]

    @property
    def key(self) -> str:
        change = " / ".join(self.added) if self.added else "- " + " / ".join(self.removed)
        return f"{self.function} | {change}"


def _function_of(mutant: str) -> str:
    tail = mutant.rsplit(".", 1)[1]
    return re.sub(r"__mutmut_\d+$", "", tail)


def _function_sources(work: Path, target: Target) -> dict[str, str]:
    """Every function of mutmut's mutated copy of the module, by name (``x_f__mutmut_3``)."""
    path = work / "mutants" / target.source
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name
    }


def _survivor(work: Path, mutant: str, sources: dict[str, str] | None = None) -> Survivor:
    """The lines a surviving mutant changed. Read from mutmut's mutated copy of the module
    (``mutmut show`` does the same diff but costs seconds per mutant); falls back to it."""
    name = mutant.rsplit(".", 1)[1]
    base = re.sub(r"__mutmut_\d+$", "", name)
    if sources and name in sources and f"{base}__mutmut_orig" in sources:
        orig = sources[f"{base}__mutmut_orig"].replace(f"{base}__mutmut_orig", base)
        mutated = sources[name].replace(name, base)
        diff = "\n".join(difflib.unified_diff(orig.splitlines(), mutated.splitlines(), lineterm=""))
    else:
        diff = _run([_mutmut(), "show", mutant], work)
    removed = [ln[1:].strip() for ln in diff.splitlines() if re.match(r"^-(?!--)", ln)]
    added = [ln[1:].strip() for ln in diff.splitlines() if re.match(r"^\+(?!\+\+)", ln)]
    return Survivor(mutant, _function_of(mutant), removed, added)


@dataclass
class Result:
    name: str
    target: Target
    statuses: dict[str, str]
    survivors: list[Survivor]

    def count(self, *kinds: str) -> int:
        return sum(1 for s in self.statuses.values() if s in kinds)

    @property
    def killed(self) -> int:
        return self.count("killed", "timeout")

    @property
    def unexplained(self) -> list[Survivor]:
        reviewed = REVIEWED.get(self.name, {})
        return [s for s in self.survivors if s.key not in reviewed]


def _statuses(work: Path, target: Target) -> dict[str, str]:
    out = _run([_mutmut(), "results", "--all", "true"], work)
    statuses: dict[str, str] = {}
    for line in out.splitlines():
        mutant, sep, status = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatch(mutant, p) for p in target.patterns()):
            statuses[mutant] = status.strip()
    return statuses


def run_target(
    name: str,
    target: Target,
    base: Path,
    max_children: int,
    rerun_survivors: bool = False,
    unrun: bool = False,
) -> Result:
    work = base / name
    if rerun_survivors and (work / "mutants").is_dir():
        # a later pass: the current tests against the mutants that survived the last one
        # (mutmut collects coverage for the new tests before it runs them); src is refreshed
        # too, for fixes outside the mutated functions
        # mutmut forgets earlier results when its table changes: the last pass's merged
        # statuses are kept beside its work folder
        saved = work / "statuses.json"
        before = json.loads(saved.read_text()) if saved.is_file() else _statuses(work, target)
        # "no tests": a mutant no test reached (the target may name new test files since)
        rerun = ("survived", "no tests", "not checked") if unrun else ("survived", "no tests")
        again = [m for m, s in before.items() if s in rerun]
        for part in ("src", "tests"):
            shutil.rmtree(work / part)
            shutil.copytree(ROOT / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
        _skip_other_functions(work, target)
        _write_pyproject(work, target)  # the target's test files may have grown since
    else:
        work = _workdir(name, target, base)
        before = {}
        again = list(target.patterns())
    if again:
        _run(
            [_mutmut(), "run", "--max-children", str(max_children), *again],
            work,
            log=work / "mutmut-run.log",
        )
    # a new [tool.mutmut] table makes mutmut forget earlier results: the mutants not rerun keep
    # the last pass's status (killed stays killed, as the tests only grew)
    statuses = {**before, **{m: s for m, s in _statuses(work, target).items() if m in again}}
    if not before:
        statuses = _statuses(work, target)
    (work / "statuses.json").write_text(json.dumps(statuses, indent=0, sort_keys=True))
    try:
        sources: dict[str, str] | None = _function_sources(work, target)
    except (OSError, SyntaxError):
        sources = None
    # a mutant no test reaches is not killed either: it counts as a survivor
    survivors = [
        _survivor(work, m, sources) for m, s in statuses.items() if s in ("survived", "no tests")
    ]
    return Result(name, target, statuses, survivors)


def table(results: list[Result]) -> str:
    rows = [
        "| target | module (functions) | tests run | mutants | killed | survived | explained "
        "| unexplained | score |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        total = r.killed + len(r.survivors)
        score = f"{100 * r.killed / total:.1f}%" if total else "n/a"
        funcs = (
            ", ".join(
                f.removeprefix("x_").replace("xǁ", "").replace("ǁ", ".") for f in r.target.functions
            )
            or "whole module"
        )
        other = len(r.statuses) - total
        rows.append(
            f"| {r.name} | `{r.target.module}` ({funcs}) | {', '.join(r.target.tests)} "
            f"| {len(r.statuses)}{f' ({other} not run)' if other else ''} | {r.killed} "
            f"| {len(r.survivors)} | {len(r.survivors) - len(r.unexplained)} "
            f"| {len(r.unexplained)} | {score} |"
        )
    return "\n".join(rows)


def write_section(path: Path, body: str) -> None:
    begin = "<!-- BEGIN mutation (written by bench/mutation.py) -->"
    end = "<!-- END mutation -->"
    text = path.read_text()
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "targets", nargs="*", help=f"targets to run (default: all): {', '.join(TARGETS)}"
    )
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="scratch folder (default: a tmp dir)"
    )
    ap.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="reuse --workdir's mutants and rerun only the last pass's survivors with the "
        "current tests",
    )
    ap.add_argument(
        "--include-unrun",
        action="store_true",
        help="with --rerun-survivors: also run the mutants an earlier, stopped pass never reached",
    )
    ap.add_argument("--write", type=Path, default=None, help="update this file's mutation section")
    args = ap.parse_args()
    if args.list:
        for name, t in TARGETS.items():
            print(f"{name}: {t.source} {list(t.functions) or '(whole module)'} <- {list(t.tests)}")
        return 0
    names = args.targets or list(TARGETS)
    bad = [n for n in names if n not in TARGETS]
    if bad:
        ap.error(f"unknown target(s): {', '.join(bad)}")
    base = args.workdir or Path(tempfile.mkdtemp(prefix="tw-mutation-"))
    results = [
        run_target(n, TARGETS[n], base, args.max_children, args.rerun_survivors, args.include_unrun)
        for n in names
    ]
    tbl = table(results)
    print(tbl)
    for r in results:
        for s in r.unexplained:
            print(f"\nUNEXPLAINED {s.name}\n  key: {s.key!r}")
            for ln in s.removed:
                print(f"  - {ln}")
            for ln in s.added:
                print(f"  + {ln}")
    if args.write:
        cmd = "PYTHONPATH=$PWD/src python bench/mutation.py " + " ".join(names)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_section(
            args.write,
            f"### Mutation testing (mutmut)\n\n`{cmd}` — {stamp}\n\n{tbl}\n",
        )
    return 1 if any(r.unexplained for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
