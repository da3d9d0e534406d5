# syntax=docker/dockerfile:1
#
# Images of gantry-server and gantry-operator, one target each:
#
#   docker build --target gantry-server   -t gantry-server:0.1.0 .
#   docker build --target gantry-operator -t gantry-operator:0.1.0 .
#
# (`cargo xtask image server|operator` builds the same targets with buildah.)
#
# The build stage compiles the dependencies from the manifests alone first,
# so that a change to the sources reuses that layer; both binaries come out
# of one build stage, so the second target reuses the first one's.
#
# The binaries are built with the `dist` profile (fat LTO, one codegen unit,
# no symbols) and linked statically against glibc (`crt-static`; musl and
# other Rust targets are not what the build image carries). Static glibc
# resolves host names itself: since glibc 2.34 the `files` and `dns` lookups
# that /etc/nsswitch.conf names are part of the C library, not modules it
# loads, so a PostgreSQL host name in DATABASE_URL resolves without any
# shared library in the image. So the runtime stage is distroless `static`:
# CA certificates, time zones, /etc/passwd, /etc/nsswitch.conf, no C
# library, no shell, no package manager, and the user nonroot (uid 65532).
#
# The build stage has few instructions on purpose: every instruction is a
# layer, and a builder without a copy-on-write store (buildah's vfs) copies
# the whole toolchain image for each one.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# The workspace manifests and the lock file, nothing else.
FROM scratch AS manifests
COPY Cargo.toml Cargo.lock /src/
COPY operator/Cargo.toml /src/operator/
COPY server/Cargo.toml /src/server/
COPY tests/Cargo.toml /src/tests/
COPY xtask/Cargo.toml /src/xtask/

FROM ${RUST_IMAGE} AS build
# The target is named so that `crt-static` applies to the binaries only, not
# to build scripts and procedural macros, which cargo builds for the host.
# The getrandom crate finds glibc's getrandom() with dlsym, which a static
# binary cannot do, and would then read /dev/urandom, which a sandbox may
# not have: it is told to call getrandom() directly.
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 \
    CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu \
    RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
WORKDIR /src

# 1. Dependencies: the manifests with empty crate roots.
COPY --from=manifests /src /src
RUN for crate in operator server tests xtask; do \
        mkdir -p "$crate/src" && \
        echo 'fn main() {}' > "$crate/src/main.rs" && \
        touch "$crate/src/lib.rs"; \
    done && \
    cargo build --profile dist --locked --package gantry-server --package gantry-operator && \
    rm -rf operator/src server/src tests/src xtask/src

# 2. The sources (.dockerignore lets in only the manifests and the crates'
# sources). COPY keeps the build context's modification times, which may be
# older than the empty crate roots' build: touching the crate roots makes
# cargo rebuild the workspace crates, and only them. The target directory
# is dropped once the binaries are out: nothing later needs it.
COPY . /src
RUN touch operator/src/lib.rs operator/src/main.rs server/src/lib.rs server/src/main.rs && \
    cargo build --profile dist --locked --package gantry-server --package gantry-operator && \
    mkdir -p /out && \
    cp target/x86_64-unknown-linux-gnu/dist/gantry-server \
       target/x86_64-unknown-linux-gnu/dist/gantry-operator /out/ && \
    rm -rf target

FROM ${RUNTIME_IMAGE} AS gantry-server
WORKDIR /app
# The pods the operator makes have a read-only root filesystem and a
# writable /tmp: the embedded SQLite database lives there, for as long as
# the pod. Set DATABASE_URL (PostgreSQL) for data that lasts.
ENV DATABASE_URL=sqlite:///tmp/gantry.db
COPY --from=build /out/gantry-server /usr/local/bin/gantry-server
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gantry-server"]

FROM ${RUNTIME_IMAGE} AS gantry-operator
COPY --from=build /out/gantry-operator /usr/local/bin/gantry-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gantry-operator"]
