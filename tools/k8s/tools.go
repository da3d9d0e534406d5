// Package tools pins the Kubernetes control-plane commands that
// `cargo xtask cluster up` builds. The binaries come from the `tool`
// directives in go.mod; this file only gives the module a package.
package tools
