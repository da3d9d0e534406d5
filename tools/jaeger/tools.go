// Package tools pins the Jaeger trace backend that the end-to-end trace
// test runs on loopback: OTLP in, Jaeger's query API out.
package tools
