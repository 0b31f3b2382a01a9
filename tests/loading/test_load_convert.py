"""``trainwarden convert --to safetensors``: round trips, aliases, refusal of unsafe files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainwarden
from trainwarden.loading import LoadError
from trainwarden.loading._convert import from_safetensors, sidecar_path, to_safetensors

from ._payloads import SystemPayload

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)


def _checkpoint() -> dict[str, object]:
    torch.manual_seed(0)
    w = torch.randn(4, 3)
    return {
        "model": {"layer.weight": w, "layer.weight_t": w.t(), "tied": w, "row": w[1]},
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 0.1}]},
        "step": 12,
        "name": "run/1",
        "mask": np.array([True, False]),
        "shape": torch.Size([4, 3]),
        "dtype": torch.bfloat16,
        "pair": (1, "a"),
    }


def test_round_trip_restores_tensors_and_metadata(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pt"
    obj = _checkpoint()
    torch.save(obj, src)
    result = to_safetensors(src)
    assert result.output == str(tmp_path / "ckpt.safetensors")
    assert result.aliases == 1  # "tied" is the same view as "layer.weight"
    back = from_safetensors(result.output)
    model = back["model"]
    assert torch.equal(model["layer.weight"], obj["model"]["layer.weight"])  # type: ignore[index]
    assert torch.equal(model["layer.weight_t"], obj["model"]["layer.weight_t"])  # type: ignore[index]
    assert torch.equal(model["row"], obj["model"]["row"])  # type: ignore[index]
    assert model["tied"].data_ptr() == model["layer.weight"].data_ptr()
    assert back["optimizer"]["state"] == {0: {"exp_avg": back["optimizer"]["state"][0]["exp_avg"]}}
    assert back["optimizer"]["param_groups"] == [{"lr": 0.1}]
    assert back["step"] == 12 and back["name"] == "run/1" and back["pair"] == (1, "a")
    assert back["shape"] == torch.Size([4, 3]) and back["dtype"] is torch.bfloat16
    np.testing.assert_array_equal(back["mask"], np.array([True, False]))
    # the safetensors file alone is readable by the stock library, keys flattened with "/"
    tensors = load_file(result.output)
    assert "model/layer.weight" in tensors and "optimizer/state/0/exp_avg" in tensors
    assert tensors["model/layer.weight_t"].is_contiguous()
    side = json.loads(sidecar_path(result.output).read_text())
    assert side["metadata"]["step"] == 12 and side["metadata"]["name"] == "run/1"
    assert side["separator"] == "/"


def test_flat_state_dict_keeps_its_keys(tmp_path: Path) -> None:
    lin = torch.nn.Linear(3, 2)
    torch.save(lin.state_dict(), tmp_path / "sd.bin")
    out = tmp_path / "model.safetensors"
    to_safetensors(tmp_path / "sd.bin", out)
    assert sorted(load_file(str(out))) == ["bias", "weight"]
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(from_safetensors(out))
    assert torch.equal(restored.weight, lin.weight)


def test_unsafe_file_is_refused_and_nothing_written(tmp_path: Path, canary: Path) -> None:
    src = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": SystemPayload(canary)}, src)
    with pytest.raises(trainwarden.UnsafeModelError):
        to_safetensors(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]
    assert not canary.exists()


def test_convert_cli(cli: Cli, tmp_path: Path) -> None:
    torch.save(_checkpoint(), tmp_path / "c.pt")
    r = cli(
        [
            "convert",
            str(tmp_path / "c.pt"),
            "--to",
            "safetensors",
            "-o",
            str(tmp_path / "out.safetensors"),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "out.safetensors" in r.stdout and (tmp_path / "out.safetensors.meta.json").exists()
    back = from_safetensors(tmp_path / "out.safetensors")
    assert back["step"] == 12


def _converted(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    src = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(2), "step": 3, "scale": np.float32(0.5)}, src)
    out = tmp_path / "ckpt.safetensors"
    to_safetensors(src, out)
    side = sidecar_path(out)
    return out, side, json.loads(side.read_text())


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        # A numpy scalar of a void dtype the sidecar sizes: np.void(2e9) would allocate 2 GB.
        (
            lambda s: s["structure"]["$dict"].update(
                scale={"$npscalar": 2_000_000_000, "dtype": "V2000000000"}
            ),
            "holds no plain value",
        ),
        (
            lambda s: s["structure"]["$dict"].update(
                scale={"$npscalar": 1, "dtype": "no such dtype"}
            ),
            "dtype is not one",
        ),
        (lambda s: s["structure"]["$dict"].update(w={"$tensor": "absent"}), "names no tensor"),
        (lambda s: s.update(aliases={"x": "absent"}), "names no tensor"),
        (lambda s: s.update(aliases=[1]), "'aliases' is not an object"),
        (lambda s: s["structure"].update({"$dict": [1, 2]}), "malformed"),
        (lambda s: s.update(structure={"$items": [[[1], 2]]}), "malformed"),
        (lambda s: s.update(structure={"$size": ["a"]}), "malformed"),
        (lambda s: s.update(structure={"$device": "quantum:9"}), "malformed"),
        (lambda s: s.update(structure={"$bytes": "not base64!"}), "malformed"),
        (lambda s: s.update(structure={"$what": 1}), "unknown node"),
    ],
)
def test_a_hostile_sidecar_is_a_load_error_naming_it(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], says: str
) -> None:
    out, side, doc = _converted(tmp_path)
    edit(doc)
    side.write_text(json.dumps(doc))
    with pytest.raises(LoadError, match=says) as got:
        from_safetensors(out)
    assert str(side) in str(got.value)


def test_a_sidecar_that_is_a_fifo_deeply_nested_or_huge_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    out, side, doc = _converted(tmp_path)
    side.write_text('{"format": "x", "s": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(LoadError, match="cannot read the sidecar"):
        from_safetensors(out)
    side.unlink()
    os.mkfifo(side)  # nobody ever writes it: a plain open would wait for ever
    with pytest.raises(LoadError, match="cannot read the sidecar"):
        from_safetensors(out)
    side.unlink()
    with open(side, "wb") as fh:
        fh.truncate(8 << 30)  # sparse: 8 GiB that cost nothing on disk
    with pytest.raises(LoadError, match="limit"):
        from_safetensors(out)
    side.unlink()
    side.write_text(json.dumps(doc))
    got = from_safetensors(out)
    assert got["step"] == 3 and float(got["scale"]) == 0.5
