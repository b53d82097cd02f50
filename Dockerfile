# syntax=docker/dockerfile:1
# Not built or tried here: the development machines reach no container
# registry, so neither base image can be pulled. Build it with
#   docker build -t ghcr.io/sluice/sluice:0.1.0 .
# (the image name the manifests use is a placeholder; push to your own).
#
# One image, three binaries: sluice-broker, sluice (console and admin
# commands) and sluice-operator. The manifests pick one with `command`.

FROM rust:1-bookworm AS builder
# ring, zstd-sys and lz4-sys compile C through the `cc` crate, so a C
# toolchain is all the build needs. No cmake: rdkafka (librdkafka) is a
# dependency of the test crate only, which this build leaves out.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release profile keeps debug info for profiling; the image keeps symbol
# names (readable backtraces) and drops the rest, a fraction of the size.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
# Cache mounts keep the registry and target between builds; the binaries are
# copied out in the same step because the target cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-broker -p sluice-tui -p sluice-operator --bins \
 && mkdir -p /out \
 && cp target/release/sluice-broker target/release/sluice target/release/sluice-operator /out/

FROM debian:bookworm-slim
# ca-certificates: the operator's Kubernetes client (rustls) trusts the
# system's roots for anything outside the cluster's own CA.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --no-create-home \
      --home-dir /var/lib/sluice --shell /usr/sbin/nologin sluice \
 && mkdir -p /var/lib/sluice \
 && chown sluice:sluice /var/lib/sluice
COPY --from=builder /out/ /usr/local/bin/
# A numeric user, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/sluice
VOLUME ["/var/lib/sluice"]
# 9092 Kafka clients, 9093 the controller quorum, 9090 the operator's
# metrics and /healthz.
EXPOSE 9092 9093 9090
# `docker run -p 9092:9092 IMAGE` gives a single-node broker reachable from
# the host as 127.0.0.1:9092. Set SLUICE_ADVERTISED_LISTENER to the name
# clients use otherwise (SLUICE_* variables win over flags).
CMD ["sluice-broker", "--listen", "0.0.0.0:9092", "--advertised-listener", "127.0.0.1:9092", "--data-dir", "/var/lib/sluice"]
