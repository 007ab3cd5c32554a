# syntax=docker/dockerfile:1
# The BYOK gateway image: a release build in the Rust image, run from a distroless base
# (glibc and CA certificates only, no shell) as a non-root user. No secret is baked in: every
# setting comes from the environment at run time (docs/deploying.md).
#
#   docker build -t byok-gateway .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://… -e ENCRYPTION_KEY=… byok-gateway

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them: the manifests and stub targets.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p byok-server --bin byok-gateway \
 && install -D -m 0755 target/release/byok-gateway /out/byok-gateway \
 && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/byok-gateway /usr/local/bin/byok-gateway
# The embedded default keeps its SQLite file and generated key here; on Kubernetes, PostgreSQL
# and a Secret replace both and /data is an emptyDir.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Two malloc arenas: with glibc's default (up to 8 per core) RSS kept creeping up under steady
# load; with two it levels off after warm-up at the same throughput (docs/benchmarks.md).
ENV BYOK_BIND=0.0.0.0:8080 \
    BYOK_DATA_DIR=/data \
    BYOK_LOG_FORMAT=json \
    RUST_LOG=info \
    MALLOC_ARENA_MAX=2
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/byok-gateway"]
CMD ["serve"]
