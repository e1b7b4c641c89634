"""The container image's smoke test (deploy/check-image.sh runs it against a server started
from the image): health, ListModels, and streamed sessions compared with torch.

    smoke_image.py --write-repository DIR        # model folders for /models (fixed seeds)
    smoke_image.py --target HOST:PORT --metrics URL --expect-models a,b [--repository DIR]
        [--tls-ca CA.crt --token TOKEN --health-target HOST:PORT]

With --tls-ca the gRPC port is TLS (the server's certificate must chain to CA.crt and name the
target's host) and, with --token, every call carries `authorization: Bearer TOKEN`
(grpc.access_token_call_credentials). Then the test also proves the port refuses what it must:
a plaintext connection fails, and a TLS call with no token or a wrong one is UNAUTHENTICATED
(health on the TLS port included, docs/security.md). --health-target is the plaintext
--health_port: health is checked there, with no credentials at all.
"""

import argparse
import os
import sys

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pykit"))
import rnnserve_testkit as kit  # noqa: E402

# name -> (seed, torch.nn.RNN arguments)
MODELS = {
    "tiny": (1, dict(input_size=8, hidden_size=16, num_layers=2)),
    "relu_bf": (2, dict(input_size=5, hidden_size=7, nonlinearity="relu", batch_first=True)),
}
TOLERANCE = 1e-5


def write_repository(out):
    for name, (seed, config) in MODELS.items():
        kit.write_model(os.path.join(out, name), seed, **config)
    print(f"smoke: wrote {', '.join(MODELS)} to {out}")


def stream_matches_torch(client, name, rnn):
    """Three chunks in one session, the state export in between; everything against torch."""
    rng = np.random.default_rng(7)
    time_axis = 1 if rnn.batch_first else 0
    chunks = [rng.standard_normal((2, t, rnn.input_size) if rnn.batch_first else (t, 2, rnn.input_size),
                                  dtype=np.float32) for t in (3, 1, 5)]
    full = np.concatenate(chunks, axis=time_axis)
    want_out, want_hn = kit.torch_forward(rnn, full)
    outputs = []
    with client.open_stream() as stream:
        reply = stream.start(name, chunk=chunks[0], chunk_index=0)
        outputs.append(reply.output)
        reply = stream.send(chunks[1], chunk_index=1)
        outputs.append(reply.output)
        # State export mid-session.
        _, want_mid = kit.torch_forward(rnn, np.concatenate(chunks[:2], axis=time_axis))
        np.testing.assert_allclose(client.get_session(reply.session_id)["h_n"], want_mid, atol=TOLERANCE)
        reply = stream.send(chunks[2], chunk_index=2, end=True)
        outputs.append(reply.output)
        assert reply.ended
    got = np.concatenate(outputs, axis=time_axis)
    np.testing.assert_allclose(got, want_out, atol=TOLERANCE)
    np.testing.assert_allclose(reply.h_n, want_hn, atol=TOLERANCE)
    err = float(np.abs(got - want_out).max())
    print(f"smoke: {name}: streamed session of {full.shape} matches torch (max error {err:.2e})")


def tls_credentials(args, token):
    """Channel credentials for the TLS port: the CA, and the token as call credentials."""
    with open(args.tls_ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    if token is None:
        return credentials
    return grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))


def open_channel(args, token=None):
    if args.tls_ca:
        return grpc.secure_channel(args.target, tls_credentials(args, token))
    return grpc.insecure_channel(args.target)


def list_models_code(channel, metadata=None):
    """The status code name of a ListModels call on `channel` ("OK" if it succeeded)."""
    pb2, pb2_grpc = kit.stubs()[:2]
    try:
        pb2_grpc.RnnServiceStub(channel).ListModels(pb2.ListModelsRequest(), timeout=5,
                                                    metadata=metadata)
    except grpc.RpcError as e:
        return e.code().name
    return "OK"


def check_refusals(args):
    """What the secured port must refuse: plaintext, and calls without a valid token."""
    with grpc.insecure_channel(args.target) as channel:
        code = list_models_code(channel)
        assert code == "UNAVAILABLE", f"a plaintext call to the TLS port: {code}, expected UNAVAILABLE"
    print("smoke: a plaintext call to the TLS port fails (UNAVAILABLE)")
    if not args.token:
        return
    with open_channel(args) as channel:  # TLS, no token
        code = list_models_code(channel)
        assert code == "UNAUTHENTICATED", f"ListModels over TLS without a token: {code}"
        code = kit.health_status(channel, kit.SERVICE)
        assert code == "UNAUTHENTICATED", f"health on the TLS port without a token: {code}"
        code = list_models_code(channel, metadata=[("authorization", "Bearer not-" + args.token)])
        assert code == "UNAUTHENTICATED", f"ListModels with a wrong token: {code}"
    print("smoke: over TLS, no token and a wrong token are UNAUTHENTICATED (health included)")


def check(args):
    # Bounded poll while the server starts (its models load before it reports SERVING). With
    # TLS the probes' way: the plaintext health port.
    health_target = args.health_target or args.target
    kit.wait_serving(health_target, timeout=args.wait)
    with grpc.insecure_channel(health_target) as channel:
        for service in ("", kit.SERVICE):
            status = kit.health_status(channel, service)
            assert status == "SERVING", f"health {service!r} on {health_target}: {status}"
    print(f"smoke: health SERVING ('' and rnnserve.v1.RnnService) on {health_target}"
          f"{' (plaintext health port)' if args.health_target else ''}")
    if args.tls_ca:
        check_refusals(args)
    rc = kit.client_module()
    with rc.RnnServeClient(args.target, channel=open_channel(args, args.token)) as client:
        models = {m.name: m for m in client.list_models()}
        assert sorted(models) == sorted(args.expect_models.split(",")), f"ListModels: {sorted(models)}"
        print(f"smoke: ListModels: {', '.join(sorted(models))}")
        if "demo" in models:
            c = models["demo"].config
            assert (c.input_size, c.hidden_size, c.num_layers) == (100, 10, 2), c
        if args.repository:
            for name in sorted(models):
                stream_matches_torch(client, name, kit.load_torch(os.path.join(args.repository, name)))
    if args.metrics:
        samples, _ = kit.parse_samples(kit.scrape(args.metrics))
        names = {n for n, _, _ in samples}
        for name in ("rnnserve_build_info", "rnnserve_requests_total"):
            assert name in names, f"{name} missing from {args.metrics}"
        print(f"smoke: /metrics: {len(samples)} samples")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-repository", metavar="DIR")
    parser.add_argument("--target")
    parser.add_argument("--metrics")
    parser.add_argument("--expect-models", default="demo")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for SERVING")
    parser.add_argument("--repository", metavar="DIR", help="compare every model there with torch")
    parser.add_argument("--tls-ca", metavar="CA_CRT", help="the gRPC port is TLS; trust this CA")
    parser.add_argument("--token", help="bearer token sent on every call (needs --tls-ca)")
    parser.add_argument("--health-target", metavar="HOST:PORT",
                        help="the plaintext health port (--health_port), checked without credentials")
    args = parser.parse_args()
    if args.token and not args.tls_ca:
        parser.error("--token needs --tls-ca (call credentials travel over TLS only)")
    if args.write_repository:
        write_repository(args.write_repository)
    else:
        check(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
