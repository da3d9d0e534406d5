# Thin aliases for `cargo xtask`; every recipe is one xtask command.

default:
    @just --list

# Everything CI runs: fmt, clippy, unit tests, e2e on a fresh control plane.
test *args:
    cargo xtask test {{args}}

# The quick start.
demo:
    cargo xtask demo

# Build (once, cached) and start a local control plane.
up nodes="3":
    cargo xtask cluster up --nodes {{nodes}}

# Print the KUBECONFIG/PATH export line for the running cluster.
env:
    cargo xtask cluster env

# Stop the local control plane and remove its state.
down:
    cargo xtask cluster down

# Regenerate crds/ from the Rust types.
crds:
    cargo xtask crds

# Side-by-side benchmarks.
bench target *args:
    cargo xtask bench {{target}} {{args}}

# Build an OCI image with buildah.
image target:
    cargo xtask image {{target}}
