"""Generates dice_client's gRPC stubs from proto/api.proto with grpcio-tools.

    python generate_stubs.py [--proto PATH]

setup.py runs this on every build and install (editable ones included), so
the generated modules never need to be committed or edited. They go to
dice_client/_proto/ (git-ignored): api_pb2.py, api_pb2.pyi and
api_pb2_grpc.py.

grpcio-tools names the module a generated file imports after the path of the
.proto file below the include root. So the .proto is staged as
dice_client/_proto/api.proto in a scratch folder, and api_pb2_grpc.py then
says `from dice_client._proto import api_pb2`, which works inside the package
without any editing of the generated files. The proto package (`api`), and
so the gRPC path /api.DiceService/RollDie, is unchanged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "dice_client._proto"
OUT = HERE.joinpath(*PACKAGE.split("."))
# The repository's proto/api.proto; DICE_PROTO points elsewhere.
DEFAULT_PROTO = HERE.parent.parent / "proto" / "api.proto"

INIT = '"""gRPC stubs generated from proto/api.proto by generate_stubs.py; do not edit."""\n'
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


class StubError(Exception):
    """The stubs could not be generated; the message says why and what to do."""


def proto_path() -> Path:
    """The .proto file to compile: $DICE_PROTO, else the repository's proto/api.proto."""
    return Path(os.environ.get("DICE_PROTO") or DEFAULT_PROTO)


def generate(proto: Path | None = None, out: Path = OUT) -> list[Path]:
    """Compiles `proto` into `out` and returns the files written."""
    proto = proto or proto_path()
    if not proto.is_file():
        raise StubError(
            f"generate_stubs: {proto}: no such file "
            "(build from the dice fleet repository, or set DICE_PROTO to api.proto)"
        )
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as error:
        raise StubError(
            f"generate_stubs: grpcio-tools is not installed: {error} "
            "(pip install grpcio-tools, or run scripts/setup-test-env.sh)"
        ) from error

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="dice-stubs-") as scratch:
        src = Path(scratch, "src")
        gen = Path(scratch, "gen")
        staged = src.joinpath(*PACKAGE.split("."), proto.name)
        staged.parent.mkdir(parents=True)
        gen.mkdir()
        shutil.copyfile(proto, staged)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={src}",
            f"--proto_path={well_known}",
            f"--python_out={gen}",
            f"--pyi_out={gen}",
            f"--grpc_python_out={gen}",
            str(staged.relative_to(src)),
        ]
        status = protoc.main(args)
        if status != 0:
            raise StubError(f"generate_stubs: protoc failed on {proto} (exit {status})")

        out.mkdir(parents=True, exist_ok=True)
        written = []
        generated = gen.joinpath(*PACKAGE.split("."))
        for name in GENERATED:
            path = generated / name
            if not path.is_file():
                raise StubError(f"generate_stubs: protoc wrote no {name} for {proto}")
            target = out / name
            # Replace each file in one step, so a running import never sees half of one.
            tmp = target.with_name(f".{path.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            written.append(target)
        # The package's own _proto/__init__.py is committed; another --out gets one.
        init = out / "__init__.py"
        if not init.exists():
            init.write_text(INIT, encoding="utf-8")
            written.append(init)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=Path, help="the .proto file (default: proto/api.proto)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the modules go")
    args = parser.parse_args(argv)
    try:
        for path in generate(args.proto, args.out):
            print(f"wrote {path}")
    except StubError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
