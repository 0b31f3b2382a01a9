"""``trainwarden convert --to safetensors``: round trips, aliases, refusal of unsafe files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainwarden
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
