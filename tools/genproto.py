"""Generates the Python code for proto/dr/v1 into dr_common/proto.

Used by `make proto` and by tests/test_proto_fresh.py, which regenerates into a
temporary directory and fails when the committed code is stale.

protoc emits `from dr.v1 import x_pb2`, which only works with the output directory on
sys.path; we rewrite those imports to the package path so that nothing touches sys.path.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "dr_common.proto"
_IMPORT = re.compile(r"^from dr\.v1 import ", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.glob("dr/v1/*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted((out_dir / "dr" / "v1").glob("*.py*")):
        text = _IMPORT.sub(f"from {PACKAGE}.dr.v1 import ", path.read_text())
        path.write_text(text)
        written.append(path)
    for pkg in (out_dir, out_dir / "dr", out_dir / "dr" / "v1"):
        (pkg / "__init__.py").touch()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", default=str(ROOT / "dr_common" / "proto"))
    out = pathlib.Path(parser.parse_args().out_dir)
    for path in generate(out):
        print(path.relative_to(out) if path.is_relative_to(out) else path, file=sys.stderr)


if __name__ == "__main__":
    main()
