"""Python client for rnnserve (the rnnserve.v1.RnnService gRPC API), on numpy arrays.

Install it with `pip install ./client/python` (the gRPC stubs are generated at build time), or
use it from a checkout with client/python on sys.path (stubs generated on first import).
Needs grpcio, protobuf and numpy (Debian: python3-grpcio, python3-protobuf, python3-numpy).

    from rnnserve_client import RnnServeClient, RnnServeError

    client = RnnServeClient("127.0.0.1:50051")
    # TLS (server verified against ca.crt), mutual TLS (client.crt/.key), a bearer token:
    client = RnnServeClient("rnn.example:50051", tls_ca="ca.crt", tls_cert="client.crt",
                            tls_key="client.key", token=open("token").readline().strip())
    info = client.get_model("demo")              # a ModelInfo message
    out, h_n = client.forward("demo", x)         # x: (T, N, C) float array
    out, h_n = client.forward("lm", ids=tokens)  # a model taking token ids: (T, N) ints

    with client.open_stream() as stream:
        first = stream.start("demo", chunk=x[:5])   # server assigns the session id
        nxt = stream.send(x[5:10])                  # same session (the last one started)
        print(nxt.output.shape, nxt.h_n.shape, nxt.steps_seen)
        state = client.get_session(first.session_id)["h_n"]
        stream.end()

Streams resume by themselves (resume=True, the default): a broken stream, a draining server or
a replaced replica is invisible to the caller, outputs equal an uninterrupted run
(docs/client.md). The asyncio variant is rnnserve_client.aio (AsyncRnnServeClient).

Errors, from a unary call or returned in-stream, raise RnnServeError with .code (a
grpc.StatusCode) and .message; an in-stream error leaves the stream usable.

Thread-safety: RnnServeClient may be shared by threads; a StreamChannel may not.
"""

from ._channel import DEFAULT_MAX_MESSAGE_BYTES, make_channel, read_token_file
from ._messages import (RnnServeError, StreamResult, describe_model, from_tensor, ids_tensor,
                        pb2, pb2_grpc, to_tensor)
from .client import RnnServeClient
from .resume import RetryPolicy
from .stream import StreamChannel

__all__ = ["RnnServeClient", "RnnServeError", "StreamChannel", "StreamResult", "RetryPolicy",
           "make_channel", "read_token_file", "pb2", "pb2_grpc", "to_tensor", "from_tensor",
           "ids_tensor", "describe_model", "DEFAULT_MAX_MESSAGE_BYTES"]
