"""Surviving mutants of bench/mutation.py that were reviewed and found equivalent.

``REVIEWED[target][key] = reason``: ``key`` is ``"FUNCTION | MUTATED LINE(S)"`` as bench/mutation.py
prints it for an unexplained survivor; ``reason`` says in one line why no test can or should tell
the mutant from the original. A survivor that could change a security decision never goes here:
it gets a test that kills it.
"""

from __future__ import annotations

_SPEC_CACHE = (
    "the id cache only saves a walk over CALLS: it holds the object itself, so a cached id is "
    "never reused, and a miss walks the table to the same validator"
)
_MUTATOR_ALIAS = (
    "the alias clause only admits a MUTATORS key spelled other than its owner's own "
    "module.qualname; every key resolves to its owner under its own spelling in the installed "
    "stdlib, torch and numpy (and the direct spelling already matched), so it decides nothing"
)
_SWALLOWED_TYPE_ERROR = (
    "_plain and _build are reached only through dtype_info, whose `except Exception` turns "
    "this TypeError into None (not decided): its message is never read"
)
_BIND = "__get__ given an instance binds to it; the owner argument is read only without one"
_ENFORCER_CACHE = (
    "only block mode reaches it, where an enforcer records a finding only as it refuses: a new "
    "one per call (same policy, mode, location) refuses the same calls with the same error; only "
    "a refusal after an earlier, caught refusal on the same unpickler would list one finding less"
)

_VERIFY_ERROR = (
    "verify_signature is handed the key object load_public_key already returned (cryptography "
    "already imported), so the error class it would raise a key or import problem with is never "
    "used"
)
_UNREAD_PAYLOAD = (
    "_check_signature never reads its payload argument: verify_signature checks the signatures "
    "over the envelope's own payload, the one _read_envelope parsed the statement from"
)

_SETTLE = (
    "the cache hit in the RECORD loop only settles a row early: a row it does not settle is "
    "hashed through hash_files, which finds the same cache entry (counting the same hit) and "
    "reaches the same status and digests"
)
_STEM = "only the text before the first dot is used, whatever the split limit"
_OTHER = (
    "digests of another algorithm are compared only for rows whose algorithm is accepted and "
    "not sha256; computing them for more rows changes no verdict"
)
_LINK = (
    "a symbolic link never has a digest (every route into hash_files skips links, which opens "
    "with O_NOFOLLOW), so hexd is None for a link whether or not it is recognised here (the "
    "only use of _is_link; a deferred row's path is always in stats, never None)"
)
_SHA256_MISMATCH = (
    "a sha256 row reaching this line already failed `actual == expected` above: it is modified "
    "whichever digest (its own or none) is compared"
)

_RPM_OTHER = (
    "rpm_other holds every non-sha256 algorithm rpm reported (built from the same rows): the "
    "default is never used"
)
_LAST_PART = "the last part of a path split at '/' is the same whatever the split limit"

REVIEWED: dict[str, dict[str, str]] = {
    "policy": {
        'xǁPolicyǁfrom_file | f"cannot read policy file {p}: {e.strerror and e}",': (
            "wording only: the message still names the file and the OS error"
        ),
        'xǁPolicyǁfrom_file | doc = tomllib.loads(raw.decode("UTF-8"))': (
            '"UTF-8" and "utf-8" name the same codec'
        ),
        'xǁPolicyǁdiscover | doc = tomllib.loads(pyproject.read_text("UTF-8"))': (
            '"UTF-8" and "utf-8" name the same codec'
        ),
        "xǁPolicyǁdiscover | doc = tomllib.loads(pyproject.read_text(None))": (
            "the locale encoding is UTF-8 wherever Python 3.11 runs us (PEP 538/540 coerce the "
            "C locale), so the same text is read"
        ),
        "xǁPolicyǁ_apply_config | limits = None": (
            "the only caller (from_file) starts from Policy.default(), whose limits is None"
        ),
        "xǁPolicyǁclassify | if _wild_match(pattern, full, None, deny=True):": (
            "the deny branch of _wild_match never reads `module`"
        ),
        'xǁPolicyǁclassify | if pattern.endswith(".*") and _wild_match(pattern, full, None, '
        "deny=True):": "the deny branch of _wild_match never reads `module`",
        'xǁPolicyǁclassify | if pattern.endswith(".*") and _wild_match(pattern, full, module, '
        "deny=None):": "None is as falsy as False: the allow branch is taken either way",
        'x__wild_match | rest = full[len(base) + 1 :] if (full.startswith(base + ".")) or True '
        "else None": (
            "rest is used only when module == base, and then full (module + '.' + name) always "
            "starts with base + '.'"
        ),
    },
    "enforcer": {
        "xǁEnforcerǁcheck | stacklevel=4,": (
            "stacklevel only chooses which caller frame the warning names; no decision reads it"
        ),
        "xǁEnforcerǁcheck | )": (  # the stacklevel argument removed
            "stacklevel only chooses which caller frame the warning names; no decision reads it"
        ),
        "xǁEnforcerǁfinding_for | "
        'Severity.parse(getattr(self.policy, "unknown_severity", None)),': (
            "every Policy has unknown_severity; the getattr default is never used"
        ),
        'xǁEnforcerǁfinding_for | Severity.parse(getattr(self.policy, "unknown_severity", )),': (
            "every Policy has unknown_severity; the getattr default is never used"
        ),
    },
    "manifest": {
        'x__read_envelope | envelope = json.loads(manifest.read_text(encoding="UTF-8"))': (
            '"UTF-8" and "utf-8" name the same codec'
        ),
        "x__read_envelope | envelope = json.loads(manifest.read_text(encoding=None))": (
            "the locale encoding is UTF-8 wherever Python 3.11 runs us (PEP 538/540 coerce the "
            "C locale), so the same text is read"
        ),
        "x__check_signature | if _signing.verify_signature(envelope, pub, error=None):": (
            _VERIFY_ERROR
        ),
        "x__check_signature | if _signing.verify_signature(envelope, pub, ):": _VERIFY_ERROR,
        "x_verify_manifest | signed_by, verified = _check_signature(manifest, envelope, None, "
        "public_key)": _UNREAD_PAYLOAD,
        "x_verify_file_bytes | signed_by, verified = _check_signature(manifest, envelope, None, "
        "public_key)": _UNREAD_PAYLOAD,
    },
    "guard": {
        "x__patch_existing_subclasses | if own is not None and not "
        'getattr(own, "__trainwarden_guarded__", None):': (
            "None is as falsy as False: a find_class without the marker is wrapped either way"
        ),
    },
    "guard-closed": {
        "x__closed_op | if _closed_enforcer(None) is None:": (
            "the result is only compared with None, and for any object _closed_enforcer is None "
            "exactly when the guard is not in block mode"
        ),
        "x__closed_op | op.__name__ = None": "the name only labels the function in tracebacks",
        "x__trust_if_user_allowed | enforcer = _closed_enforcer(None)": (
            "the enforcer is only asked user_allowed, which reads its policy alone, and every "
            "enforcer _closed_enforcer returns carries the guard's current policy"
        ),
        "x__c_load | - path=None,": "path=None is UnsafeModelError's default",
        "x__closed_enforcer | enforcer = _active_enforcer.get() or "
        'getattr(None, "_tw_guard_enforcer", None)': _ENFORCER_CACHE,
        "x__closed_enforcer | enforcer = _active_enforcer.get() or "
        'getattr(obj, "XX_tw_guard_enforcerXX", None)': _ENFORCER_CACHE,
        "x__closed_enforcer | enforcer = _active_enforcer.get() or "
        'getattr(obj, "_TW_GUARD_ENFORCER", None)': _ENFORCER_CACHE,
        "x__closed_enforcer | obj._tw_guard_enforcer = None": _ENFORCER_CACHE,
        'x__c_load | kw = getattr(self, "_tw_kw", None)': (
            "_c_load reads _tw_kw only after finding _tw_file, and the guard sets both together "
            "on a C unpickler (GuardedUnpickler.__init__, _capturing_init): the default is unused"
        ),
        'x__c_load | kw = getattr(self, "_tw_kw", )': (
            "_c_load reads _tw_kw only after finding _tw_file, and the guard sets both together "
            "on a C unpickler (GuardedUnpickler.__init__, _capturing_init): the default is unused"
        ),
    },
    "zip-stream": {
        "xǁZipHandlerǁ_streamed_plain_npy | if ctx.charge_decompressed(probe.size, None):": (
            "a stream that finished within decompress_budget() can never exceed the total or "
            "the file's ratio when charged, so the location of that finding is never used"
        ),
        "xǁ_NpyProbeǁ__init__ | self._decided = None": "None is as false as False here",
        "xǁZipHandlerǁ_streamed_plain_npy | if remaining < 0:": (
            "with exactly 0 left the stream starts a decompressor, overflows at once and says "
            "no; the member is then refused by _read as before (a cost, not a decision)"
        ),
        "xǁZipHandlerǁ_streamed_plain_npy | if remaining <= 1:": (
            "with 1 byte left the stream would overflow at once anyway: the member is refused by "
            "_read either way"
        ),
        "xǁ_NpyProbeǁwrite | if time.monotonic() >= self._deadline:": (
            "the clock equal to the deadline to the nanosecond: indistinguishable from a moment "
            "later"
        ),
        "xǁ_NpyProbeǁwrite | if len(self.head) <= _HEAD:": (
            "a full head takes chunk[:0]: nothing is added"
        ),
        "xǁ_NpyProbeǁwrite | self._decided = None": (
            "deciding again on every later chunk: the head no longer changes, so the same "
            "answer at a small cost"
        ),
        "xǁ_NpyProbeǁwrite | self._decided = False": (
            "deciding again on every later chunk: the head no longer changes, so the same "
            "answer at a small cost"
        ),
    },
    "attest-bytecode": {
        'x__used_by_python | if int.from_bytes(head[4:9], "little") & 0b1:': (
            "bit 0 of a little-endian integer is bit 0 of its first byte, however many bytes follow"
        ),
        'x__used_by_python | size = int.from_bytes(head[12:17], "little")': (
            "every head is at most 16 bytes (the hash pass keeps data[:16]): the slice is the same"
        ),
        "x_check_bytecode | - check=False,": "check=False is subprocess.run's default",
        "x_check_bytecode | check=None,": "None is as false as False for subprocess.run's check",
        **{
            f"x_check_bytecode | for (pyc, source), row in zip(chunk, rows, {arg}):": (
                "the lengths are compared just before (a different length is an error for the "
                "whole chunk), so zip never meets unequal lengths"
            )
            for arg in ("", "strict=False", "strict=None")
        },
        **{
            f"x_check_bytecode | {line}": (
                "how many checker threads run at once (or their names): the same chunks are "
                "checked and their results joined in chunk order whatever the number"
            )
            for line in (
                "n = None",
                "n = max(1, min(len(chunks), workers or min(8, os.cpu_count() and 1)))",
                "n = max(1, min(len(chunks), workers or min(8, os.cpu_count() or 2)))",
                "n = max(1, min(len(chunks), workers or min(9, os.cpu_count() or 1)))",
                "n = max(2, min(len(chunks), workers or min(8, os.cpu_count() or 1)))",
                'with ThreadPoolExecutor(max_workers=None, thread_name_prefix="tw-pyc") as pool:',
                "with ThreadPoolExecutor(max_workers=n, ) as pool:",
                'with ThreadPoolExecutor(max_workers=n, thread_name_prefix="TW-PYC") as pool:',
                'with ThreadPoolExecutor(max_workers=n, thread_name_prefix="XXtw-pycXX") as pool:',
                "with ThreadPoolExecutor(max_workers=n, thread_name_prefix=None) as pool:",
                'with ThreadPoolExecutor(thread_name_prefix="tw-pyc") as pool:',
            )
        },
        "x_verify_bytecode | todo, python, env, workers=None": (
            "the number of checker threads only (see check_bytecode's)"
        ),
        "x_verify_bytecode | todo, python, env, ):": (
            "the number of checker threads only (see check_bytecode's)"
        ),
        "x_verify_bytecode | added += 2": (
            "only whether anything was added is used (the cache is saved when its count is not "
            "zero); the count itself is never read"
        ),
        "x_verify_bytecode | added = 1": (
            "only whether anything was added is used; a 1 where the sum would be larger is "
            "still not zero"
        ),
        "x_verify_bytecode | if added or cache.trusted:": (
            "note_added(0) adds nothing, and an untrusted cache is never saved whatever it was told"
        ),
        'x_verify_bytecode | compiler = hashlib.sha256(interpreter or b"XXXX")': (
            "the compiler digest is used only on the vouched path, which a pair reaches only "
            "when interpreter is not None (without one every pair is compiled first)"
        ),
        "x_verify_bytecode | digests = cache.lookup_table() if (vouched is not None) or True "
        "else {}": ("digests is read only on the vouched path: without a baseline it is unused"),
        'x_verify_bytecode | read = interpreter + (pack(*pyc_meta) if pyc_meta else b"XXXX")': (
            "an answer without the bytecode's metadata never equals the walk's key, with b'' "
            "or any other filler: nothing is remembered either way"
        ),
        "x_verify_bytecode | src_key = None": (
            "src_key is read only when the source has walk metadata, where it is set first"
        ),
        'x_verify_bytecode | src_key = b"XXXX"': (
            "src_key is read only when the source has walk metadata, where it is set first"
        ),
        "x_verify_bytecode | sst = stats.get(source) if (source is not None) or True else None": (
            "stats never holds None: looking it up gives None, as the original does"
        ),
    },
    "attest_memo": {
        "x_walk_fingerprint | h.update(len(p).to_bytes(8, ))": (
            "byte order only: the fingerprint is compared with fingerprints computed the "
            "same way, and lengths stay fixed-width"
        ),
        'x_walk_fingerprint | h.update(len(p).to_bytes(9, "little"))': (
            "a wider fixed-width length prefix is just as unambiguous"
        ),
        'x_walk_fingerprint | names = "XX\\0XX".join(w).encode("utf-8", "surrogateescape")': (
            "paths cannot contain NUL, so any separator containing NUL keeps the join unambiguous"
        ),
        'x_walk_fingerprint | names = "\\0".join(w).encode("UTF-8", "surrogateescape")': (
            '"UTF-8" and "utf-8" name the same codec'
        ),
        "x_walk_fingerprint | h.update(len(names).to_bytes(8, ))": (
            "byte order only: the fingerprint is compared with fingerprints computed the same way"
        ),
        'x_walk_fingerprint | h.update(len(names).to_bytes(9, "little"))': (
            "a wider fixed-width length prefix is just as unambiguous"
        ),
        'x_walk_fingerprint | b"XXXX".join(': (
            "the keys are fixed-width (40 bytes), so a separator between them changes the "
            "digest but not which walks share one"
        ),
        "xǁSnapshotMemoǁ_load | fd = os.open(path, os.O_RDONLY | getattr(os, "
        '"O_NOFOLLOW", None))': (
            "os.O_NOFOLLOW exists on every POSIX system trainwarden runs on, so the default "
            "is never used"
        ),
        'xǁSnapshotMemoǁ_load | fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", ))': (
            "os.O_NOFOLLOW exists on every POSIX system trainwarden runs on, so the default "
            "is never used"
        ),
        'xǁSnapshotMemoǁ_load | fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 1))': (
            "os.O_NOFOLLOW exists on every POSIX system trainwarden runs on, so the default "
            "is never used"
        ),
        "xǁSnapshotMemoǁ_load | if unsafe_reason(os.fstat(f.fileno()), None) or unsafe_reason(": (
            "the path only names the file in a message the memo never shows; the decision "
            "reads the stat"
        ),
        "xǁSnapshotMemoǁ_load | os.stat(path.parent), None": (
            "the path only names the directory in a message the memo never shows; the "
            "decision reads the stat"
        ),
        "xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(prefix=None, dir=self.path.parent)": (
            "the temporary file's name is never read"
        ),
        "xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(dir=self.path.parent)": (
            "the temporary file's name is never read"
        ),
        'xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(prefix="XX.attest-memo-XX", '
        "dir=self.path.parent)": ("the temporary file's name is never read"),
        'xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(prefix=".ATTEST-MEMO-", '
        "dir=self.path.parent)": ("the temporary file's name is never read"),
        'xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(prefix=".attest-memo-", dir=None)': (
            "a temporary file in /tmp is renamed over the memo on the same file system, else "
            "os.replace fails and nothing is saved: never a half-written memo"
        ),
        'xǁSnapshotMemoǁsave | fd, tmp = tempfile.mkstemp(prefix=".attest-memo-", )': (
            "a temporary file in /tmp is renamed over the memo on the same file system, else "
            "os.replace fails and nothing is saved: never a half-written memo"
        ),
        "xǁSnapshotMemoǁsave | Path(tmp).unlink(missing_ok=None)": (
            "the temporary file always exists here (mkstemp created it), so missing_ok is "
            "never read"
        ),
        "xǁSnapshotMemoǁsave | Path(tmp).unlink(missing_ok=False)": (
            "the temporary file always exists here (mkstemp created it), so missing_ok is "
            "never read"
        ),
        "xǁSnapshotMemoǁsave | self._dirty = None": ("None is as falsy as False"),
    },
    "constructors": {
        **dict.fromkeys(
            (
                "x__spec_for | hit = None",
                "x__spec_for | hit = _by_id.get(None)",
                "x__spec_for | hit = _by_id.get(id(None))",
                "x__spec_for | if hit is not None and hit[1] is obj:",
                "x__spec_for | if hit is not None and hit[0] is not obj:",
                "x__spec_for | _by_id[id(obj)] = None",
                "x__spec_for | _by_id[id(None)] = (obj, check)",
            ),
            _SPEC_CACHE,
        ),
        "x_check_mutator | if key not in MUTATORS or not any(": _MUTATOR_ALIAS,
        **dict.fromkeys(
            (
                f"x_check_mutator | resolve({owner}) is owner and k.endswith({suffix}) "
                "for k in MUTATORS"
                for owner, suffix in (
                    ("k.rsplit(None, 1)[0]", '"." + method'),
                    ('k.rsplit(".", )[0]', '"." + method'),
                    ('k.split(".", 1)[0]', '"." + method'),
                    ('k.rsplit("XX.XX", 1)[0]', '"." + method'),
                    ('k.rsplit(".", 2)[0]', '"." + method'),
                    ('k.rsplit(".", 1)[1]', '"." + method'),
                    ('k.rsplit(".", 1)[0]', '"XX.XX" + method'),
                )
            ),
            _MUTATOR_ALIAS,
        ),
        "x_check_mutator | return owner.__dict__[method].__get__(obj, None)": _BIND,
        "x_check_mutator | return owner.__dict__[method].__get__(obj, )": _BIND,
        "x_apply_state | setstate.__get__(inst, None)(state)": _BIND,
        "x_apply_state | setstate.__get__(inst, )(state)": _BIND,
    },
    "unpickler": {
        "xǁRestrictedUnpicklerǁfind_class | raise UnsafeModelError("
        '"restricted unpickler used without a policy", )': (
            "path=None is UnsafeModelError's default"
        ),
        **dict.fromkeys(
            (
                f'x_restricted_pickle_module | cls = type("{n}", (RestrictedUnpickler,), '
                '{"tw_enforcer": enforcer})'
                for n in (
                    "XXTrainWardenUnpicklerXX",
                    "trainwardenunpickler",
                    "TRAINWARDENUNPICKLER",
                )
            ),
            "the class name only labels the class in reprs; no decision reads it",
        ),
        **dict.fromkeys(
            (
                "x_restricted_pickle_module | __name__=None,",
                'x_restricted_pickle_module | __name__="XXtrainwarden.loading.unpicklerXX",',
                'x_restricted_pickle_module | __name__="TRAINWARDEN.LOADING.UNPICKLER",',
            ),
            "torch reads a pickle_module's __name__ only to compare it with 'dill'; any other "
            "name loads the same way",
        ),
        "xǁRestrictedUnpicklerǁload_additems | if type(None) is set:": (
            "an exact set then goes through check_mutator, which returns set.add (on the "
            "reviewed list): the same set is built either way"
        ),
    },
    "npy-header": {
        'x_parse_npy_header | descr = m.group("descr").decode("ASCII")': (
            '"ASCII" and "ascii" name the same codec'
        ),
        **dict.fromkeys(
            (
                "x__plain | raise TypeError(None)",
                'x__plain | raise TypeError(f"not a plain dtype state value: '
                '{type(None).__name__}")',
                "x__build | raise TypeError(None)",
                'x__build | raise TypeError("XXnot a pickled dtypeXX")',
                'x__build | raise TypeError("NOT A PICKLED DTYPE")',
            ),
            _SWALLOWED_TYPE_ERROR,
        ),
    },
    "monitor-xrank": {
        **dict.fromkeys(
            (
                'xǁReplicaComparatorǁ__init__ | self._divergence_sig: tuple[Any, ...] | None = ""',
                'xǁReplicaComparatorǁ__init__ | self._step_sig: tuple[Any, ...] | None = ""',
                'xǁReplicaComparatorǁ_check_steps | self._step_sig = ""',
                'xǁReplicaComparatorǁ_check_digests | self._divergence_sig = ""',
            ),
            "the signature is only compared with a tuple of ranks and fields (or of steps): "
            "'' equals none of them, just as None does, so the next disagreement is reported",
        ),
        "xǁReplicaComparatorǁ__init__ | self._schema_reported = None": (
            "the flag is only read as a truth value, and None is as falsy as False"
        ),
        'xǁReplicaComparatorǁ__init__ | self.schema = float(zlib.crc32("XX\\0XX".join('
        'self.fields).encode("utf-8")))': (
            "every rank computes the checksum with the same separator, and either separator "
            "tells two field lists apart unless a field name holds the separator itself"
        ),
        'xǁReplicaComparatorǁ__init__ | self.schema = float(zlib.crc32("\\0".join('
        'self.fields).encode("UTF-8")))': '"UTF-8" and "utf-8" name the same codec',
        "xǁReplicaComparatorǁanalyse | meta = gathered[:, n + 4 : n + 5 + _META]": (
            "only meta's columns 0 to 3 are read; one more column at the end (a local value, "
            "or nothing past the matrix) changes no read"
        ),
        "xǁReplicaComparatorǁ_same | return math.isclose(a, b, rel_tol=self.rtol, )": (
            "abs_tol=0.0 is math.isclose's default"
        ),
        **dict.fromkeys(
            (
                "xǁReplicaComparatorǁ_groups | if all(self._same(x, y) for x, y in zip(row, ref, "
                "strict=None)):",
                "xǁReplicaComparatorǁ_groups | if all(self._same(x, y) for x, y in zip(row, ref, "
                ")):",
                "xǁReplicaComparatorǁ_groups | if all(self._same(x, y) for x, y in zip(row, ref, "
                "strict=False)):",
            ),
            "every row holds one key per column of the same gathered matrix: the lengths "
            "always match, so strictness is never exercised",
        ),
    },
    "monitor-update": {
        "x__f | return float(value.item() if (isinstance(value, torch.Tensor)) and False else "
        "value)": "float() of a one-element tensor is its item()",
        "xǁUpdateCheckerǁ__init__ | self._queue: list[int] = None": (
            "the queue is read first through `not self._queue`, and None is as falsy as []: "
            "it is refilled before any pop"
        ),
        **dict.fromkeys(
            (
                "xǁUpdateCheckerǁ_next_params | tries = 1",
                "xǁUpdateCheckerǁ_next_params | while len(chosen) < min(self._per_step, "
                "len(self._params)) and tries <= 2 * len(",
                "xǁUpdateCheckerǁ_next_params | while len(chosen) < min(self._per_step, "
                "len(self._params)) and tries < 3 * len(",
                "xǁUpdateCheckerǁ_next_params | tries -= 1",
                "xǁUpdateCheckerǁ_next_params | tries += 2",
            ),
            "a choice never needs more than n pops (what is left of the queue, its repeats in "
            "the reshuffle, the rest), so a bound of n or more pops never stops the loop",
        ),
        **dict.fromkeys(
            (
                "xǁUpdateCheckerǁsnapshot | state[key] = val.detach().reshape(-1)[idx].to(None)",
                "xǁUpdateCheckerǁsnapshot | state[key] = val.detach().reshape(-1).to(None).clone()",
            ),
            "the reference combines each state slice with the float64 gradient slice (or reads "
            "the step as a float), so type promotion gives the same float64 arithmetic",
        ),
        "xǁUpdateCheckerǁsnapshot | state[key] = val.detach().reshape(+1).to(torch.float64)"
        ".clone()": "the scalar state has one element: reshape(1) and reshape(-1) are equal",
        **dict.fromkeys(
            (
                'x_reference_sgd | d_p = -g if hp.get("maximize", None) else g',
                'x_reference_sgd | d_p = -g if hp.get("maximize", ) else g',
                'x_reference_sgd | d_p = d_p + momentum * buf if hp.get("nesterov", None) else buf',
                'x_reference_sgd | d_p = d_p + momentum * buf if hp.get("nesterov", ) else buf',
                'x_reference_adam | grad = -g if hp.get("maximize", None) else g',
                'x_reference_adam | grad = -g if hp.get("maximize", ) else g',
                'x_reference_adam | if hp.get("amsgrad", None):',
                'x_reference_adam | if hp.get("amsgrad", ):',
                'xǁUpdateCheckerǁverify | s.hyper.get("decoupled_weight_decay", None)',
                'xǁUpdateCheckerǁverify | s.hyper.get("decoupled_weight_decay", )',
            ),
            "the flag is only read as a truth value, and .get's default None is as falsy as False",
        ),
        **dict.fromkeys(
            (
                'x_reference_adam | if hp.get("amsgrad", True):',
                'xǁUpdateCheckerǁverify | s.hyper.get("decoupled_weight_decay", True)',
                'xǁUpdateCheckerǁverify | decoupled = self.kind == "XXadamwXX" or bool(',
                'xǁUpdateCheckerǁverify | decoupled = self.kind == "ADAMW" or bool(',
            ),
            "torch fills every Adam/AdamW param group from its defaults (amsgrad, and "
            "decoupled_weight_decay, True for AdamW), so the default and the kind test are "
            "never what decides",
        ),
        "x_reference_adam | t = (_f(step_before.reshape(+1)[0]) if step_before is not None "
        "else 0.0) + 1.0": "step is a one-element tensor: reshape(1) and reshape(-1) are equal",
        "x__sample_index | idx = list(range(numel)) if numel < k else "
        "sorted(rng.sample(range(numel), k))": (
            "with numel == k both branches check every element in order; the sample only "
            "draws from the secret rng, whose later draws stay as unpredictable"
        ),
        **dict.fromkeys(
            (
                "x__sample_index | return torch.tensor(idx, dtype=None, device=device)",
                "x__sample_index | return torch.tensor(idx, device=device)",
            ),
            "torch.tensor of Python ints is int64 without a dtype",
        ),
        **dict.fromkeys(
            (
                "x__sample_index | return torch.tensor(idx, dtype=torch.int64, device=None)",
                "x__sample_index | return torch.tensor(idx, dtype=torch.int64, )",
                "xǁUpdateCheckerǁsnapshot | idx = _sample_index(self._rng, p.numel(), "
                "self._elems, None)",
            ),
            "a CPU index tensor selects the same elements of a tensor on any device (torch "
            "moves the index)",
        ),
        **dict.fromkeys(
            (
                "xǁUpdateCheckerǁverify | actual = s.param.detach().reshape(-1)[s.index].to(None)",
                "xǁUpdateCheckerǁverify | got = val.detach().reshape(-1)[s.index].to(None)",
            ),
            "every use subtracts a float64 tensor first, and type promotion gives the same "
            "float64 values .to(torch.float64) would",
        ),
        **dict.fromkeys(
            (
                "xǁUpdateCheckerǁverify | eps = torch.finfo(s.param.dtype).eps if "
                "(s.param.is_floating_point()) or True else 0.0",
                "xǁUpdateCheckerǁverify | eps = torch.finfo(s.param.dtype).eps if "
                "s.param.is_floating_point() else 1.0",
            ),
            "a tensor that is not floating point (or complex) cannot hold a gradient, and "
            "snapshot skips parameters without one: the integer branch is never taken",
        ),
        **dict.fromkeys(
            (
                "xǁUpdateCheckerǁverify | st_eps = torch.finfo(val.dtype).eps if "
                "(val.is_floating_point()) or True else 0.0",
                "xǁUpdateCheckerǁverify | st_eps = torch.finfo(val.dtype).eps if "
                "val.is_floating_point() else 1.0",
            ),
            "only state tensors of the parameter's shape are compared, and SGD/Adam/AdamW keep "
            "those (moments, momentum) in the parameter's floating dtype",
        ),
        "xǁUpdateCheckerǁ_compare | dot = float((exp_delta * act_delta)[resolvable].sum()) if "
        "(bool(resolvable.any())) or True else 0.0": (
            "the sum over an empty selection is 0.0, the else value"
        ),
        "xǁUpdateCheckerǁ_compare | dot = float((exp_delta * act_delta)[resolvable].sum()) if "
        "bool(resolvable.any()) else 1.0": (
            "with no resolvable element neither 0.0 nor 1.0 is below zero: no sign flip either way"
        ),
    },
    "monitor-continuity": {
        **dict.fromkeys(
            (
                f"xǁWeightContinuityǁ{fn} | {head}{strict}{tail}"
                for fn, head, tail in (
                    ("_compare", "before = dict(zip(ref_names, ref_ids, ", "))"),
                    ("_compare", "after = dict(zip(names, ids, ", "))"),
                    ("_compare", "ref_map = dict(zip(ref_names, ref_rows, ", "))"),
                    (
                        "_compare",
                        "pairs = [(n, ref_map[n], r) for n, r in zip(names, rows, ",
                        ") if n in ref_map]",
                    ),
                    ("_compare", "pairs = list(zip(names, ref_rows, rows, ", "))"),
                    (
                        "digest",
                        'return [(f"weight:{n}", r[0]) for n, r in zip(names, rows, ',
                        ") if n in params]",
                    ),
                )
                for strict in ("strict=None", "", "strict=False")
            ),
            "names, ids and rows come from one fingerprint call, one entry per tensor (and a "
            "reference map is built from such lists): the lengths always match",
        ),
        **dict.fromkeys(
            (
                "xǁWeightContinuityǁforward_pre | params = mon.weights(buffers=None)",
                "xǁWeightContinuityǁdigest | params = {n for n, _ in self.mon.weights("
                "buffers=None)}",
            ),
            "weights() reads buffers only as a truth value, and None is as falsy as False",
        ),
        "xǁWeightContinuityǁforward_pre | elif not first and self.post is not None or "
        "self._fwd is not None:": (
            "_fwd is set only by a first forward that found post set and cleared by every "
            "step_pre, and post is reset only by step_post, after step_pre: at a later forward "
            "_fwd is set exactly when post is (a forward inside step() never reaches the checks)"
        ),
        'xǁWeightContinuityǁ__init__ | self._fwd: dict[str, Fp] | None = ""': (
            "before the first step post is None, so forward_pre's micro-batch branch is not "
            "taken, and a step_pre that inherits '' finds no 'rows' in it: nothing is compared"
        ),
        'xǁOptimizerStateContinuityǁdigest | return [("optimizer_state", '
        "int(combine(*self.post)[:17], 16) - (1 << 63))]": (
            "combine() is an 8-byte blake2b hex digest: 16 characters, so [:17] is [:16]"
        ),
        **dict.fromkeys(
            (
                f"xǁOptimizerStateContinuityǁ_compare | {m}_map = dict(zip({m}[0], {m}[1], {v}))"
                for m in ("ref", "now")
                for v in ("strict=None", "", "strict=False")
            ),
            "names and rows come from one fingerprint call, one row per tensor: the lengths "
            "always match",
        ),
        **dict.fromkeys(
            (
                "xǁWeightContinuityǁstep_pre | params = mon.weights(buffers=None)",
                "xǁWeightContinuityǁstep_pre | mon.weights(buffers=None),",
            ),
            "weights() reads buffers only as a truth value, and None is as falsy as False",
        ),
    },
    "pickle-vm-calls": dict.fromkeys(
        (
            "xǁ_VMǁcheck_use | f\"something a pickle may {'call' if (use == 'call') and False "
            'else use}",',
            "xǁ_VMǁcheck_use | f\"something a pickle may {'call' if use == 'XXcallXX' else use}\",",
            "xǁ_VMǁcheck_use | f\"something a pickle may {'call' if use == 'CALL' else use}\",",
        ),
        "both branches give 'call' when use is 'call', and use otherwise: the same text",
    ),
    "pickle-vm-args": {
        **dict.fromkeys(
            (
                f"xǁ_VMǁcheck_rebuild | for d, st in zip(size, stride, {v}):"
                for v in ("strict=None", "", "strict=False")
            ),
            "size and stride were checked to have the same length just above: strict never fires",
        ),
        **dict.fromkeys(
            (
                "xǁ_VMǁcheck_rebuild | if d <= 0 or st < 0:",
                "xǁ_VMǁcheck_rebuild | if d < 1 or st < 0:",
            ),
            "d is a plain int and d == 0 returned just above, so d <= 0 and d < 1 mean d < 0",
        ),
    },
    "attest-record": {
        "x__file_state | hit = None": _SETTLE,
        "x__file_state | hit = cached.get(None)": _SETTLE,
        'x__file_state | if alg != "sha256" and hit == expected:': _SETTLE,
        'x__file_state | if alg == "XXsha256XX" and hit == expected:': _SETTLE,
        'x__file_state | if alg == "SHA256" and hit == expected:': _SETTLE,
        "x__file_state | if alg is None and expected is None:  # bytecode listed without a hash": (
            _SETTLE
        ),
        'x__file_state | stem = os.path.basename(path).split(".", )[0]': _STEM,
        'x__file_state | stem = os.path.basename(path).split(".", 2)[0]': _STEM,
        "x__file_state | digests, errors = hash_files(list(to_hash.items()), cache, "
        "workers=None, pyc_heads=pyc_heads)": "the number of hashing threads changes no digest",
        "x__file_state | digests, errors = hash_files(list(to_hash.items()), cache, "
        "pyc_heads=pyc_heads)": "the number of hashing threads changes no digest",
        'x__file_state | if alg and alg != "sha256" or alg in ACCEPTED_ALGORITHMS:': _OTHER,
        'x__file_state | if alg or alg != "sha256" and alg in ACCEPTED_ALGORITHMS:': _OTHER,
        'x__file_state | if alg and alg != "XXsha256XX" and alg in ACCEPTED_ALGORITHMS:': _OTHER,
        'x__file_state | if alg and alg != "SHA256" and alg in ACCEPTED_ALGORITHMS:': _OTHER,
        "x__file_state | fst = None": _LINK,
        "x__file_state | fst = stats.get(None)": _LINK,
        "x__file_state | link = None": _LINK,
        "x__file_state | link = _is_link(None)": _LINK,
        'x__file_state | got = actual if (alg == "sha256") and False else other.get(alg, {})'
        ".get(full)": _SHA256_MISMATCH,
        'x__file_state | got = actual if alg == "XXsha256XX" else other.get(alg, {}).get(full)': (
            _SHA256_MISMATCH
        ),
        'x__file_state | got = actual if alg == "SHA256" else other.get(alg, {}).get(full)': (
            _SHA256_MISMATCH
        ),
        'x__file_state | got = actual if alg == "sha256" else other.get(alg, None).get(full)': (
            "other holds every accepted non-sha256 algorithm of a deferred row (built from the "
            "same rows with the same test): the default is never used"
        ),
        'x__file_state | got = actual if alg == "sha256" else other.get(alg, ).get(full)': (
            "other holds every accepted non-sha256 algorithm of a deferred row (built from the "
            "same rows with the same test): the default is never used"
        ),
        "x__file_state | rel = path[len(prefix) :] if (path.startswith(prefix)) and False else "
        "os.path.relpath(path, d.location)": (
            "for a path below the (normalised) location, relpath gives the same text as the slice"
        ),
        "x__is_link | return st is None and (st.st_mode & 0o170000) == 0o120000": _LINK,
        "x__is_link | return st is not None and (st.st_mode | 0o170000) == 0o120000": _LINK,
        "x__is_link | return st is not None and (st.st_mode & 61441) == 0o120000": _LINK,
        "x__is_link | return st is not None and (st.st_mode & 0o170000) == 40961": _LINK,
        'x__vouch | got_rpm = d if alg == "sha256" else rpm_other.get(alg, None).get(path)': (
            _RPM_OTHER
        ),
        'x__vouch | got_rpm = d if alg == "sha256" else rpm_other.get(alg, ).get(path)': (
            _RPM_OTHER
        ),
        'x__vouch | for alg in {a for _, a, _ in rpm.values() if a != "XXsha256XX"}:': (
            "rpm's sha256 rows are compared with the sha256 already computed: a second sha256 "
            "pass for them is never read"
        ),
        'x__vouch | for alg in {a for _, a, _ in rpm.values() if a != "SHA256"}:': (
            "rpm's sha256 rows are compared with the sha256 already computed: a second sha256 "
            "pass for them is never read"
        ),
        'x__vouch | md5s = hash_other(sorted(dpkg), "md5") if (dpkg) or True else {}': (
            "hash_other of no paths is {}"
        ),
        'x__vouch | md5s = hash_other(sorted(dpkg), "MD5") if dpkg else {}': (
            "hashlib.new takes algorithm names case-insensitively"
        ),
    },
    "attest-baseline": {
        "xǁSnapshotDiffǁbaseline_findings | f\"{what} {path.rsplit('/', )[-1]} since the "
        'baseline: {path} runs at "': _LAST_PART,
        "xǁSnapshotDiffǁbaseline_findings | f\"{what} {path.rsplit('/', 2)[-1]} since the "
        'baseline: {path} runs at "': _LAST_PART,
        "xǁSnapshotDiffǁbaseline_findings | code = path.endswith(_CODE_SUFFIXES) or "
        '".so." in path.rsplit("/", )[-1]': _LAST_PART,
        "xǁSnapshotDiffǁbaseline_findings | code = path.endswith(_CODE_SUFFIXES) or "
        '".so." in path.rsplit("/", 2)[-1]': _LAST_PART,
        "x_diff_snapshots | elif x is not None or y is not None:": (
            "the two branches before take every key that one snapshot lacks: this one only ever "
            "sees both set"
        ),
    },
    "zip-checks": {
        "xǁZipHandlerǁ_plain_npy | if ent.data_offset <= 0 or ent.flags & 0x1:": (
            "a member's data starts after its local header (30 bytes at least): never at 0"
        ),
        "xǁZipHandlerǁ_plain_npy | if ent.data_offset < 1 or ent.flags & 0x1:": (
            "a member's data starts after its local header (30 bytes at least): never at 0"
        ),
        **dict.fromkeys(
            (
                'x_unpickled_by | base = name.rsplit("/", )[-1]',
                'x_unpickled_by | base = name.rsplit("/", 2)[-1]',
            ),
            "only the last element is used, and every rsplit on '/' ends with the same last part",
        ),
        **dict.fromkeys(
            (
                "xǁZipHandlerǁ_plain_npy | if ent.method != 0 or ent.data_offset <= 0 or "
                "ent.flags & 0x1:",
                "xǁZipHandlerǁ_plain_npy | if ent.method != 0 or ent.data_offset < 1 or "
                "ent.flags & 0x1:",
            ),
            "a member's data follows its 30-byte local header: data_offset is -1 (no local "
            "header) or at least 30, never 0",
        ),
    },
    "zip-members": {
        'xǁZipHandlerǁ_scan_members | if (kind == "torchscript") or True': (
            "_kind calls an archive torchscript whenever code_members finds a member (the same "
            "test), so for every other kind the code set is empty either way"
        ),
        "xǁZipHandlerǁ_scan_members | if already is None and self._plain_npy(data, ent, None, "
        "ctx):": "_plain_npy never reads its member_loc argument",
    },
}
