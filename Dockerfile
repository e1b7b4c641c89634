# rnnserve's container image: a Release build of the server and the CLI client on Debian 12.
#
#   buildah bud --layers -t localhost/rnnserve:dev .      (or: docker build -t rnnserve:dev .)
#   docker run -p 50051:50051 -p 9090:9090 -v $PWD/models:/models:ro rnnserve:dev
#
# /models is the model repository (one folder per model: config.json + model.safetensors);
# empty, the server serves its built-in `demo` model. Arguments after the image name replace the
# default `--model_repository=/models`, e.g. `... rnnserve:dev --model_repository=/models --max_batch=32`.
# TLS and tokens (docs/security.md): mount the files and pass --tls_cert_file, --tls_key_file,
# --auth_tokens_file (and --health_port for plaintext health probes).
ARG BASE=debian:bookworm-slim

# ---- builder: the C++ build packages only (scripts/install-deps.sh --profile build) ----------
FROM ${BASE} AS build
# Labels first, so every cached layer of this image carries them (deploy/check-image.sh prunes
# old layers by label).
LABEL org.opencontainers.image.title="rnnserve-build"
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh --profile build && rm -rf /var/lib/apt/lists/*
COPY . /src
# x86-64-v3 (AVX2, FMA): portable to any x86 server since about 2015, unlike -march=native.
# The ccache cache mount survives between builds (buildah and BuildKit both keep it).
RUN --mount=type=cache,target=/ccache,id=rnnserve-ccache \
    export CCACHE_DIR=/ccache CCACHE_MAXSIZE=2G && \
    cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRNNSERVE_MARCH=x86-64-v3 \
      -DRNNSERVE_BUILD_TESTS=OFF -DRNNSERVE_BUILD_BENCH=OFF && \
    cmake --build /build --target rnnserve rnnserve-client && \
    install -D -m 755 -s /build/server/rnnserve /out/usr/local/bin/rnnserve && \
    install -D -m 755 -s /build/client/rnnserve-client /out/usr/local/bin/rnnserve-client && \
    (ccache --show-stats 2>/dev/null | grep -Ei 'hits|misses' || true)

# ---- runtime: the shared libraries the binaries link, the binaries, a non-root user ----------
FROM ${BASE}
LABEL org.opencontainers.image.title="rnnserve" \
      org.opencontainers.image.description="gRPC inference server for torch.nn.RNN models"
RUN apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libssl3 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log && \
    groupadd --system --gid 10001 rnnserve && \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rnnserve && \
    mkdir -p /models
COPY --from=build /out/ /
# Fails the build if a shared library is missing from this stage.
RUN ! ldd /usr/local/bin/rnnserve /usr/local/bin/rnnserve-client | grep 'not found'
USER 10001:10001
WORKDIR /models
# gRPC (Stream, Forward, models, sessions; health; reflection), Prometheus /metrics, and the
# plaintext health port used with TLS (--health_port=50052, off by default).
EXPOSE 50051 9090 50052
ENTRYPOINT ["rnnserve"]
CMD ["--model_repository=/models"]
