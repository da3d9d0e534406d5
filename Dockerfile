# syntax=docker/dockerfile:1
#
# Images of gantry-server and gantry-operator, one target each:
#
#   docker build --target gantry-server   -t gantry-server:0.1.0 .
#   docker build --target gantry-operator -t gantry-operator:0.1.0 .
#
# (`cargo xtask image server|operator` builds the same targets with buildah.)
#
# The build stage keeps cargo's registry and target directory in cache
# mounts (BuildKit and buildah both have them): they outlive the build in
# the builder's cache, outside every image and layer, so a rebuild compiles
# only what changed and a store without copy-on-write (buildah's vfs) does
# not keep a copy of the toolchain and the build tree per instruction.
# Both binaries come out of one cargo build, so the second target finds
# them fresh.
#
# The binaries are built with the `dist` profile (fat LTO, one codegen unit,
# no symbols; `--build-arg PROFILE=` names another) and linked statically
# against glibc (`crt-static`; musl and other Rust targets are not what the
# build image carries). Static glibc
# resolves host names itself: since glibc 2.34 the `files` and `dns` lookups
# that /etc/nsswitch.conf names are part of the C library, not modules it
# loads, so a PostgreSQL host name in DATABASE_URL resolves without any
# shared library in the image. So the runtime stage is distroless `static`:
# CA certificates, time zones, /etc/passwd, /etc/nsswitch.conf, no C
# library, no shell, no package manager, and the user nonroot (uid 65532).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot
# The cargo profile of the binaries: `dist` ships. `cargo xtask test` builds
# with `image-test` (no LTO, quicker to build), and the images say which in
# the label `dev.gantry.profile`.
ARG PROFILE=dist

FROM ${RUST_IMAGE} AS build
ARG PROFILE
# The target is named so that `crt-static` applies to the binaries only, not
# to build scripts and procedural macros, which cargo builds for the host.
# The getrandom crate finds glibc's getrandom() with dlsym, which a static
# binary cannot do, and would then read /dev/urandom, which a sandbox may
# not have: it is told to call getrandom() directly.
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 \
    CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu \
    RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
WORKDIR /src

# The sources (.dockerignore lets in only the manifests and the crates'
# sources). COPY keeps their modification times, which is what cargo's
# freshness check in the cached target directory compares.
COPY . /src
RUN --mount=type=cache,id=gantry-cargo-registry,sharing=locked,target=/usr/local/cargo/registry \
    --mount=type=cache,id=gantry-target,sharing=locked,target=/src/target \
    cargo build --profile "${PROFILE}" --locked --package gantry-server --package gantry-operator && \
    mkdir -p /out && \
    cp "target/x86_64-unknown-linux-gnu/${PROFILE}/gantry-server" \
       "target/x86_64-unknown-linux-gnu/${PROFILE}/gantry-operator" /out/

FROM ${RUNTIME_IMAGE} AS gantry-server
ARG PROFILE
LABEL dev.gantry.profile="${PROFILE}"
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
ARG PROFILE
LABEL dev.gantry.profile="${PROFILE}"
COPY --from=build /out/gantry-operator /usr/local/bin/gantry-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gantry-operator"]
