"""Stable rule ids of the static scanner, registered in the catalogue (:mod:`trainwarden.rules`)."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import Rule, register

__all__ = ["RULES", "Rule"]

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWS-ARCHIVE-MALFORMED",
            Severity.HIGH,
            "a tar or 7z archive cannot be read; its content was not inspected",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-CANNOT-INSPECT",
            Severity.HIGH,
            "the content uses a format whose decoder is not installed (lz4, 7z); it was not "
            "inspected (fail closed)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-COMPRESSED-CORRUPT",
            Severity.HIGH,
            "a compressed stream is corrupt or truncated; what decompressed before the damage was"
            " still scanned",
            threats=("T1", "T7"),
            guide="scan.md",
            severity_note="HIGH (MEDIUM for trailing data)",
        ),
        Rule(
            "TWS-GGUF-001",
            Severity.HIGH,
            "malformed GGUF header, metadata or tensor table (counts, lengths, offsets or dims "
            "out of bounds; fail closed)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-GGUF-002",
            Severity.MEDIUM,
            "a tokenizer.chat_template key holds a non-string value",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-GGUF-003",
            Severity.HIGH,
            "a special token (bos/eos/...) handed to chat templates is a Python dunder attribute "
            "name or only underscores",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-H5-001",
            Severity.MEDIUM,
            "h5py cannot open the HDF5 file; its Keras config was recovered from raw bytes",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-H5-002",
            Severity.HIGH,
            "an HDF5 Keras config attribute exists but cannot be inspected (fail closed)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-H5-003",
            Severity.HIGH,
            "the HDF5 library crashed or hung on the file (memory-corruption vector)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-HF-001",
            Severity.HIGH,
            "auto_map / modules.json / PEFT auto_mapping names remote code that from_pretrained "
            "imports (trust_remote_code)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-HF-002",
            Severity.HIGH,
            "a .py file in a model folder (HIGH when an auto_map entry loads it)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
            severity_note="HIGH / MEDIUM",
        ),
        Rule(
            "TWS-HF-003",
            Severity.HIGH,
            "config.json declares a custom pipeline implementation",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-HF-004",
            Severity.MEDIUM,
            "a config sets trust_remote_code=true",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-HF-005",
            Severity.HIGH,
            "a model-folder config cannot be parsed (over the size limit, too deeply nested, not "
            "JSON), so its remote-code settings are unknown (HIGH: fail closed)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-INTERNAL",
            Severity.HIGH,
            "a format handler failed on this input; it is reported instead of trusted",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-KERAS-001",
            Severity.CRITICAL,
            "a Lambda layer carries serialised Python bytecode that runs on load",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-KERAS-002",
            Severity.CRITICAL,
            "the config references a module/class/function outside Keras, imported on load "
            "(CRITICAL when the policy calls it dangerous, HIGH when unknown)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
            severity_note="CRITICAL / HIGH",
        ),
        Rule(
            "TWS-KERAS-003",
            Severity.CRITICAL,
            "the config references a Keras built-in that defeats safe_mode or reaches outside the"
            " model (get_file, enable_unsafe_deserialization, TFSMLayer, ...)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-KERAS-004",
            Severity.MEDIUM,
            "the config needs a custom registered object (code from outside the model)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-KERAS-005",
            Severity.HIGH,
            "a lookup/vectorization layer reads its vocabulary from a file path",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-KERAS-006",
            Severity.HIGH,
            "the Keras archive or config cannot be read or parsed (fail closed)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-LIMIT",
            Severity.HIGH,
            "a container limit was exceeded (archive depth, member count, decompressed bytes, "
            "time per file); the rest was not inspected",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-NPY-MALFORMED",
            Severity.HIGH,
            "the .npy header cannot be parsed the way numpy parses it",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-NPY-OBJECT",
            Severity.MEDIUM,
            "object array: numpy.load(allow_pickle=True) unpickles its payload (the pickle itself"
            " is analysed too)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ONNX-001",
            Severity.HIGH,
            "the ONNX model is not well-formed protobuf (or nests graphs too deeply)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ONNX-002",
            Severity.CRITICAL,
            "a tensor's external-data location is absolute, climbs out with '..' or is a URL: "
            "loading the model reads an arbitrary file",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ONNX-003",
            Severity.HIGH,
            "an operator from a custom domain: running the model needs a custom-op library "
            "(native code from outside the model)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ONNX-004",
            Severity.HIGH,
            "a PyOp/PythonOp operator, which imports and calls Python code",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ONNX-005",
            Severity.MEDIUM,
            "a tensor marked EXTERNAL names no location",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-PKL-BUILD-UNSAFE",
            Severity.HIGH,
            "BUILD on an object of a non-allowlisted class: its __setstate__ runs",
            threats=("T1", "T7"),
            guide="scan.md",
            severity_note="as the class",
        ),
        Rule(
            "TWS-PKL-CALL-COMPUTED",
            Severity.HIGH,
            "calls a value that is not an imported global (the result of another call), which "
            "hides what is really called",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-CALL-UNSAFE",
            Severity.HIGH,
            "calls, allocates or BUILDs an allowlisted global in a way the safe loader's closed "
            "constructor set does not allow (safe to name is not safe to call)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-DANGEROUS",
            Severity.CRITICAL,
            "imports a global that can execute code, touch processes, files or the network, "
            "resolve arbitrary attributes or load nested pickles",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-DUNDER-STATE",
            Severity.HIGH,
            "BUILD state that sets special (dunder) attributes such as __setstate__ or __class__",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-EXT",
            Severity.HIGH,
            "extension-registry opcode (EXT1/EXT2/EXT4)",
            threats=("T1", "T7"),
            guide="scan.md",
            severity_note="HIGH (unregistered) / MEDIUM",
        ),
        Rule(
            "TWS-PKL-FRAME",
            Severity.MEDIUM,
            "a FRAME whose declared length disagrees with the opcodes it holds",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-LIMIT",
            Severity.HIGH,
            "a resource limit was exceeded; the rest of the stream was not analysed",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-MALFORMED",
            Severity.HIGH,
            "the unpickler would fail part-way, after running everything before it",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-MEMO-UNDEFINED",
            Severity.HIGH,
            "memo GET of a key that was never PUT",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-MUTATE-GLOBAL",
            Severity.HIGH,
            "BUILD/SETITEM/APPEND applied to an imported class, function or module itself, which "
            "monkeypatches code-level state",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-PROTOCOL",
            Severity.MEDIUM,
            "PROTO opcode in the middle of a pickle or an unsupported protocol",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-TENSOR-BOUNDS",
            Severity.HIGH,
            "a torch tensor rebuild whose size/stride/offset reach outside its storage (out-of-"
            "bounds memory access), or are not plain integers so that its bounds cannot be "
            "checked",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-TENSOR-MUTATION",
            Severity.HIGH,
            "item assignment or append into a tensor/array while loading (weights_only bypass "
            "pattern)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-TRAILING",
            Severity.MEDIUM,
            "unparseable data after the last pickle",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-TRUNCATED",
            Severity.HIGH,
            "the stream ends before STOP",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-PKL-UNKNOWN",
            Severity.HIGH,
            "imports a global that is not on the allowlist (default deny)",
            threats=("T1", "T7"),
            guide="scan.md",
            severity_note="HIGH (policy)",
        ),
        Rule(
            "TWS-ST-001",
            Severity.HIGH,
            "safetensors header length exceeds the file size or the 100 MB cap",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-002",
            Severity.HIGH,
            "safetensors header is not a valid UTF-8 JSON object",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-003",
            Severity.HIGH,
            "safetensors header repeats a JSON key (parsers disagree on which entry wins)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-004",
            Severity.MEDIUM,
            "__metadata__ is not a string-to-string map",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-005",
            Severity.HIGH,
            "a tensor entry is malformed (unknown dtype, bad shape or data_offsets)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-006",
            Severity.HIGH,
            "a tensor's shape x dtype size differs from its data_offsets span",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-007",
            Severity.HIGH,
            "a tensor's data_offsets fall outside the data buffer",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-008",
            Severity.HIGH,
            "two tensors overlap in the data buffer",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-009",
            Severity.MEDIUM,
            "bytes between tensors belong to no tensor (hidden data)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-ST-010",
            Severity.MEDIUM,
            "bytes after the last tensor belong to no tensor (trailing data)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-TORCH-LEGACY",
            Severity.MEDIUM,
            "a legacy torch checkpoint whose structure does not match what torch.load reads; the "
            "remainder was not inspected",
            threats=("T1", "T7"),
            guide="scan.md",
            severity_note="MEDIUM/HIGH",
        ),
        Rule(
            "TWS-TORCHSCRIPT",
            Severity.LOW,
            "TorchScript archive whose code calls only allowlisted, side-effect-free operators "
            "(LOW: torch.jit.load still compiles and runs it)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-TORCHSCRIPT-OP",
            Severity.HIGH,
            "TorchScript code calls an operator or function outside the allowlist of side-effect-"
            "free operators (for example torch.from_file, torch.save, print), or could not be "
            "analysed",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-TPL-001",
            Severity.CRITICAL,
            "a Jinja chat template reaches Python internals (dunder attributes, Jinja globals "
            "leading to os/builtins, os/popen/eval names): SSTI, code execution when rendered "
            "outside a sandbox (CVE-2024-34359)",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-TPL-002",
            Severity.HIGH,
            "a chat template builds names dynamically (underscore fragments, computed "
            "attr()/subscript keys, %c formatting, character extraction) to hide an SSTI",
            threats=("T1", "T7"),
            guide="scan-formats.md",
            severity_note="HIGH / CRITICAL",
        ),
        Rule(
            "TWS-TPL-003",
            Severity.HIGH,
            "a chat template includes/imports/extends another template",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-TPL-004",
            Severity.HIGH,
            "a chat template cannot be tokenized, so it cannot be vouched for",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-UNSCANNED",
            Severity.HIGH,
            "an entry of a scanned directory could not be scanned: a FIFO, socket or device (a "
            "loader that opens it reads whatever a writer serves then, or waits for ever), a "
            "dangling or looping symbolic link (its target can appear later), a directory behind "
            "a symbolic link (not followed) or one that cannot be listed (fail closed)",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-CRC",
            Severity.MEDIUM,
            "a member's CRC-32 does not match its data: some readers refuse the member (so peer "
            "scanners skip it) while others load it",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-MEMBER-KIND",
            Severity.HIGH,
            "a member the victim's reader unpickles by its name (torch.load's data.pkl, "
            "torch.jit.load's constants.pkl) does not read as a plain pickle by its content: it is "
            "analysed as the pickle that reader runs, and by its content for the other readers",
            threats=("T1", "T7"),
            guide="scan-formats.md",
        ),
        Rule(
            "TWS-PKL-POLYGLOT",
            Severity.HIGH,
            "content another format claims (a tar archive, whose header opens with a freely "
            "chosen member name) is also a pickle that imports globals: pickle.load runs it",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-DIFFERENTIAL",
            Severity.HIGH,
            "PyTorch's reader (miniz) or Python's zipfile sees members that TrainWarden's reading"
            " of the archive does not (different directory, offsets or names); every reader's "
            "members are scanned",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-DUPLICATE",
            Severity.HIGH,
            "two members share a name (case-insensitively): readers pick different ones",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-MALFORMED",
            Severity.HIGH,
            "the ZIP structure cannot be read; its content was not inspected",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-MISMATCH",
            Severity.MEDIUM,
            "local header and central directory disagree (name, flags, method), or data precedes "
            "the archive: tools that read different headers see different members",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
        Rule(
            "TWS-ZIP-UNREADABLE",
            Severity.HIGH,
            "a member is encrypted or uses an unsupported compression: not inspected",
            threats=("T1", "T7"),
            guide="scan.md",
        ),
    ]
)
