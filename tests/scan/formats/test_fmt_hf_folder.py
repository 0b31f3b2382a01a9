"""Hugging Face folder hook: a save_pretrained folder is clean; remote-code references are found."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats.hf_folder import folder_findings

from .chat_templates import CLEAN, MALICIOUS


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real folder written by transformers' save_pretrained (tiny random GPT-2 + tokenizer)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=16)
    GPT2LMHeadModel(config).save_pretrained(out)
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "hello", "world"])}
    special = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)  # type: ignore[no-untyped-call]
    fast.chat_template = CLEAN["chatml-qwen"]
    fast.save_pretrained(out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **updates: object) -> None:
    obj = json.loads(path.read_text())
    obj.update(updates)
    path.write_text(json.dumps(obj))


def _rules(findings: dict[Path, list[Finding]]) -> set[str]:
    return {f.rule_id for fs in findings.values() for f in fs}


def test_save_pretrained_folder_is_clean(hf_model_dir: Path) -> None:
    names = {p.name for p in hf_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert folder_findings(hf_model_dir) == {}


def test_not_a_model_folder_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "settings.json").write_text("{}")
    assert folder_findings(tmp_path) == {}


def test_auto_map_remote_code_and_py_files(
    hf_model_dir: Path, tmp_path: Path, canary: Path
) -> None:
    d = _copy(hf_model_dir, tmp_path / "evil")
    _edit_json(
        d / "config.json",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
        },
    )
    payload = f"import pathlib\npathlib.Path({str(canary)!r}).touch()\n"
    (d / "modeling_evil.py").write_text(payload)
    (d / "configuration_evil.py").write_text("class EvilConfig: ...\n")
    (d / "helpers.py").write_text("X = 1\n")
    found = folder_findings(d)
    cfg = found[d / "config.json"]
    assert {f.rule_id for f in cfg} == {"TWS-HF-001"}
    assert {f.evidence["reference"] for f in cfg} == {
        "configuration_evil.EvilConfig",
        "modeling_evil.EvilModel",
    }
    assert all(f.severity == Severity.HIGH for f in cfg)
    assert [f.severity for f in found[d / "modeling_evil.py"]] == [Severity.HIGH]
    assert [f.severity for f in found[d / "helpers.py"]] == [Severity.MEDIUM]
    assert {f.rule_id for f in found[d / "helpers.py"]} == {"TWS-HF-002"}


def test_auto_map_into_another_repository(hf_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(hf_model_dir, tmp_path / "other")
    _edit_json(
        d / "tokenizer_config.json",
        auto_map={"AutoTokenizer": ["attacker/repo--tokenization_x.XTokenizer", None]},
    )
    found = folder_findings(d)[d / "tokenizer_config.json"]
    assert [f.evidence["repository"] for f in found] == ["attacker/repo"]


def test_custom_pipeline_and_trust_remote_code_flag(hf_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(hf_model_dir, tmp_path / "pipe")
    _edit_json(
        d / "config.json",
        custom_pipelines={"text-classification": {"impl": "pipe_evil.EvilPipeline"}},
        trust_remote_code=True,
    )
    assert {"TWS-HF-003", "TWS-HF-004"} <= _rules(folder_findings(d))


def test_ssti_chat_template_in_tokenizer_config(
    hf_model_dir: Path, tmp_path: Path, canary: Path
) -> None:
    d = _copy(hf_model_dir, tmp_path / "tpl")
    bad = MALICIOUS["cycler-init-globals"][0].replace("CANARY", str(canary))
    for jinja_file in d.glob("*.jinja"):
        jinja_file.unlink()
    _edit_json(d / "tokenizer_config.json", chat_template=bad)
    assert "TWS-TPL-001" in _rules(folder_findings(d))


def test_ssti_chat_template_file(hf_model_dir: Path, tmp_path: Path, canary: Path) -> None:
    d = _copy(hf_model_dir, tmp_path / "tplfile")
    bad = MALICIOUS["attr-filter-underscore-arithmetic"][0]
    (d / "chat_template.jinja").write_text(bad)
    found = folder_findings(d)
    assert {f.rule_id for f in found[d / "chat_template.jinja"]} == {"TWS-TPL-002"}


def test_sentence_transformers_custom_module_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {"idx": 1, "name": "1", "path": "1_X", "type": "evil_pkg.Module"},
            ]
        )
    )
    found = folder_findings(tmp_path)[tmp_path / "modules.json"]
    assert [f.evidence["reference"] for f in found] == ["evil_pkg.Module"]


def test_unparseable_config_is_reported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    found = folder_findings(tmp_path)
    assert {f.rule_id for f in found[tmp_path / "config.json"]} == {"TWS-HF-005"}


def test_processor_chat_template_json(tmp_path: Path, canary: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    bad = MALICIOUS["joiner-init-globals"][0].replace("CANARY", str(canary))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": bad}))
    found = folder_findings(tmp_path)
    assert {f.rule_id for f in found[tmp_path / "chat_template.json"]} == {"TWS-TPL-001"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["auto_map", "chat_template", "custom_pipelines", "auto_mapping", "x"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@settings(max_examples=80, deadline=None)
@given(config=_json, tok=_json, modules=_json)
def test_arbitrary_config_contents_never_raise(
    config: object, tok: object, modules: object
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "config.json").write_text(json.dumps(config))
        (d / "tokenizer_config.json").write_text(json.dumps(tok))
        (d / "modules.json").write_text(json.dumps(modules))
        for path, findings in folder_findings(d).items():
            assert path.parent == d
            assert all(f.rule_id.startswith(("TWS-HF-", "TWS-TPL-")) for f in findings)


def test_custom_generate_and_subpackage_code(tmp_path: Path, canary: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "x", "auto_map": {"AutoModel": "impl.modeling_x.XModel"}})
    )
    (tmp_path / "impl").mkdir()
    (tmp_path / "impl" / "modeling_x.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    (tmp_path / "custom_generate").mkdir()
    (tmp_path / "custom_generate" / "generate.py").write_text("def generate(model): ...\n")
    found = folder_findings(tmp_path)
    for rel in ("impl/modeling_x.py", "custom_generate/generate.py"):
        assert [(f.rule_id, f.severity) for f in found[tmp_path / rel]] == [
            ("TWS-HF-002", Severity.HIGH)
        ], rel
