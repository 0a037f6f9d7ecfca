package serve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series (names fixed in the serving
// design; every series is labelled by model). The gauges and prefix-cache
// counters are read from the generators at scrape time.
type metrics struct {
	reg                       *prometheus.Registry
	ttft, tpot, e2e, queue    *prometheus.HistogramVec
	promptTokens, genTokens   *prometheus.CounterVec
	requests                  *prometheus.CounterVec
	running, waiting, kvUsage *prometheus.Desc
	prefixHits, prefixQueries *prometheus.Desc
	models                    *registry
}

func newMetrics(models *registry) *metrics {
	latency := []float64{.005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 20, 30, 60, 120, 300}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, []string{"model"})
	}
	m := &metrics{
		reg:    prometheus.NewRegistry(),
		models: models,
		ttft: hist("deepseek_time_to_first_token_seconds", "Time from request arrival to the first generated token.",
			[]float64{.001, .005, .01, .02, .04, .06, .08, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
		tpot: hist("deepseek_time_per_output_token_seconds", "Mean time per generated token after the first, per request.",
			[]float64{.001, .0025, .005, .01, .025, .05, .075, .1, .15, .2, .3, .4, .5, .75, 1, 2.5}),
		e2e:   hist("deepseek_e2e_request_latency_seconds", "Time from request arrival to its last token.", latency),
		queue: hist("deepseek_request_queue_time_seconds", "Time a request waited in the engine's queue before it was first scheduled.", latency),
		promptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deepseek_prompt_tokens_total",
			Help: "Prompt tokens of finished requests."}, []string{"model"}),
		genTokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deepseek_generation_tokens_total",
			Help: "Generated tokens."}, []string{"model"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deepseek_requests_total",
			Help: "Finished generations (one per choice) by finish reason: stop, length, error, cancelled."}, []string{"model", "finish_reason"}),
		running: prometheus.NewDesc("deepseek_requests_running", "Requests in the engine's running batch.", []string{"model"}, nil),
		waiting: prometheus.NewDesc("deepseek_requests_waiting", "Requests waiting for the engine to schedule them.", []string{"model"}, nil),
		kvUsage: prometheus.NewDesc("deepseek_kv_cache_usage_ratio",
			"Share of KV-cache blocks held by live sequences (reclaimable prefix-cache blocks excluded), 0..1.", []string{"model"}, nil),
		prefixHits:    prometheus.NewDesc("deepseek_prefix_cache_hits_total", "Prompt KV blocks served from the prefix cache.", []string{"model"}, nil),
		prefixQueries: prometheus.NewDesc("deepseek_prefix_cache_queries_total", "Prompt KV blocks looked up in the prefix cache.", []string{"model"}, nil),
	}
	m.reg.MustRegister(m.ttft, m.tpot, m.e2e, m.queue, m.promptTokens, m.genTokens, m.requests, m,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector for the scrape-time series.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.running, m.waiting, m.kvUsage, m.prefixHits, m.prefixQueries} {
		ch <- d
	}
}

// Collect reads every loaded model's generator stats.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, s := range m.models.stats() {
		kv := 0.0
		if s.KVBlocksTotal > 0 {
			kv = float64(s.KVBlocksUsed) / float64(s.KVBlocksTotal)
		}
		ch <- prometheus.MustNewConstMetric(m.running, prometheus.GaugeValue, float64(s.Running), s.name)
		ch <- prometheus.MustNewConstMetric(m.waiting, prometheus.GaugeValue, float64(s.Waiting), s.name)
		ch <- prometheus.MustNewConstMetric(m.kvUsage, prometheus.GaugeValue, kv, s.name)
		ch <- prometheus.MustNewConstMetric(m.prefixHits, prometheus.CounterValue, float64(s.PrefixHitBlocks), s.name)
		ch <- prometheus.MustNewConstMetric(m.prefixQueries, prometheus.CounterValue, float64(s.PrefixQueryBlocks), s.name)
	}
}
