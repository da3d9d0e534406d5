// Package tools pins the etcd server that `cargo xtask cluster up` builds.
// The binary comes from the `tool` directive in go.mod.
package tools
