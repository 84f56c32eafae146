// crdcheck validates Prometheus Operator custom resources (ServiceMonitor, PrometheusRule) offline: each
// YAML document on stdin of one of those kinds is decoded strictly into the operator's own Go types, so an
// unknown or misspelt field, or a value of the wrong type, is an error. Other kinds are skipped.
//
//	helm template ... | crdcheck
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func main() {
	input, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdcheck: reading stdin:", err)
		os.Exit(2)
	}
	failed, checked := 0, 0
	for _, doc := range bytes.Split(input, []byte("\n---")) {
		var meta typeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			fmt.Fprintln(os.Stderr, "crdcheck: not YAML:", err)
			failed++
			continue
		}
		var target any
		switch {
		case meta.APIVersion == "monitoring.coreos.com/v1" && meta.Kind == "ServiceMonitor":
			target = &monitoringv1.ServiceMonitor{}
		case meta.APIVersion == "monitoring.coreos.com/v1" && meta.Kind == "PrometheusRule":
			target = &monitoringv1.PrometheusRule{}
		default:
			continue
		}
		checked++
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			fmt.Printf("%s/%s: %v\n", meta.Kind, meta.Metadata.Name, err)
			failed++
		}
	}
	fmt.Printf("crdcheck: %d checked, %d invalid\n", checked, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
