"""The drill's scanner corpus, built by code: malicious samples (benign payloads) and clean files.

One module per container family (pickles, torch_files, numpy_files, joblib_files, archives,
keras_hdf5, onnx_models, gguf_models, safetensors_files, hf_folders), each with ``malicious()`` and
``clean()`` sample lists; :mod:`.asm` is the pickle assembler the corpus and the tests share.

Every malicious payload is benign: if some loader ever executed it, the only effect would be to
create that sample's canary file under ``dest/canaries/``. Tests assert the canaries never appear.
Clean files are written by the real libraries (torch, numpy, joblib, scikit-learn, transformers,
lightning, safetensors, onnx, h5py) so that the scanner is judged on what users really load.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus import (
    archives,
    gguf_models,
    hf_folders,
    joblib_files,
    keras_hdf5,
    numpy_files,
    onnx_models,
    pickles,
    safetensors_files,
    torch_files,
)
from trainwarden.drill._scan_corpus._base import (
    Kind,
    Sample,
    _Clean,
    _Mal,
    _quiet,
    _select,
    canaries_fired,
)

__all__ = [
    "Corpus",
    "Sample",
    "build_clean",
    "build_corpus",
    "build_malicious",
    "canaries_fired",
    "sample_names",
]


def _malicious_specs() -> list[_Mal]:
    from trainwarden.drill._samples_callables import callable_specs

    specs = [
        *pickles.malicious(),
        *torch_files.malicious(),
        *numpy_files.malicious(),
        *joblib_files.malicious(),
        *archives.malicious(),
        *keras_hdf5.malicious(),
        *onnx_models.malicious(),
        *gguf_models.malicious(),
        *safetensors_files.malicious(),
        *hf_folders.malicious(),
        *callable_specs(),
    ]
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AssertionError(f"duplicate sample names: {sorted(dupes)}")
    return specs


def _clean_specs() -> list[_Clean]:
    return [
        *pickles.clean(),
        *torch_files.clean(),
        *numpy_files.clean(),
        *joblib_files.clean(),
        *archives.clean(),
        *keras_hdf5.clean(),
        *onnx_models.clean(),
        *gguf_models.clean(),
        *safetensors_files.clean(),
        *hf_folders.clean(),
    ]


# The rule(s) each malicious sample must raise (it must also fail at HIGH): a sample flagged only
# by an unrelated finding (an internal error, some other unknown global) is a miss.
_EXPECTED_RULES: dict[str, tuple[str, ...]] = {
    "reduce_exec_protocol_0": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_1": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_2": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_3": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_4": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_5": ("TWS-PKL-DANGEROUS",),
    "global_os_system_protocol0": ("TWS-PKL-DANGEROUS",),
    "global_posix_system": ("TWS-PKL-DANGEROUS",),
    "stack_global_memo_strings": ("TWS-PKL-DANGEROUS",),
    "stack_global_memoize_binunicode8": ("TWS-PKL-DANGEROUS",),
    "stack_global_binunicode": ("TWS-PKL-DANGEROUS",),
    "stack_global_unicode_text": ("TWS-PKL-DANGEROUS",),
    "stack_global_string_opcode": ("TWS-PKL-DANGEROUS",),
    "stack_global_short_binstring": ("TWS-PKL-DANGEROUS",),
    "stack_global_binstring": ("TWS-PKL-DANGEROUS",),
    "inst_opcode_exec": ("TWS-PKL-DANGEROUS",),
    "obj_opcode_exec": ("TWS-PKL-DANGEROUS",),
    "newobj_functools_partial": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "newobj_ex_functools_partial": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "build_setstate_injection": ("TWS-PKL-DANGEROUS", "TWS-PKL-DUNDER-STATE"),
    "ext1_extension_registry": ("TWS-PKL-EXT",),
    "ext2_extension_registry": ("TWS-PKL-EXT",),
    "ext4_extension_registry": ("TWS-PKL-EXT",),
    "binpersid_pid_built_by_reduce": ("TWS-PKL-DANGEROUS",),
    "persid_after_payload": ("TWS-PKL-DANGEROUS",),
    "memo_get_undefined_key": ("TWS-PKL-DANGEROUS", "TWS-PKL-MEMO-UNDEFINED"),
    "frame_length_understated": ("TWS-PKL-DANGEROUS",),
    "frame_zero_then_real_frame": ("TWS-PKL-DANGEROUS",),
    "two_pickles_payload_in_second": ("TWS-PKL-DANGEROUS",),
    "garbage_after_stop": ("TWS-PKL-DANGEROUS",),
    "invalid_opcode_after_payload": ("TWS-PKL-DANGEROUS", "TWS-PKL-MALFORMED"),
    "truncated_after_payload": ("TWS-PKL-DANGEROUS", "TWS-PKL-TRUNCATED"),
    "fix_imports___builtin___eval": ("TWS-PKL-DANGEROUS",),
    "copy_reg_reconstructor_popen": ("TWS-PKL-DANGEROUS",),
    "dotted_pathlib_os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_argparse__os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_torch_serialization_os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_builtins_getattr_chain": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "getattr_from_memo": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "operator_attrgetter": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "_operator_attrgetter_dotted": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "operator_methodcaller_touch": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "functools_partial_exec": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "importlib_import_module": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "pkgutil_resolve_name": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "types_functiontype_marshal_loads": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "runpy__run_code": ("TWS-PKL-DANGEROUS",),
    "bdb_bdb_run": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "cprofile_run": ("TWS-PKL-DANGEROUS",),
    "profile_run": ("TWS-PKL-DANGEROUS",),
    "timeit_timeit_setup": ("TWS-PKL-DANGEROUS",),
    "trace_trace_run": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "pdb_run": ("TWS-PKL-DANGEROUS",),
    "code_interactiveinterpreter_runsource": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "ctypes_cdll_system": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "asyncio_create_subprocess_exec": ("TWS-PKL-DANGEROUS",),
    "pty_spawn": ("TWS-PKL-DANGEROUS",),
    "_posixsubprocess_fork_exec": ("TWS-PKL-DANGEROUS",),
    "pip_main_log": ("TWS-PKL-DANGEROUS",),
    "ensurepip__run_pip": ("TWS-PKL-DANGEROUS",),
    "numpy_testing_runstring": ("TWS-PKL-DANGEROUS",),
    "torch_load_nested": ("TWS-PKL-DANGEROUS",),
    "torch_storage__load_from_bytes": ("TWS-PKL-DANGEROUS",),
    "numpy_load_nested": ("TWS-PKL-DANGEROUS",),
    "joblib_load_nested": ("TWS-PKL-DANGEROUS",),
    "pickle_loads_nested": ("TWS-PKL-DANGEROUS",),
    "_pickle_loads_base64": ("TWS-PKL-DANGEROUS",),
    "shutil_copyfile_tamper": ("TWS-PKL-DANGEROUS",),
    "os_mkdir_tamper": ("TWS-PKL-DANGEROUS",),
    "os_open_o_creat": ("TWS-PKL-DANGEROUS",),
    "_io_fileio_write": ("TWS-PKL-DANGEROUS",),
    "builtins_open_write": ("TWS-PKL-DANGEROUS",),
    "socket_unix_bind": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "webbrowser_genericbrowser": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "urllib_urlretrieve": ("TWS-PKL-DANGEROUS",),
    "builtins_eval_compile": ("TWS-PKL-DANGEROUS",),
    "sys_modules_getitem": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "subprocess_popen": ("TWS-PKL-DANGEROUS",),
    "subprocess_check_output": ("TWS-PKL-DANGEROUS",),
    "os_popen": ("TWS-PKL-DANGEROUS",),
    "os_posix_spawnp": ("TWS-PKL-DANGEROUS",),
    "doctest_run_docstring_examples": ("TWS-PKL-DANGEROUS",),
    "venv_create": ("TWS-PKL-DANGEROUS",),
    "mailcap_findmatch": ("TWS-PKL-DANGEROUS",),
    "memo_put_overwrite": ("TWS-PKL-DANGEROUS",),
    "memoize_after_sparse_binput": ("TWS-PKL-DANGEROUS",),
    "proto_switch_midstream_fix_imports": ("TWS-PKL-DANGEROUS",),
    "proto_switch_midstream_dotted_name": ("TWS-PKL-DANGEROUS",),
    "fix_imports_commands_getoutput": ("TWS-PKL-DANGEROUS",),
    "fix_imports_urllib_urlretrieve": ("TWS-PKL-DANGEROUS",),
    "dotted_allowlisted_torch_module_chain": ("TWS-PKL-DANGEROUS",),
    "dup_global_then_call": ("TWS-PKL-DANGEROUS",),
    "next_buffer_after_payload": ("TWS-PKL-DANGEROUS",),
    "torch_rebuild_decoy_then_exec": ("TWS-PKL-DANGEROUS",),
    "payload_inside_state_dict_value": ("TWS-PKL-DANGEROUS",),
    "torch_zip_payload_in_data_pkl": ("TWS-PKL-DANGEROUS",),
    "torch_zip_renamed_pickle_member": ("TWS-PKL-DANGEROUS",),
    "torch_zip_payload_in_non_pkl_member": ("TWS-PKL-DANGEROUS",),
    "torch_zip_different_prefix": ("TWS-PKL-DANGEROUS",),
    "torch_zip_deflated_members": ("TWS-PKL-DANGEROUS",),
    "zip_local_central_name_mismatch": ("TWS-PKL-DANGEROUS",),
    "zip_flag_bits_local_header": ("TWS-PKL-DANGEROUS",),
    "zip_bad_crc": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_sequential": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_magic_header_payload": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_tar": ("TWS-PKL-DANGEROUS", "TWS-TORCH-LEGACY"),
    "torchscript_archive_code": ("TWS-TORCHSCRIPT",),
    "npy_object_dtype_pickle": ("TWS-PKL-DANGEROUS",),
    "npz_object_member": ("TWS-PKL-DANGEROUS",),
    "joblib_plain": ("TWS-PKL-DANGEROUS",),
    "joblib_zlib": ("TWS-PKL-DANGEROUS",),
    "joblib_gzip": ("TWS-PKL-DANGEROUS",),
    "joblib_bz2": ("TWS-PKL-DANGEROUS",),
    "joblib_xz": ("TWS-PKL-DANGEROUS",),
    "joblib_lzma": ("TWS-PKL-DANGEROUS",),
    "nested_zip_in_tar_in_gzip": ("TWS-PKL-DANGEROUS",),
    "gzip_raw_pickle": ("TWS-PKL-DANGEROUS",),
    "plain_zip_pickle": ("TWS-PKL-DANGEROUS",),
    "plain_tar_pickle": ("TWS-PKL-DANGEROUS",),
    "sevenzip_pickle": ("TWS-PKL-DANGEROUS",),
    "keras_lambda_layer": ("TWS-KERAS-001", "TWS-KERAS-002"),
    "keras_config_module_function_reference": ("TWS-KERAS-002",),
    "h5_lambda_config": ("TWS-KERAS-001",),
    "onnx_external_data_path_traversal": ("TWS-ONNX-002",),
    "onnx_custom_operator_domain": ("TWS-ONNX-003",),
    "gguf_chat_template_ssti": ("TWS-TPL-001",),
    "safetensors_overlapping_offsets": ("TWS-ST-008",),
    "safetensors_oversized_header": ("TWS-ST-001",),
    "hf_folder_auto_map_remote_code": ("TWS-HF-001", "TWS-HF-002"),
    "hf_trainer_checkpoint_rng_state": ("TWS-PKL-DANGEROUS",),
    "hf_trainer_checkpoint_optimizer": ("TWS-PKL-DANGEROUS",),
    "hf_trainer_checkpoint_training_args": ("TWS-PKL-DANGEROUS",),
    "torch_whole_module_tampered_reduce": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_safetensors": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_txt": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_json": ("TWS-PKL-DANGEROUS",),
    "disguise_torch_zip_as_bin": ("TWS-PKL-DANGEROUS",),
    "zip_duplicate_member_names": ("TWS-PKL-DANGEROUS", "TWS-ZIP-DUPLICATE"),
    "polyglot_pickle_prefix_then_torch_zip": ("TWS-PKL-DANGEROUS",),
    "npy_v3_header_object": ("TWS-PKL-DANGEROUS",),
    "gzip_multimember_split_pickle": ("TWS-PKL-DANGEROUS",),
    "gguf_named_chat_template_ssti": ("TWS-TPL-001",),
    "gguf_chat_template_obfuscated_attr": ("TWS-TPL-002",),
    "keras_activation_function_reference": ("TWS-KERAS-002",),
    "keras_lambda_nested_in_functional": ("TWS-KERAS-001", "TWS-KERAS-002"),
    "h5_lambda_config_bytes_attr": ("TWS-KERAS-001",),
    "onnx_external_data_absolute_path": ("TWS-ONNX-002",),
    "onnx_external_data_in_if_subgraph": ("TWS-ONNX-002",),
    "safetensors_offsets_out_of_range": ("TWS-ST-007",),
    "hf_folder_tokenizer_auto_map": ("TWS-HF-001", "TWS-HF-002"),
    "memmap_reduce_defining_module": ("TWS-PKL-DANGEROUS",),
    "memmap_reduce_numpy_core_alias": ("TWS-PKL-DANGEROUS",),
    "memmap_reexport_in_numpy_core": ("TWS-PKL-DANGEROUS",),
    "memmap_dotted_name_from_numpy": ("TWS-PKL-DANGEROUS",),
    "memmap_text_global_protocol2": ("TWS-PKL-DANGEROUS",),
    "memmap_stack_global_from_memo": ("TWS-PKL-DANGEROUS",),
    "memmap_newobj": ("TWS-PKL-DANGEROUS",),
    "memmap_newobj_ex_kwargs": ("TWS-PKL-DANGEROUS",),
    "memmap_copyreg_newobj": ("TWS-PKL-DANGEROUS",),
    "memmap_copyreg_newobj_ex": ("TWS-PKL-DANGEROUS",),
    "memmap_inst_opcode": ("TWS-PKL-DANGEROUS",),
    "memmap_obj_opcode": ("TWS-PKL-DANGEROUS",),
    "memmap_setitem_writes_byte": ("TWS-PKL-DANGEROUS",),
    "memmap_in_build_state": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_v2_calls_memmap": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_calls_memmap": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_v2_newobj_chain": ("TWS-PKL-DANGEROUS",),
    "torch_zip_memmap_in_data_pkl": ("TWS-PKL-DANGEROUS",),
    "joblib_memmap_pickle": ("TWS-PKL-DANGEROUS",),
    "npy_object_array_memmap": ("TWS-PKL-DANGEROUS",),
    "torchscript_setstate_from_file": ("TWS-TORCHSCRIPT-OP",),
    "torchscript_helper_from_file": ("TWS-TORCHSCRIPT-OP",),
    "torchscript_submodule_from_file": ("TWS-TORCHSCRIPT-OP",),
}


def sample_names(kind: Kind) -> list[str]:
    """Names of the samples of ``kind``, without building anything (for test parametrisation)."""
    specs: list[Any] = _malicious_specs() if kind == "malicious" else _clean_specs()
    return [s.name for s in specs]


def build_malicious(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the malicious samples under ``dest/malicious`` (canaries go to ``dest/canaries``).

    ``only`` restricts the build to one sample name (or ``"malicious"``/``"clean"`` kinds).
    """
    dest = Path(dest).resolve()
    (dest / "canaries").mkdir(parents=True, exist_ok=True)
    out: list[Sample] = []
    with _quiet():
        for spec in _select(_malicious_specs(), "malicious", only):
            rel = f"malicious/{spec.name}{spec.ext}"
            canary = dest / "canaries" / spec.name
            spec.build(dest / rel, canary)
            out.append(
                Sample(
                    name=spec.name,
                    relpath=rel,
                    kind="malicious",
                    technique=spec.technique,
                    reference=spec.reference,
                    canary=canary if spec.canary else None,
                    expected_rules=spec.expected_rules or _EXPECTED_RULES.get(spec.name),
                    trigger=spec.trigger,
                )
            )
    return out


def build_clean(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the clean files (real library output) under ``dest/clean``."""
    dest = Path(dest).resolve()
    out: list[Sample] = []
    with _quiet():
        for spec in _select(_clean_specs(), "clean", only):
            rel = f"clean/{spec.name}{spec.ext}"
            spec.build(dest / rel)
            out.append(
                Sample(
                    name=spec.name,
                    relpath=rel,
                    kind="clean",
                    technique="clean",
                    reference=spec.reference,
                )
            )
    # Training runs leave scratch folders behind; only the samples belong in the corpus.
    scratch = dest / "clean" / "lightning_root"
    if scratch.exists():
        shutil.rmtree(scratch)
    return out


@dataclass(frozen=True)
class Corpus:
    """A built corpus: its root directory and its samples by name."""

    root: Path
    samples: dict[str, Sample]

    @classmethod
    def build(cls, root: Path) -> Corpus:
        """Build the whole corpus under ``root``."""
        root = Path(root).resolve()
        return cls(root=root, samples={s.name: s for s in build_corpus(root)})

    def path(self, name: str) -> Path:
        return self.samples[name].path(self.root)

    def of_kind(self, kind: Kind) -> list[Sample]:
        return [s for s in self.samples.values() if s.kind == kind]


def build_corpus(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the whole corpus under ``dest`` and return its samples (malicious first).

    ``only`` may be ``"malicious"``, ``"clean"`` or one sample name.
    """
    from trainwarden.drill._samples_containers import build_containers

    return (
        build_malicious(dest, only=only)
        + build_containers(dest, only=only)
        + build_clean(dest, only=only)
    )
