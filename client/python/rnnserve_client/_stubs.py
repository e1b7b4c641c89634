"""Finds the generated rnnserve.v1 stubs (rnn_service_pb2, rnn_service_pb2_grpc).

In order: RNNSERVE_PB_DIR (a folder of pre-generated stubs, as the repository's test kit
passes); the stubs an installed package carries (`pip install ./client/python` generates them
into rnnserve_client/_pb at build time, so nothing is generated at run time); else, in a
repository checkout, client/python/gen_stubs.sh generates them once into
client/python/rnnserve_pb/<proto hash>/ (or ~/.cache/rnnserve/pb when that is read-only).
"""

import hashlib
import os
import subprocess
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CLIENT_PYTHON = os.path.dirname(_PACKAGE)
_PROTO = os.path.join(_CLIENT_PYTHON, "..", "..", "proto", "rnnserve", "v1", "rnn_service.proto")
_GRPC_MODULE = os.path.join("rnnserve", "v1", "rnn_service_pb2_grpc.py")


def _generated_in_checkout():
    with open(_PROTO, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    base = os.path.join(_CLIENT_PYTHON, "rnnserve_pb")
    if not os.access(_CLIENT_PYTHON, os.W_OK) and not os.path.isdir(base):
        base = os.path.join(os.path.expanduser("~"), ".cache", "rnnserve", "pb")
    out = os.path.join(base, digest)
    if not os.path.isfile(os.path.join(out, _GRPC_MODULE)):
        result = subprocess.run([os.path.join(_CLIENT_PYTHON, "gen_stubs.sh"), out],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ImportError("rnnserve_client: generating the gRPC stubs failed:\n"
                              + result.stderr)
    return out


def stub_dir():
    """The folder holding rnnserve/v1/rnn_service_pb2{,_grpc}.py."""
    override = os.environ.get("RNNSERVE_PB_DIR")
    if override:
        return override
    packaged = os.path.join(_PACKAGE, "_pb")
    if os.path.isfile(os.path.join(packaged, _GRPC_MODULE)):
        return packaged
    if os.path.isfile(_PROTO):
        return _generated_in_checkout()
    raise ImportError("rnnserve_client: no generated stubs. Install the package "
                      "(pip install ./client/python), or set RNNSERVE_PB_DIR to a folder made "
                      "by client/python/gen_stubs.sh")


def import_stubs():
    """(rnn_service_pb2, rnn_service_pb2_grpc). The generated grpc module imports
    `rnnserve.v1.rnn_service_pb2` by that name, so the folder goes on sys.path."""
    path = stub_dir()
    if path not in sys.path:
        sys.path.insert(0, path)
    from rnnserve.v1 import rnn_service_pb2, rnn_service_pb2_grpc
    return rnn_service_pb2, rnn_service_pb2_grpc
