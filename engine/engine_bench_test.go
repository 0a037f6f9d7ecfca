package engine

import (
	"context"
	"testing"
)

// BenchmarkStories260KDecode measures per-token decode on the tiny real
// model, where engine overhead (not weight bandwidth) dominates.
func BenchmarkStories260KDecode(b *testing.B) {
	m := loadStories(b)
	ctx := context.Background()
	s, err := m.NewSession(0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s.Pos() == s.MaxTokens() {
			s.Reset()
		}
		if _, err := s.Step(ctx, 1+i%500); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkStories260KPrefill measures prompt processing of 128 tokens.
func BenchmarkStories260KPrefill(b *testing.B) {
	m := loadStories(b)
	ctx := context.Background()
	s, err := m.NewSession(128)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int, 128)
	for i := range ids {
		ids[i] = 3 + i*5%500
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Reset()
		if _, err := s.Last(ctx, ids); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(ids))/b.Elapsed().Seconds(), "tok/s")
}
