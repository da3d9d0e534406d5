// Package tools pins the helm command used to install and test the chart.
package tools
