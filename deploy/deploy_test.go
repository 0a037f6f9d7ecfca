package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// serverMetrics are the metric families deepseek-run serve exports (the
// histograms as their _bucket/_sum/_count series), plus the standard
// process and Go collectors the rules and dashboard use.
var serverMetrics = []string{
	"deepseek_requests_running", "deepseek_requests_waiting", "deepseek_kv_cache_usage_ratio",
	"deepseek_time_to_first_token_seconds", "deepseek_time_per_output_token_seconds",
	"deepseek_e2e_request_latency_seconds", "deepseek_request_queue_time_seconds",
	"deepseek_prompt_tokens_total", "deepseek_generation_tokens_total", "deepseek_requests_total",
	"deepseek_prefix_cache_hits_total", "deepseek_prefix_cache_queries_total",
	"process_resident_memory_bytes", "process_cpu_seconds_total", "go_memstats_heap_inuse_bytes",
}

// promtool finds promtool, skipping the test without it unless
// DEEPSEEK_CI=1 (CI installs Debian's prometheus package).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("DEEPSEEK_CI") == "1" {
			t.Fatalf("promtool not found with DEEPSEEK_CI=1: install Debian's prometheus package (%v)", err)
		}
		t.Skip("promtool not installed (apt-get install -y prometheus); skipping")
	}
	return p
}

func runTool(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out)
}

func TestPromtoolRules(t *testing.T) {
	pt := promtool(t)
	out := runTool(t, "prometheus", pt, "check", "rules", "rules.yml")
	assert.Contains(t, out, "SUCCESS")
	out = runTool(t, "prometheus", pt, "test", "rules", "rules_test.yml", "rules_week_test.yml")
	assert.Equal(t, 2, strings.Count(out, "SUCCESS"), out)
	// prometheus-k8s.yml uses kubernetes_sd_configs, which Debian's build
	// leaves out, so only the local config is checked by promtool.
	runTool(t, "prometheus", pt, "check", "config", "prometheus.yml")
}

// TestRulesCoverIssue: the alerts the operators asked for exist, each
// has a promtool test that expects it to fire, and every metric the
// rules read is one the server exports.
func TestRulesCoverIssue(t *testing.T) {
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Record, Alert, Expr string
				For                 string
				Labels              map[string]string
				Annotations         map[string]string
			}
		}
	}
	readYAML(t, "prometheus/rules.yml", &rules)
	alerts := map[string]string{}
	records := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts[r.Alert] = r.Expr
				assert.NotEmpty(t, r.Labels["severity"], "%s: severity label", r.Alert)
				assert.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
				assert.NotEmpty(t, r.For, "%s: a for: duration avoids paging on one bad scrape", r.Alert)
			} else {
				records[r.Record] = true
			}
		}
	}
	for _, want := range []string{"DeepseekTTFTP99OverSLO", "DeepseekE2ELatencyP99OverSLO",
		"DeepseekThroughputDropWeekOverWeek", "DeepseekMemoryLeak", "DeepseekQueueGrowing"} {
		assert.Contains(t, alerts, want)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	fired := map[string]bool{}
	for _, f := range []string{"prometheus/rules_test.yml", "prometheus/rules_week_test.yml"} {
		tests.Tests = nil
		readYAML(t, f, &tests)
		for _, tc := range tests.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fired[a.Alertname] = true
				}
			}
		}
	}
	for name, expr := range alerts {
		assert.True(t, fired[name], "alert %s has no promtool test where it fires", name)
		assertKnownMetrics(t, "alert "+name, expr, records)
	}
}

// metricRef finds identifiers in PromQL that look like metric names.
var metricRef = regexp.MustCompile(`\b((?:deepseek|process|go)_[a-z0-9_]+|deepseek:[a-z0-9_:]+)`)

func assertKnownMetrics(t *testing.T, where, expr string, records map[string]bool) {
	t.Helper()
	for _, m := range metricRef.FindAllString(expr, -1) {
		if records[m] {
			continue
		}
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suf)
		}
		assert.True(t, slices.Contains(serverMetrics, base), "%s reads %s, which the server does not export", where, m)
	}
}

// TestDashboard: the Grafana dashboard is valid JSON with unique panel
// ids, every query reads exported metrics, and every query is valid
// PromQL (checked by promtool as recording rules, with Grafana's
// variables substituted).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/deepseek-serving.json")
	require.NoError(t, err)
	var d struct {
		Title  string
		UID    string
		Panels []struct {
			ID      int
			Type    string
			Title   string
			GridPos struct{ X, Y, W, H int }
			Targets []struct {
				Expr  string
				RefID string
			}
		}
		Templating struct {
			List []struct{ Name string }
		}
	}
	require.NoError(t, json.Unmarshal(b, &d))
	assert.NotEmpty(t, d.Title)
	assert.NotEmpty(t, d.UID)
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	assert.ElementsMatch(t, []string{"datasource", "model"}, vars)
	ids := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		assert.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		assert.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q wider than the grid", p.Title)
		if p.Type == "row" {
			continue
		}
		assert.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			assertKnownMetrics(t, "panel "+p.Title, tg.Expr, nil)
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, want := range []string{"deepseek_time_to_first_token_seconds_bucket", "deepseek_requests_waiting",
		"deepseek_generation_tokens_total", "deepseek_kv_cache_usage_ratio", "process_resident_memory_bytes"} {
		assert.True(t, slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, want) }), "no panel shows %s", want)
	}

	pt := promtool(t)
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$model", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rs []rule
	for i, e := range exprs {
		rs = append(rs, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafanaVars.Replace(e)})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rs}}}
	y, err := yaml.Marshal(doc)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dashboard-rules.yml"), y, 0o644))
	out := runTool(t, dir, pt, "check", "rules", "dashboard-rules.yml")
	assert.Contains(t, out, fmt.Sprintf("SUCCESS: %d rules found", len(exprs)))
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}

// manifests decodes every YAML document of deploy/k8s, keyed by
// "file#index".
func manifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var obj map[string]any
			err := dec.Decode(&obj)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, f)
			if obj == nil {
				continue
			}
			out[fmt.Sprintf("%s#%d", f, i)] = obj
		}
	}
	return out
}

// TestManifestSchemas validates every Kubernetes object against the
// official OpenAPI schema of its kind (strict: unknown fields fail), and
// the custom resources (KEDA, kustomize) for the fields they need.
func TestManifestSchemas(t *testing.T) {
	if *updateSchemas != "" {
		set, err := generateSchemas(*updateSchemas)
		require.NoError(t, err)
		b, err := json.Marshal(set)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(schemaFile, append(b, '\n'), 0o644))
		t.Logf("wrote %s: %d schemas, %d bytes", schemaFile, len(set.Schemas), len(b))
	}
	set, err := loadSchemas()
	require.NoError(t, err)
	kinds := map[string]int{}
	for name, obj := range manifests(t) {
		key := fmt.Sprintf("%v/%v", obj["apiVersion"], obj["kind"])
		kinds[key]++
		switch key {
		case "keda.sh/v1alpha1/ScaledObject":
			checkScaledObject(t, name, obj)
		case "kustomize.config.k8s.io/v1beta1/Kustomization":
			checkKustomization(t, name, obj)
		default:
			assert.NoError(t, set.validateObject(obj), name)
			md, _ := obj["metadata"].(map[string]any)
			assert.NotEmpty(t, md["name"], "%s: metadata.name", name)
		}
	}
	for _, want := range []string{"apps/v1/Deployment", "v1/Service", "autoscaling/v2/HorizontalPodAutoscaler", "keda.sh/v1alpha1/ScaledObject"} {
		assert.Equal(t, 1, kinds[want], "one %s", want)
	}
}

// TestSchemaValidatorRejects: the validator catches the mistakes it is
// there for (a test that could not fail would prove nothing).
func TestSchemaValidatorRejects(t *testing.T) {
	set, err := loadSchemas()
	require.NoError(t, err)
	base := func() map[string]any {
		var obj map[string]any
		readYAML(t, "k8s/deployment.yaml", &obj)
		return obj
	}
	container := func(o map[string]any) map[string]any {
		return dig(o, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	}
	require.NoError(t, set.validateObject(base()))
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"misspelled field", func(o map[string]any) { dig(o, "spec").(map[string]any)["replica"] = 2 }, "spec.replica: unknown field"},
		{"wrong type", func(o map[string]any) { dig(o, "spec").(map[string]any)["replicas"] = "two" }, "spec.replicas: want an integer"},
		{"missing required", func(o map[string]any) { delete(dig(o, "spec").(map[string]any), "selector") }, `required field "selector"`},
		{"string for a list", func(o map[string]any) { container(o)["args"] = "serve" }, "containers[0].args: want a list"},
		{"unknown probe field", func(o map[string]any) {
			dig(container(o), "readinessProbe").(map[string]any)["path"] = "/ready"
		}, "readinessProbe.path: unknown field"},
		{"bad quantity type", func(o map[string]any) {
			dig(container(o), "resources", "requests").(map[string]any)["cpu"] = true
		}, "requests.cpu: true matches none"},
		{"probe port object", func(o map[string]any) {
			dig(container(o), "readinessProbe", "httpGet").(map[string]any)["port"] = []any{1}
		}, "httpGet.port: [1] matches none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.edit(o)
			err := set.validateObject(o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func checkScaledObject(t *testing.T, name string, obj map[string]any) {
	assert.Equal(t, "Deployment", dig(obj, "spec", "scaleTargetRef", "kind"), name)
	assert.NotEmpty(t, dig(obj, "spec", "scaleTargetRef", "name"), name)
	minR, _ := dig(obj, "spec", "minReplicaCount").(int)
	maxR, _ := dig(obj, "spec", "maxReplicaCount").(int)
	assert.True(t, minR >= 1 && maxR > minR, "%s: 1 <= min (%d) < max (%d)", name, minR, maxR)
	triggers, _ := dig(obj, "spec", "triggers").([]any)
	require.Len(t, triggers, 1, name)
	tr := triggers[0].(map[string]any)
	assert.Equal(t, "prometheus", tr["type"])
	for _, k := range []string{"serverAddress", "query", "threshold"} {
		_, isString := dig(tr, "metadata", k).(string)
		assert.True(t, isString, "%s: trigger metadata.%s must be a string", name, k)
	}
	assert.Contains(t, dig(tr, "metadata", "query"), "deepseek_requests_waiting")
}

func checkKustomization(t *testing.T, name string, obj map[string]any) {
	res, _ := obj["resources"].([]any)
	require.NotEmpty(t, res, name)
	for _, r := range res {
		_, err := os.Stat(filepath.Join("k8s", fmt.Sprint(r)))
		assert.NoError(t, err, "%s lists %v", name, r)
	}
	assert.NotContains(t, res, "keda-scaledobject.yaml", "the HPA and KEDA must not both scale the Deployment")
}

// TestManifestsAgree checks what the schemas cannot: the objects refer to
// each other and to the server correctly.
func TestManifestsAgree(t *testing.T) {
	byKind := map[string]map[string]any{}
	for _, obj := range manifests(t) {
		byKind[fmt.Sprint(obj["kind"])] = obj
	}
	dep, svc, hpa, adapter := byKind["Deployment"], byKind["Service"], byKind["HorizontalPodAutoscaler"], byKind["ConfigMap"]
	require.NotNil(t, dep)
	depName := dig(dep, "metadata", "name")
	podLabels := dig(dep, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range dig(dep, "spec", "selector", "matchLabels").(map[string]any) {
		assert.Equal(t, v, podLabels[k], "Deployment selector %s must match its pod labels", k)
	}
	for k, v := range dig(svc, "spec", "selector").(map[string]any) {
		assert.Equal(t, v, podLabels[k], "Service selector %s must match the pods", k)
	}
	for _, auto := range []map[string]any{hpa, byKind["ScaledObject"]} {
		assert.Equal(t, depName, dig(auto, "spec", "scaleTargetRef", "name"))
	}

	c := dig(dep, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	ports := map[string]int{}
	for _, p := range c["ports"].([]any) {
		pm := p.(map[string]any)
		ports[fmt.Sprint(pm["name"])] = pm["containerPort"].(int)
	}
	assert.Equal(t, "http", dig(svc, "spec", "ports").([]any)[0].(map[string]any)["targetPort"])
	assert.Equal(t, 8080, ports["http"])
	for probe, path := range map[string]string{"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/health"} {
		assert.Equal(t, path, dig(c, probe, "httpGet", "path"), probe)
		assert.Contains(t, ports, dig(c, probe, "httpGet", "port"), "%s port", probe)
	}
	for _, r := range []string{"cpu", "memory", "nvidia.com/gpu"} {
		assert.NotNil(t, dig(c, "resources", "requests", r), "resources.requests[%s]", r)
	}
	args := strings.Join(asAny[string](c["args"]), " ")
	assert.Contains(t, args, "serve")
	assert.Contains(t, args, "--addr=0.0.0.0:8080", "the server must listen beyond loopback in a pod")
	assert.Equal(t, "8080", dig(dep, "spec", "template", "metadata", "annotations", "prometheus.io/port"))
	grace := dig(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	assert.Greater(t, grace, 30, "grace period must exceed --shutdown-timeout=30s")

	// The HPA scales on the waiting gauge, which the adapter must serve.
	metric := dig(hpa, "spec", "metrics").([]any)[0].(map[string]any)
	assert.Equal(t, "deepseek_requests_waiting", dig(metric, "pods", "metric", "name"))
	minR, maxR := dig(hpa, "spec", "minReplicas").(int), dig(hpa, "spec", "maxReplicas").(int)
	assert.True(t, minR >= 1 && maxR > minR)
	var adapterCfg struct {
		Rules []struct {
			SeriesQuery string `yaml:"seriesQuery"`
			Name        struct{ As string }
		}
	}
	require.NoError(t, yaml.Unmarshal([]byte(dig(adapter, "data", "config.yaml").(string)), &adapterCfg))
	assert.True(t, slices.ContainsFunc(adapterCfg.Rules, func(r struct {
		SeriesQuery string `yaml:"seriesQuery"`
		Name        struct{ As string }
	}) bool {
		return r.Name.As == "deepseek_requests_waiting"
	}), "prometheus-adapter must expose deepseek_requests_waiting")

	// The in-cluster scrape config keeps the pod annotations and the
	// namespace/pod labels the adapter maps.
	k8sProm, err := os.ReadFile("prometheus/prometheus-k8s.yml")
	require.NoError(t, err)
	for _, want := range []string{"prometheus_io_scrape", "prometheus_io_port", "target_label: namespace", "target_label: pod"} {
		assert.Contains(t, string(k8sProm), want)
	}
}

func asAny[T any](v any) []T {
	l, _ := v.([]any)
	out := make([]T, 0, len(l))
	for _, e := range l {
		if x, ok := e.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// TestDockerfile checks the multi-stage structure: every COPY --from names
// an earlier stage, the CPU binary is built without cgo (static), the GPU
// binary is checked to link only glibc, the image serves on the port the
// Deployment probes, and the built package exists.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var stages []string
	var last string
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for ln := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(ln)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			require.GreaterOrEqual(t, len(f), 4, ln)
			assert.Equal(t, "AS", strings.ToUpper(f[2]), "every stage is named: %s", ln)
			stages = append(stages, f[3])
			last = f[3]
		case "COPY":
			for _, a := range f[1:] {
				if from, ok := strings.CutPrefix(a, "--from="); ok {
					assert.Contains(t, stages[:len(stages)-1], from, "COPY --from=%s must name an earlier stage", from)
				}
			}
		case "EXPOSE":
			assert.Equal(t, "8080", f[1])
		}
	}
	assert.Equal(t, []string{"build", "cpu", "gpu"}, stages)
	assert.Equal(t, "gpu", last, "the default target is the GPU image")
	assert.Contains(t, text, "CGO_ENABLED=0 go build")
	assert.Contains(t, text, "static-debian12")
	assert.Regexp(t, `! ldd \S+ \| grep -v`, text)
	_, err = os.Stat("../cmd/deepseek-run/main.go")
	assert.NoError(t, err)
}
