"""Channels to an rnnserve server: plaintext or TLS, mutual TLS, a bearer token on every call,
and a receive limit as large as the server's."""

from dataclasses import dataclass
from typing import Optional

import grpc

# The server's --max_message_bytes default; grpcio's own receive limit (4 MiB) would refuse a
# large Forward output or state the server may send.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
_MAX_PEM_BYTES = 1 << 20


def _read_pem(path, what):
    """A PEM file's bytes (or `path` itself when it is bytes: PEM already in memory)."""
    if isinstance(path, bytes):
        return path
    try:
        with open(path, "rb") as f:
            pem = f.read(_MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r}: {e.strerror}") from None
    if len(pem) > _MAX_PEM_BYTES:
        raise ValueError(f"{what} {str(path)!r} is larger than {_MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in pem:
        raise ValueError(f"{what} {str(path)!r} holds no PEM block (expected -----BEGIN ...-----)"
                         + ("; it is empty" if not pem else ""))
    return pem


def read_token_file(path):
    """The token in `path`: its first line without surrounding whitespace."""
    try:
        with open(path, "rb") as f:
            first = f.read(64 << 10).split(b"\n", 1)[0]
    except OSError as e:
        raise ValueError(f"token file {str(path)!r}: {e.strerror}") from None
    token = first.strip().decode("ascii", errors="replace")
    if not token:
        raise ValueError(f"token file {str(path)!r}: the first line is empty (expected the token)")
    return token


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ("authorization", "Bearer TOKEN") to every call's metadata. An interceptor rather
    than call credentials, which grpc refuses on plaintext channels."""

    def __init__(self, token):
        self._pair = ("authorization", "Bearer " + token)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


@dataclass
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: Optional[float]
    metadata: list
    credentials: object
    wait_for_ready: Optional[bool]
    compression: object


def make_channel(target, tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, options=()):
    """A grpc channel to `target`: plaintext, or TLS when `tls_ca` (the PEM CA file the
    server's certificate must chain to) is given, mutual TLS with `tls_cert` and `tls_key`
    (PEM files; both or neither, and only with tls_ca), and `token` sent as
    "authorization: Bearer TOKEN" on every call. Files may be given as PEM bytes instead.
    `options` are extra gRPC channel arguments, e.g. (("grpc.enable_retries", 0),).
    ValueError naming the file when one is missing or not PEM."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert needs tls_key" if tls_key is None else "tls_key needs tls_cert")
    if tls_cert is not None and tls_ca is None:
        raise ValueError("tls_cert/tls_key (mutual TLS) need tls_ca, the CA of the server's "
                         "certificate")
    if token is not None and (not token or any(c <= " " or c > "~" for c in token)):
        raise ValueError("the token must be non-empty printable ASCII without spaces")
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)] + list(options)
    if tls_ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_pem(tls_ca, "TLS CA file"),
            private_key=None if tls_key is None else _read_pem(tls_key, "TLS client key file"),
            certificate_chain=(None if tls_cert is None
                               else _read_pem(tls_cert, "TLS client certificate file")))
        channel = grpc.secure_channel(target, credentials, options=options)
    if token is not None:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel
