"""Policy: name normalisation, allow/deny precedence, policy files."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwarden.findings import Severity
from trainwarden.scan import Limits, Policy, ScanError, Verdict
from trainwarden.scan._allowlist import SAFE
from trainwarden.scan._denylist import DANGEROUS


def test_every_entry_has_a_reason() -> None:
    assert len(SAFE) > 500
    assert all(isinstance(r, str) and len(r) > 5 for r in SAFE.values())
    assert all(isinstance(r, str) and len(r) > 5 for r in DANGEROUS.values())


def test_no_allowlist_entry_is_shadowed_by_the_denylist() -> None:
    p = Policy.default()
    for full in SAFE:
        module, _, name = full.rpartition(".")
        assert p.classify(module, name, fix_imports=False)[0] is Verdict.SAFE, full


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("torch._utils", "_rebuild_tensor_v2", Verdict.SAFE),
        ("collections", "OrderedDict", Verdict.SAFE),
        ("__builtin__", "set", Verdict.SAFE),
        ("copy_reg", "_reconstructor", Verdict.SAFE),
        ("__builtin__", "getattr", Verdict.DANGEROUS),
        ("builtins", "getattr", Verdict.DANGEROUS),
        ("os", "path.join", Verdict.DANGEROUS),
        ("os.path", "join", Verdict.DANGEROUS),
        ("torch", "load", Verdict.DANGEROUS),
        ("torch", "serialization.load", Verdict.DANGEROUS),
        ("torch.serialization", "_get_layout", Verdict.SAFE),
        ("torch.nn.modules.linear", "Linear", Verdict.SAFE),
        ("torch.nn.modules.linear", "Linear.forward.__globals__", Verdict.DANGEROUS),
        ("builtins", "getattr.__call__", Verdict.DANGEROUS),
        ("mylib", "Net", Verdict.UNKNOWN),
        ("numpy.core.multiarray", "_reconstruct", Verdict.SAFE),
        ("numpy._core.multiarray", "_reconstruct", Verdict.SAFE),
        ("numpy.random._pickle", "__randomstate_ctor", Verdict.SAFE),
        ("transformers.trainer_utils", "IntervalStrategy", Verdict.SAFE),
        ("transformers.training_args", "TrainingArguments", Verdict.SAFE),
        ("torch.optim.lr_scheduler", "CosineAnnealingLR", Verdict.SAFE),
        ("joblib.numpy_pickle", "NumpyArrayWrapper", Verdict.SAFE),
        ("sklearn.ensemble._forest", "RandomForestClassifier", Verdict.SAFE),
    ],
)
def test_classify(module: str, name: str, verdict: Verdict) -> None:
    got, reason = Policy.default().classify(module, name)
    assert got is verdict, reason
    assert reason


def test_fix_imports_only_for_old_protocols() -> None:
    p = Policy.default()
    assert p.classify("__builtin__", "set", fix_imports=False)[0] is not Verdict.SAFE
    assert Policy.normalize("__builtin__", "xrange") == ("builtins", "range")


def test_overrides_precedence() -> None:
    p = Policy.default().with_overrides(allow=["mylib.*", "builtins.getattr"], deny=["torch.Size"])
    assert p.classify("mylib", "Net")[0] is Verdict.SAFE
    assert p.classify("mylib.sub", "Net")[0] is Verdict.UNKNOWN  # wildcards do not descend
    assert p.classify("mylib", "Net.__init__")[0] is Verdict.DANGEROUS
    assert p.classify("builtins", "getattr")[0] is Verdict.SAFE  # explicit exact decision
    assert p.classify("torch", "Size")[0] is Verdict.DANGEROUS  # deny wins
    q = Policy.default().with_overrides(allow=["os.*"])
    assert q.classify("os", "system")[0] is Verdict.DANGEROUS  # wildcard never unlocks


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mylib", "os.system"),  # an attribute path through mylib's own `import os`
        ("mylib", "Net.helper"),  # an attribute of an allowed class is not the class
        ("mylib", "sub.Net"),
        ("mylib", "subprocess.Popen"),
        ("mylib", "builtins.eval"),
    ],
)
def test_allow_wildcard_never_covers_a_dotted_name(module: str, name: str) -> None:
    """`allow = ["mylib.*"]` covers what mylib defines, never what it imports or an attribute."""
    p = Policy.default().with_overrides(allow=["mylib.*"])
    assert p.classify(module, name)[0] is not Verdict.SAFE
    assert p.classify("mylib", "Net")[0] is Verdict.SAFE


def test_allow_wildcard_covers_only_its_own_module() -> None:
    p = Policy.default().with_overrides(allow=["my.*", "mylib.Net"])
    assert p.classify("mylib", "Net")[0] is Verdict.SAFE  # the exact entry
    for module, name in [("mylib", "Other"), ("my_other", "Net"), ("my.sub", "Net")]:
        assert p.classify(module, name)[0] is Verdict.UNKNOWN, (module, name)
    # Exact entries do not descend; an attribute path below one is decided as unidentifiable.
    assert p.classify("mylib", "Net.os")[0] is Verdict.DANGEROUS


def test_deny_entries_cover_everything_below_them() -> None:
    p = Policy.default().with_overrides(deny=["mylib.*", "collections.OrderedDict"])
    for module, name in [("mylib", "Net"), ("mylib", "Net.x"), ("mylib.sub", "Net")]:
        assert p.classify(module, name)[0] is Verdict.DANGEROUS, (module, name)
    assert p.classify("collections", "OrderedDict.fromkeys")[0] is Verdict.DANGEROUS
    assert p.classify("mylibrary", "Net")[0] is Verdict.UNKNOWN


def test_dotted_global_under_allow_wildcard_is_flagged_in_a_scan(tmp_path: Path) -> None:
    """End to end: a protocol-4 STACK_GLOBAL mylib / os.system under `allow = ["mylib.*"]`."""
    from trainwarden.scan import analyze_pickle

    canary = tmp_path / "canary"
    cmd = f"touch {canary}".encode()
    data = (
        b"\x80\x04\x8c\x05mylib\x8c\tos.system\x93" + b"\x8c" + bytes([len(cmd)]) + cmd + b"\x85R."
    )
    a = analyze_pickle(data, policy=Policy.default().with_overrides(allow=["mylib.*"]))
    assert [(g.qualname, g.verdict) for g in a.globals] == [("mylib.os.system", Verdict.DANGEROUS)]
    assert a.max_severity is not None and a.max_severity >= Severity.HIGH
    assert not canary.exists()


def test_bad_override_entry() -> None:
    with pytest.raises(ScanError, match="--allow"):
        Policy.default().with_overrides(allow=["noqualname"])


def test_from_trainwarden_toml(tmp_path: Path) -> None:
    f = tmp_path / "trainwarden.toml"
    f.write_text(
        'allow = ["mylib.Net"]\ndeny = ["collections.*"]\nfail_on = "medium"\n'
        "require_manifest = true\n[limits]\nmax_opcodes = 1000\n"
    )
    p = Policy.from_file(f)
    assert p.classify("mylib", "Net")[0] is Verdict.SAFE
    assert p.classify("collections", "OrderedDict")[0] is Verdict.DANGEROUS
    assert p.fail_on is Severity.MEDIUM
    assert p.limits == Limits(max_opcodes=1000)
    assert p.require_manifest is True
    assert p.source == str(f)


def test_from_pyproject_and_discover(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.trainwarden]\nallow = ["mylib.*"]\n'
        'unknown_severity = "critical"\n[tool.trainwarden.monitor]\nother_team = 1\n'
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    p = Policy.discover(sub)
    assert p.classify("mylib", "X")[0] is Verdict.SAFE
    assert p.unknown_severity is Severity.CRITICAL


def test_discover_without_config_is_default(tmp_path: Path) -> None:
    assert Policy.discover(tmp_path).allow == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("allow = 3\n", "must be a list"),
        ('fail_on = "severe"\n', "unknown severity"),
        ("allow = [\n", "not valid TOML"),
        ("typo_key = 1\n", "unknown key"),
        ("[limits]\nmax_opcodes = -1\n", "invalid scan limit"),
        ("[limits]\nmax_opcode = 5\n", "unknown limit"),
        ('allow = ["nodot"]\n', "invalid policy entry"),
        ('require_manifest = "yes"\n', "must be true or false"),
    ],
)
def test_policy_file_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "trainwarden.toml"
    f.write_text(text)
    with pytest.raises(ScanError, match=match) as info:
        Policy.from_file(f)
    assert str(f) in info.value.diagnostics()


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="cannot read policy file"):
        Policy.from_file(tmp_path / "nope.toml")


def test_pyproject_without_section(tmp_path: Path) -> None:
    f = tmp_path / "pyproject.toml"
    f.write_text('[project]\nname = "x"\n')
    with pytest.raises(ScanError, match=r"no \[tool.trainwarden\]"):
        Policy.from_file(f)


def test_policy_is_hashable_and_comparable() -> None:
    a = Policy.default().with_overrides(allow=["mylib.Net"])
    b = Policy.default().with_overrides(allow=["mylib.Net"])
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1


# -- decisions pinned by mutation testing (bench/mutation.py): each test fails on a planted bug --


def test_every_denylist_entry_is_dangerous_however_it_is_split() -> None:
    """Decide on objects, not spellings: `a` + `b.c` names the same object as `a.b` + `c`."""
    p = Policy.default()
    wrong = []
    for full in DANGEROUS:
        parts = full.removesuffix(".*").split(".")
        tail = ["Anything"] if full.endswith(".*") else []
        for k in range(1, len(parts) + len(tail)):
            names = [*parts, *tail]
            module, name = ".".join(names[:k]), ".".join(names[k:])
            if p.classify(module, name, fix_imports=False)[0] is not Verdict.DANGEROUS:
                wrong.append(f"{module} / {name}")
        # an attribute of a dangerous object is dangerous too
        if not full.endswith(".*"):
            module, _, name = full.partition(".")
            got = p.classify(module, f"{name}.attr", fix_imports=False)[0]
            if got is not Verdict.DANGEROUS:
                wrong.append(f"{module} / {name}.attr")
    assert wrong == []


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("mylib", "__helper", Verdict.SAFE),  # one leading dunder is a private name, not special
        ("mylib", "helper__", Verdict.SAFE),
        ("mylib", "____", Verdict.SAFE),  # four underscores: no special name
        ("mylib", "Net.__x__", Verdict.DANGEROUS),  # the shortest special attribute
        ("mylib", ".os", Verdict.DANGEROUS),  # an attribute path (empty element): undecidable
        ("mylib", "f.<locals>.g", Verdict.DANGEROUS),
        ("mylib.__init__", "Net", Verdict.DANGEROUS),  # a special module name
        ("__main__", "Net", Verdict.UNKNOWN),  # the loading script's own class: not dangerous
    ],
)
def test_special_names_under_an_allow_wildcard(module: str, name: str, verdict: Verdict) -> None:
    p = Policy.default().with_overrides(allow=["mylib.*"])
    assert p.classify(module, name)[0] is verdict


def test_main_module_globals_are_unknown_with_their_reason() -> None:
    got, reason = Policy.default().classify("__main__", "Net")
    assert got is Verdict.UNKNOWN and "own script" in reason


@pytest.mark.parametrize(
    "entry", ["my*lib.Net", "*.Net", "mylib.N*t", "mylib.**", "mylib", "mylib..Net", ".Net"]
)
def test_malformed_entries_are_refused(entry: str) -> None:
    for kw, source in (("allow", "--allow"), ("deny", "--deny")):
        with pytest.raises(ScanError) as err:
            Policy.default().with_overrides(**{kw: [entry]})
        assert err.value.message == f"invalid policy entry {entry!r} in {source}"
        assert err.value.hint == (
            'entries are "module.qualname" (e.g. "torch.nn.Linear") or "module.*"'
        )


def test_default_policy_names_its_source() -> None:
    assert Policy.default().source == "<built-in>"


def test_allow_and_deny_tables_with_reasons(tmp_path: Path) -> None:
    """The allow/deny keys may be tables of entry = reason, like the built-in lists."""
    f = tmp_path / "trainwarden.toml"
    f.write_text('[allow]\n"mylib.Net" = "our model class"\n[deny]\n"collections.Counter" = "no"\n')
    p = Policy.from_file(f)
    assert p.classify("mylib", "Net")[0] is Verdict.SAFE
    assert p.classify("collections", "Counter")[0] is Verdict.DANGEROUS


def test_tool_table_and_scan_table_in_trainwarden_toml(tmp_path: Path) -> None:
    f = tmp_path / "trainwarden.toml"
    f.write_text('[tool.trainwarden]\ndeny = ["collections.OrderedDict"]\n')
    assert Policy.from_file(f).classify("collections", "OrderedDict")[0] is Verdict.DANGEROUS
    g = tmp_path / "scan.toml"
    g.write_text('[scan]\ndeny = ["collections.Counter"]\n')
    assert Policy.from_file(g).classify("collections", "Counter")[0] is Verdict.DANGEROUS


@pytest.mark.parametrize(
    ("text", "hint_has"),
    [
        ("[tool.other]\nx = 1\n", "add [tool.trainwarden] with allow/deny/fail_on keys"),
        ('bogus = ["a.b"]\n', "known keys: allow, deny, fail_on"),
        ("[limits]\nmax_bogus = 3\n", "known limits: "),
        ('fail_on = "sometimes"\n', "use one of: info, low, medium, high, critical"),
    ],
)
def test_policy_file_errors_say_what_to_do(tmp_path: Path, text: str, hint_has: str) -> None:
    f = tmp_path / "trainwarden.toml"
    f.write_text(text)
    with pytest.raises(ScanError) as err:
        Policy.from_file(f)
    assert str(f) in err.value.message
    assert err.value.hint is not None and err.value.hint.startswith(hint_has)


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("pyproject.toml", "[tool]\ntrainwarden = 3\n", "[tool.trainwarden] must be a table"),
        ("trainwarden.toml", "limits = 3\n", "'limits' in policy file"),
        ("trainwarden.toml", 'allow = "mylib.Net"\n', "must be a list of strings"),
    ],
)
def test_policy_file_shape_errors_name_the_file(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ScanError) as err:
        Policy.from_file(f)
    assert str(f) in err.value.message and says in err.value.message


def test_entry_list_error_shows_the_expected_form(tmp_path: Path) -> None:
    f = tmp_path / "trainwarden.toml"
    f.write_text('deny = "os.system"\n')
    with pytest.raises(ScanError) as err:
        Policy.from_file(f)
    assert err.value.hint == 'deny = ["module.qualname", "module.*"]'


def test_unknown_limits_are_all_named(tmp_path: Path) -> None:
    import dataclasses

    f = tmp_path / "trainwarden.toml"
    f.write_text("[limits]\nmax_bogus = 3\nmax_other = 4\n")
    with pytest.raises(ScanError) as err:
        Policy.from_file(f)
    assert err.value.message == f"unknown limit(s) max_bogus, max_other in policy file {f}"
    known = ", ".join(sorted(x.name for x in dataclasses.fields(Limits)))
    assert err.value.hint == f"known limits: {known}"


@pytest.mark.parametrize(
    ("module", "name", "reason"),
    [
        ("mylib", "Net", "not on the allowlist"),
        ("<extension>", "42", "unregistered copyreg extension code"),
        (
            "torch",
            "Size.__globals__",
            "walks a special attribute (e.g. __globals__, "
            "__builtins__, __subclasses__) that reaches arbitrary code",
        ),
        ("mylib.__init__", "Net", "imports a special module name"),
        (
            "__main__",
            "Net",
            "defined by the loading program's own script: unknown code, not on the allowlist",
        ),
        ("mine", "Exact", "allowed by policy"),
    ],
)
def test_each_verdict_says_why(module: str, name: str, reason: str) -> None:
    """The reason travels into every finding: a report must say which rule decided."""
    p = Policy.default().with_overrides(allow=["mine.Exact"])
    assert p.classify(module, name)[1] == reason


def test_unreadable_policy_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ScanError) as err:
        Policy.from_file(tmp_path / "missing.toml")
    assert "missing.toml" in err.value.message and "No such file" in err.value.message
    assert err.value.hint == "check the path given to --policy"


def test_discover_from_a_file_and_through_trainwarden_toml(tmp_path: Path) -> None:
    (tmp_path / "trainwarden.toml").write_text('deny = ["collections.OrderedDict"]\n')
    sub = tmp_path / "models"
    sub.mkdir()
    ckpt = sub / "model.pt"
    ckpt.write_bytes(b"")
    for start in (sub, ckpt):
        p = Policy.discover(start)
        assert p.source == str(tmp_path / "trainwarden.toml")
        assert p.classify("collections", "OrderedDict")[0] is Verdict.DANGEROUS


def test_discover_skips_a_pyproject_of_other_tools(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert Policy.discover(tmp_path) == Policy.default()
    assert Policy.discover(tmp_path / "plain") == Policy.default()


def test_discover_names_a_broken_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool\n")
    with pytest.raises(ScanError) as err:
        Policy.discover(tmp_path)
    assert str(tmp_path / "pyproject.toml") in err.value.message
