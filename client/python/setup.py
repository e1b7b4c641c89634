"""Build step of the rnnserve-client package: generates the gRPC stubs into the built package
(rnnserve_client/_pb/rnnserve/v1/rnn_service_pb2{,_grpc}.py), so nothing is generated at run
time and no protoc is needed there. Metadata lives in pyproject.toml.

The stubs come from protoc with grpc's own plugin (/usr/bin/grpc_python_plugin, Debian's
protobuf-compiler-grpc; GRPC_PYTHON_PLUGIN overrides), or from grpc_tools.protoc when no
plugin is installed. The proto is read from the repository (../../proto) or from a proto/
folder next to this file (RNNSERVE_PROTO_ROOT overrides).
"""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join("rnnserve", "v1", "rnn_service.proto")


def proto_root():
    for root in (os.environ.get("RNNSERVE_PROTO_ROOT"), os.path.join(HERE, "proto"),
                 os.path.join(HERE, "..", "..", "proto")):
        if root and os.path.isfile(os.path.join(root, PROTO)):
            return os.path.abspath(root)
    sys.exit(f"rnnserve-client: {PROTO} not found (build from the repository, or set "
             "RNNSERVE_PROTO_ROOT)")


def generate_stubs(out):
    root = proto_root()
    os.makedirs(out, exist_ok=True)
    protoc = shutil.which("protoc")
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")
    if protoc and os.access(plugin, os.X_OK):
        command = [protoc, f"--plugin=protoc-gen-grpc={plugin}", "--grpc_out", out]
    else:
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            sys.exit("rnnserve-client: generating the stubs needs protoc with "
                     "grpc_python_plugin (apt-get install protobuf-compiler "
                     "protobuf-compiler-grpc) or grpcio-tools")
        command = [sys.executable, "-m", "grpc_tools.protoc", "--grpc_python_out", out]
    subprocess.run(command + ["--python_out", out, "-I", root, os.path.join(root, PROTO)],
                   check=True)


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        if not self.dry_run:
            generate_stubs(os.path.join(self.build_lib, "rnnserve_client", "_pb"))


setup(cmdclass={"build_py": BuildWithStubs})
