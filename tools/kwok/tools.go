// Package tools pins kwok, the fake kubelet of the local control plane, and
// ships its stage definitions (kustomize/stage in the module) with the build.
package tools
