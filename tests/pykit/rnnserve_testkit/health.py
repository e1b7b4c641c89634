"""grpc.health.v1 checks."""

import grpc

from .stubs import SERVICE, stubs
from .waits import wait_until


def health_status(channel, service="", timeout=5.0):
    """'SERVING', 'NOT_SERVING', ... for `service` on `channel`, or the gRPC status code name
    if Check failed."""
    health_pb2, health_pb2_grpc = stubs()[2:]
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_serving(target, timeout=30.0, service=SERVICE, alive=lambda: True):
    """Polls Check on `target` until `service` is SERVING; AssertionError after `timeout`
    seconds, or as soon as alive() says the server has exited."""
    with grpc.insecure_channel(target) as channel:
        def ready():
            if not alive():
                raise AssertionError(f"the server behind {target} exited while starting")
            return health_status(channel, service, timeout=1.0) == "SERVING"
        wait_until(ready, timeout, f"{target} health {service!r} SERVING", interval=0.1)
