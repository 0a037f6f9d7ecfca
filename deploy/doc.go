// Package deploy holds the files that run deepseek-run serve in
// production: a multi-stage Dockerfile, Kubernetes manifests (k8s/),
// Prometheus rules with their promtool unit tests (prometheus/) and a
// Grafana dashboard (grafana/). It has no Go API; its tests validate those
// files: promtool checks and rule tests, the manifests against the
// Kubernetes OpenAPI schemas, and cross-references between them.
package deploy
