"""The scanner's corpus through the loader: clean files load like their libraries' loaders,
every malicious sample is refused by ``trainwarden.load`` and by the guard, no canary fires."""

from __future__ import annotations

import copyreg
import gzip
import io
import math
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

import trainwarden
from trainwarden.drill import Sample, build_clean, build_malicious, canaries_fired
from trainwarden.errors import TrainWardenError
from trainwarden.loading._guard import Guard
from trainwarden.loading._loader import detect_format
from trainwarden.rules import catalogue

# Clean samples in formats trainwarden.load reads (the HF Trainer and Lightning checkpoints are
# exercised through their real callers in test_load_hf_trainer.py / test_load_lightning.py).
CLEAN = (
    "torch_state_dict_float32",
    "torch_state_dict_bf16_fp16",
    "torch_quantized_tensors",
    "torch_sparse_coo_csr",
    "torch_complex_tensors",
    "torch_misc_types",
    "torch_optimizer_scheduler",
    "torch_legacy_format_state_dict",
    "torch_plain_tensor",
    "numpy_objects",
    "numpy_randomstate",
    "numpy_datetime64",
    "python_random_state",
    "torch_numpy_python_rng",
    *(f"python_stdlib_objects_protocol_{n}" for n in range(6)),
    "sklearn_logistic_regression",
    "sklearn_random_forest",
    "sklearn_pipeline_scaler",
    "sklearn_pipeline_compressed",
    "numpy_npy",
    "numpy_npz_compressed",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Sample]]]:
    dest = tmp_path_factory.mktemp("corpus")
    samples = build_malicious(dest)
    for name in CLEAN:
        samples += build_clean(dest, only=name)
    yield dest, samples
    assert canaries_fired(dest) == []


def _reference(path: Path) -> Any:
    fmt = detect_format(path.read_bytes())
    if fmt.startswith("torch"):
        return torch.load(path, weights_only=False)
    if fmt == "npy":
        return np.load(path, allow_pickle=True)
    if fmt == "npz":
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    if fmt == "joblib":
        return joblib.load(path)
    with path.open("rb") as fh:
        return pickle.load(fh)


def _same(a: Any, b: Any, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.layout, a.is_quantized) == (
            b.dtype,
            b.shape,
            b.layout,
            b.is_quantized,
        ), where
        if a.is_quantized:
            assert torch.equal(a.int_repr(), b.int_repr()), where
        elif a.layout != torch.strided:
            assert torch.equal(a.to_dense(), b.to_dense()), where
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype == object:
            for i, (x, y) in enumerate(zip(a.ravel(), b.ravel(), strict=True)):
                _same(x, y, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, where
    elif isinstance(a, torch.nn.Module):
        _same(a.state_dict(), b.state_dict(), where)
    elif isinstance(a, np.random.RandomState):
        _same(a.get_state(), b.get_state(), where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _same(vars(a), vars(b), where)
    elif type(a).__module__ != "builtins" and type(a).__eq__ is vars(object)["__eq__"]:
        _same(a.__getstate__(), b.__getstate__(), where)  # extension types (sklearn's Tree)
    else:
        assert a == b, where


# torch's own rebuild of quantized tensors touches TypedStorage, which warns once per process.
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_clean_corpus_loads_like_the_libraries(corpus: tuple[Path, list[Sample]]) -> None:
    dest, samples = corpus
    clean = [s for s in samples if s.kind == "clean"]
    assert len(clean) == len(CLEAN)
    for sample in clean:
        path = sample.path(dest)
        _same(trainwarden.load(path), _reference(path), sample.name)


def _malicious_files(dest: Path, samples: list[Sample]) -> Iterator[tuple[Sample, Path]]:
    for s in samples:
        if s.kind != "malicious":
            continue
        path = s.path(dest)
        if path.is_file():
            yield s, path
        elif s.trigger and s.trigger.startswith("torch_file:"):
            yield s, path / s.trigger.partition(":")[2]  # the poisoned member of the folder


# Samples in containers trainwarden.load does not read (Keras zips, plain zips, tar archives): a
# LoadError saying so is the right answer for them, and for them only.
NOT_LOADABLE = {
    "plain_zip_pickle": "neither a PyTorch checkpoint nor a numpy .npz",
    "keras_lambda_layer": "neither a PyTorch checkpoint nor a numpy .npz",
    "keras_config_module_function_reference": "neither a PyTorch checkpoint nor a numpy .npz",
    "keras_activation_function_reference": "neither a PyTorch checkpoint nor a numpy .npz",
    "keras_lambda_nested_in_functional": "neither a PyTorch checkpoint nor a numpy .npz",
    "nested_zip_in_tar_in_gzip": "could not be loaded",
    "h5_lambda_config": "not a format trainwarden.load reads",
    "h5_lambda_config_bytes_attr": "not a format trainwarden.load reads",
    "gguf_chat_template_ssti": "not a format trainwarden.load reads",
    "gguf_named_chat_template_ssti": "not a format trainwarden.load reads",
    "gguf_chat_template_obfuscated_attr": "not a format trainwarden.load reads",
    "safetensors_overlapping_offsets": "not a valid safetensors file",
    "safetensors_oversized_header": "not a valid safetensors file",
    "safetensors_offsets_out_of_range": "not a valid safetensors file",
}


def test_every_malicious_sample_is_refused_by_load(corpus: tuple[Path, list[Sample]]) -> None:
    """A refusal is UnsafeModelError; "cannot parse" (LoadError) is not a detection."""
    dest, samples = corpus
    not_refused: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    reported: set[str] = set()
    for sample, path in _malicious_files(dest, samples):
        try:
            trainwarden.load(path)
        except trainwarden.UnsafeModelError as e:
            reported |= {f.rule_id for f in e.findings}
            continue
        except TrainWardenError as e:
            why = NOT_LOADABLE.get(sample.name)
            if why is not None and why in str(e):
                unreadable[sample.name] = why
                continue
            not_refused[sample.name] = f"{type(e).__name__}: {e}"
        else:
            not_refused[sample.name] = "loaded"
    assert not_refused == {}
    assert unreadable == NOT_LOADABLE
    # Every rule id a refusal reports is one the rule catalogue declares.
    assert reported and sorted(reported - set(catalogue())) == []
    assert canaries_fired(dest) == []


def _trigger(sample: Sample, path: Path) -> Callable[[], Any]:
    kind, _, arg = (sample.trigger or "").partition(":")

    def stream() -> None:
        data = path.read_bytes()
        f = io.BytesIO(data)
        while f.tell() < len(data):
            pickle.load(f)

    def ext() -> Any:
        copyreg.add_extension("builtins", "exec", int(arg))
        try:
            return pickle.loads(path.read_bytes())
        finally:
            copyreg.remove_extension("builtins", "exec", int(arg))

    def zip_member() -> Any:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("/" + arg))
            return pickle.loads(z.read(name))

    def npz() -> Any:
        with np.load(path, allow_pickle=True) as z:
            return [z[k] for k in z.files]

    return {
        "pickle": lambda: pickle.loads(path.read_bytes()),
        "pickle_stdin_continue": lambda: pickle.loads(path.read_bytes()),
        "pickle_ext": ext,
        "pickle_stream": stream,
        "torch": lambda: torch.load(path, weights_only=False),
        "torch_jit": lambda: torch.jit.load(path),  # type: ignore[no-untyped-call]
        "torch_file": lambda: torch.load(path / arg, weights_only=False),
        "zip_member": zip_member,
        "numpy": lambda: np.load(path, allow_pickle=True),
        "numpy_npz": npz,
        "joblib": lambda: joblib.load(path),
        "gzip_pickle": lambda: pickle.loads(gzip.decompress(path.read_bytes())),
    }[kind]


def test_guard_stops_every_live_sample_through_its_real_loader(
    corpus: tuple[Path, list[Sample]], guard: Callable[..., Guard]
) -> None:
    dest, samples = corpus
    live = [
        s
        for s in samples
        if s.kind == "malicious"
        and s.trigger is not None
        and not s.trigger.startswith(("jinja", "python_file"))
    ]
    assert len(live) > 100
    guard(mode="block")
    not_stopped = []
    for sample in live:
        try:
            _trigger(sample, sample.path(dest))()
        except trainwarden.UnsafeModelError:
            continue
        except Exception as e:  # any other outcome is reported below
            not_stopped.append(f"{sample.name}: {type(e).__name__}: {e}")
        else:
            not_stopped.append(f"{sample.name}: loaded")
        assert canaries_fired(dest) == [], sample.name
    assert not_stopped == []
