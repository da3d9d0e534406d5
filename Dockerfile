# syntax=docker/dockerfile:1
#
# Images of gantry-server and gantry-operator, one target each:
#
#   docker build --target gantry-server   -t gantry-server:0.1.0 .
#   docker build --target gantry-operator -t gantry-operator:0.1.0 .
#
# The build stage compiles the dependencies from the manifests alone first,
# so that a change to the sources reuses that layer. The runtime stage is
# distroless: glibc and CA certificates, no shell, no package manager, and
# the user nonroot (uid 65532).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0

# 1. Dependencies: the manifests, the lock file and empty sources.
COPY Cargo.toml Cargo.lock ./
COPY operator/Cargo.toml operator/Cargo.toml
COPY server/Cargo.toml server/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY xtask/Cargo.toml xtask/Cargo.toml
RUN for crate in operator server tests xtask; do \
        mkdir -p "$crate/src" && \
        echo 'fn main() {}' > "$crate/src/main.rs" && \
        touch "$crate/src/lib.rs"; \
    done && \
    cargo build --release --locked --package gantry-server --package gantry-operator && \
    rm -rf operator/src server/src tests/src xtask/src

# 2. The sources. COPY keeps the build context's modification times, which
# may be older than the empty stand-ins' build: touching the crate roots
# makes cargo rebuild the workspace crates (and only them).
COPY operator operator
COPY server server
COPY tests/src tests/src
COPY xtask/src xtask/src
RUN touch operator/src/lib.rs operator/src/main.rs server/src/lib.rs server/src/main.rs && \
    cargo build --release --locked --package gantry-server --package gantry-operator && \
    mkdir -p /out/data && \
    cp target/release/gantry-server target/release/gantry-operator /out/

FROM ${RUNTIME_IMAGE} AS gantry-server
WORKDIR /app
# SQLite's default file, data/gantry.db, lives here; mount a volume on
# /app/data when the root filesystem is read-only.
COPY --from=build --chown=65532:65532 /out/data /app/data
COPY --from=build /out/gantry-server /usr/local/bin/gantry-server
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gantry-server"]

FROM ${RUNTIME_IMAGE} AS gantry-operator
COPY --from=build /out/gantry-operator /usr/local/bin/gantry-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gantry-operator"]
