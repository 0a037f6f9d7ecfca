package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkCompletion measures HTTP round trips of 32-token completions on
// the embedded model at 1 and 64 concurrent clients (the engine batches
// concurrent requests). Reports requests/s and output tokens/s.
func BenchmarkCompletion(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			_, base := storiesServer(b, Options{})
			tr := &http.Transport{MaxIdleConnsPerHost: clients}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			var tokens atomic.Int64
			var seed atomic.Int64
			b.ResetTimer()
			sem := make(chan struct{}, clients)
			done := make(chan error, b.N)
			for range b.N {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					body := fmt.Sprintf(`{"model":"stories260k","prompt":"Once upon a time","max_tokens":32,"ignore_eos":true,"seed":%d}`, seed.Add(1))
					resp, err := client.Post(base+cmplURL, "application/json", strings.NewReader(body))
					if err != nil {
						done <- err
						return
					}
					defer resp.Body.Close()
					raw, err := io.ReadAll(resp.Body)
					if err != nil || resp.StatusCode != 200 {
						done <- fmt.Errorf("status %d: %s %v", resp.StatusCode, raw, err)
						return
					}
					var c Completion
					if err := json.Unmarshal(raw, &c); err != nil {
						done <- err
						return
					}
					tokens.Add(int64(c.Usage.CompletionTokens))
					done <- nil
				}()
			}
			for range b.N {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(tokens.Load())/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
