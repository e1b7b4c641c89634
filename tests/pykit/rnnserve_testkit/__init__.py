"""rnnserve's one Python test kit: what the server tests (tests/server), the deployment tests
(tests/deploy), the Python client test and the benchmarks (bench/*.py) share.

- env:     the repository root, the rnnserve binary, require_tool() (a missing tool fails the
           test with a message naming it, never skips it), timeouts scaled for slow builds.
- waits:   wait_until(), the one bounded poll; nothing sleeps in place of synchronisation.
- stubs:   the rnnserve.v1 and grpc.health.v1 Python stubs, generated once per proto version.
- process: ListeningProcess (any server that prints "... listening on HOST:PORT (gRPC),
           metrics on HOST:PORT") and ServerProcess (rnnserve on ports it picks itself);
           stopping one whose stderr holds a sanitizer report fails. make_channel()
           makes TLS / mTLS / bearer-token channels (ServerProcess(tls_ca=..., token=...)).
- health:  grpc.health.v1 Check and wait_serving().
- metrics: Prometheus text scraped and parsed strictly.
- models:  seeded torch.nn.RNN/GRU/LSTMs exported into model repositories; torch is the oracle.

Runs with the interpreter CMake's RNNSERVE_PYTHON names (Debian's /usr/bin/python3: torch,
numpy, grpcio, protobuf). Importing it puts tools/ and client/python/ on sys.path.
"""

from .env import (ROOT, require_tool, scaled, server_binary)  # noqa: F401
from .waits import wait_until  # noqa: F401
from .stubs import stubs, stub_dir, pb2, client_module, SERVICE  # noqa: F401
from .process import (ListeningProcess, ServerProcess, START_TIMEOUT, STOP_TIMEOUT,  # noqa: F401
                      sanitizer_report, make_channel)
from .health import health_status, wait_serving  # noqa: F401
from .metrics import scrape, parse_samples, parse_metrics, metric, metric_sum  # noqa: F401
from .models import (make_rnn, export_repository, write_model, load_torch,  # noqa: F401
                     torch_forward, torch_forward_state, has_cell_state, state_shapes)

