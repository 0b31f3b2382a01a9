"""Prove the malicious corpus is live: load each sample with the real loader it targets.

Runs every sample that has a ``trigger`` in its own subprocess, inside a throw-away temporary
corpus, with the loader a victim would use (``pickle.loads``, ``torch.load(weights_only=False)``,
``numpy.load(allow_pickle=True)``, ``joblib.load``, a Jinja render, an import of remote code) and
reports whether the sample's canary file appeared. Payloads are benign (they only create the
canary), but this script does execute them: never point it at files you did not generate.

    python bench/corpus_liveness.py            # table of live / not live per sample
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from trainwarden.drill import Sample, build_malicious

LOADER = r"""
import sys, pickle, io, zipfile, copyreg
path, trigger = sys.argv[1], sys.argv[2]
kind, _, arg = trigger.partition(":")
def stream(data):
    f = io.BytesIO(data)
    while f.tell() < len(data):
        pickle.load(f)
if kind == "pickle":
    pickle.loads(open(path, "rb").read())
elif kind == "pickle_stdin_continue":
    pickle.loads(open(path, "rb").read())
elif kind == "pickle_ext":
    copyreg.add_extension("builtins", "exec", int(arg))
    pickle.loads(open(path, "rb").read())
elif kind == "pickle_stream":
    stream(open(path, "rb").read())
elif kind == "torch":
    import torch
    torch.load(path, weights_only=False)
elif kind == "torch_jit":
    import torch
    torch.jit.load(path)
elif kind == "torch_file":
    import torch
    torch.load(path + "/" + arg, weights_only=False)
elif kind == "zip_member":
    z = zipfile.ZipFile(path)
    name = next(n for n in z.namelist() if n.endswith("/" + arg))
    pickle.loads(z.read(name))
elif kind == "numpy":
    import numpy
    numpy.load(path, allow_pickle=True)
elif kind == "numpy_npz":
    import numpy
    z = numpy.load(path, allow_pickle=True)
    [z[k] for k in z.files]
elif kind == "joblib":
    import joblib
    joblib.load(path)
elif kind == "jinja":
    import jinja2, struct
    data = open(path, "rb").read()
    key = (arg or "tokenizer.chat_template").encode()
    marker = struct.pack("<Q", len(key)) + key
    i = data.index(marker) + len(marker)
    (n,) = struct.unpack_from("<Q", data, i + 4)
    template = data[i + 12 : i + 12 + n].decode()
    # llama-cpp-python < 0.2.72 rendered GGUF templates in a plain (unsandboxed) Environment.
    jinja2.Environment().from_string(template).render(messages=[])
elif kind == "gzip_pickle":
    import gzip
    pickle.loads(gzip.decompress(open(path, "rb").read()))
elif kind == "python_file":
    import runpy
    runpy.run_path(path + "/" + arg)
else:
    raise SystemExit("unknown trigger " + trigger)
"""


def check(sample_name: str) -> tuple[str, str, bool, str]:
    with tempfile.TemporaryDirectory(prefix="tw-live-") as tmp:
        dest = Path(tmp)
        (sample,) = build_malicious(dest, only=sample_name)
        assert sample.trigger is not None and sample.canary is not None
        try:
            proc = subprocess.run(
                [sys.executable, "-c", LOADER, str(sample.path(dest)), sample.trigger],
                input=b"c\n",
                capture_output=True,
                timeout=300,
                cwd=tmp,
                check=False,
            )
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            note = f"rc={proc.returncode} {err[0][:90]}"
        except subprocess.TimeoutExpired:
            note = "timeout"
        # Some payloads spawn a child (touch) that may finish just after the loader.
        for _ in range(20):
            if sample.canary.exists():
                break
            import time

            time.sleep(0.05)
        return sample.name, sample.trigger, sample.canary.exists(), note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="sample names (default: all with a trigger)")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        samples: list[Sample] = build_malicious(Path(tmp))
    names = ns.names or [s.name for s in samples if s.trigger and s.canary]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        results = list(ex.map(check, names))
    # Printed only at the end: payloads that drive a pty (pty.spawn) may scribble on a shared tty.
    dead = [r for r in results if not r[2]]
    for name, trigger, live, note in results:
        print(f"{'LIVE' if live else 'DEAD'}  {name:45s} {trigger:28s} {'' if live else note}")
    print(f"{len(names) - len(dead)}/{len(names)} samples fired their canary under the real loader")
    print("dead: " + (" ".join(r[0] for r in dead) or "none"), flush=True)
    return 0 if not dead else 1


if __name__ == "__main__":
    raise SystemExit(main())
