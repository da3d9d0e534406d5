module gantry.dev/bench/nethttp

go 1.26.0
