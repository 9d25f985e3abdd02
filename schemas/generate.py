"""Regenerate the Python code of every .proto under schemas/: `python -m kes.schemas.generate`.

Runs grpc_tools.protoc from the repository root with `-I .`, so `schemas/kes/v1/envelopes.proto`
is generated as `schemas/kes/v1/envelopes_pb2.py`; its module names are then put under the
installed namespace (`schemas.` becomes `kes.schemas.` in the generated imports and module names),
so it imports as `kes.schemas.kes.v1.envelopes_pb2`. Stubs come from mypy-protobuf
(`--mypy_out`). With `--check`, generates into a temporary directory and compares with the
committed files instead of writing; exits 1 and names each file that differs.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "SCHEMAS", "check", "generate", "main", "proto_files"]

SCHEMAS = Path(__file__).resolve().parent
"""The schemas/ package directory."""
ROOT = SCHEMAS.parent
"""The repository root: the protoc include path, so generated imports start with `schemas.`."""

_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")


def proto_files() -> list[Path]:
    """Every .proto under schemas/, relative to the repository root, in a stable order."""
    return sorted(p.relative_to(ROOT) for p in SCHEMAS.rglob("*.proto"))


def _mypy_plugin() -> str:
    """Path of mypy-protobuf's protoc plugin, preferring the one next to this interpreter."""
    found = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent)) or shutil.which(
        "protoc-gen-mypy"
    )
    if found is None:
        raise SystemExit("protoc-gen-mypy not found: install the dev extras (mypy-protobuf)")
    return found


def generate(out_dir: Path) -> None:
    """Run protoc over every .proto, writing `_pb2.py` and `_pb2.pyi` files under `out_dir`."""
    protos = proto_files()
    if not protos:
        raise SystemExit(f"no .proto files under {SCHEMAS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        *(str(p) for p in protos),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stderr}")
    for path in _generated(out_dir):
        _into_namespace(out_dir / path)


_MODULE = re.compile(r"(?<![\w./])schemas\.(?=\w)")
"""A generated module name that starts with `schemas.` (imports, the builder's module name)."""


def _into_namespace(path: Path) -> None:
    """Rewrite a generated file's module names from `schemas.` to the installed `kes.schemas.`."""
    text = path.read_text()
    new = _MODULE.sub("kes.schemas.", text)
    if new != text:
        path.write_text(new)


def _generated(base: Path) -> set[Path]:
    """Generated files under `base`/schemas, relative to `base`."""
    root = base / SCHEMAS.name
    if not root.exists():
        return set()
    return {
        p.relative_to(base)
        for p in root.rglob("*")
        if p.is_file() and p.name.endswith(_GENERATED_SUFFIXES)
    }


def check() -> list[str]:
    """Generate into a temporary directory; list the committed files that differ (empty: none)."""
    with tempfile.TemporaryDirectory(prefix="kes-schemas-") as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh = _generated(fresh_root)
        committed = _generated(ROOT)
        problems = [f"{p}: missing (not generated yet)" for p in sorted(fresh - committed)]
        problems += [f"{p}: stale (no .proto generates it)" for p in sorted(committed - fresh)]
        problems += [
            f"{p}: differs from its .proto"
            for p in sorted(fresh & committed)
            if not filecmp.cmp(fresh_root / p, ROOT / p, shallow=False)
        ]
        return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m kes.schemas.generate", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed code, write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("regenerate with: python -m kes.schemas.generate", file=sys.stderr)
            return 1
        print(f"generated code is up to date ({len(proto_files())} .proto files)")
        return 0
    generate(ROOT)
    print(f"generated {len(proto_files())} .proto files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
