"""The rnnserve.v1 and grpc.health.v1 Python stubs, generated with protoc and grpc's own
plugin (/usr/bin/grpc_python_plugin; Debian's grpc-tools is too old for this proto) once per
proto version into a cached folder under the temp dir. The folder is built aside and renamed
into place, so parallel test processes never see half of it."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from .env import ROOT, require_tool

RNN_PROTO = os.path.join(ROOT, "proto", "rnnserve", "v1", "rnn_service.proto")
# grpc.health.v1 (Debian ships no grpc_health for Python); compiled from its own folder, so
# the module is a top-level health_pb2 rather than a grpc.health package under grpcio's.
HEALTH_PROTO = os.path.join(ROOT, "proto", "grpc", "health", "v1", "health.proto")
SERVICE = "rnnserve.v1.RnnService"
PLUGIN = "/usr/bin/grpc_python_plugin"

_lock = threading.Lock()
_modules = None


def stub_dir():
    """The folder holding rnnserve/v1/rnn_service_pb2{,_grpc}.py and health_pb2{,_grpc}.py,
    generating it if no process has yet."""
    protoc = require_tool("protoc", "apt-get install protobuf-compiler")
    if not os.access(PLUGIN, os.X_OK):
        raise AssertionError(f"{PLUGIN} is missing; install it: apt-get install "
                             "protobuf-compiler-grpc")
    digest = hashlib.sha256()
    for path in (RNN_PROTO, HEALTH_PROTO, protoc, PLUGIN):
        with open(path, "rb") as f:
            digest.update(f.read())
    final = os.path.join(tempfile.gettempdir(),
                         f"rnnserve-test-stubs-{os.getuid()}-{digest.hexdigest()[:16]}")
    marker = os.path.join(final, "COMPLETE")
    if os.path.exists(marker):
        return final
    staging = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-",
                               dir=os.path.dirname(final))
    try:
        for include, proto in ((os.path.join(ROOT, "proto"), RNN_PROTO),
                               (os.path.dirname(HEALTH_PROTO), HEALTH_PROTO)):
            subprocess.run(
                [protoc, f"--python_out={staging}", f"--grpc_out={staging}",
                 f"--plugin=protoc-gen-grpc={PLUGIN}", "-I", include, proto],
                check=True, timeout=60)
        with open(os.path.join(staging, "COMPLETE"), "w") as f:
            f.write("ok\n")
        try:
            os.rename(staging, final)  # atomic; fails if another process got there first
        except OSError:
            if not os.path.exists(marker):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def stubs():
    """(rnn_service_pb2, rnn_service_pb2_grpc, health_pb2, health_pb2_grpc)."""
    global _modules
    with _lock:
        if _modules is None:
            folder = stub_dir()
            if folder not in sys.path:
                sys.path.insert(0, folder)
            from rnnserve.v1 import rnn_service_pb2, rnn_service_pb2_grpc
            import health_pb2
            import health_pb2_grpc
            _modules = (rnn_service_pb2, rnn_service_pb2_grpc, health_pb2, health_pb2_grpc)
        return _modules


def pb2():
    return stubs()[0]


def client_module():
    """client/python/rnnserve_client (the project's Python client), using these stubs
    (RNNSERVE_PB_DIR) rather than generating its own next to its source."""
    os.environ.setdefault("RNNSERVE_PB_DIR", stub_dir())
    stubs()
    import rnnserve_client
    return rnnserve_client
