package main

import (
	"fmt"
	"io"

	"github.com/deepseek-go/deepseek-go/engine"
)

// printExpertStats writes the MoE routing statistics gathered while
// generating: per layer, how many experts were used and how evenly.
func printExpertStats(w io.Writer, m *engine.Model) {
	layers := m.ExpertStats()
	if len(layers) == 0 {
		fmt.Fprintln(w, "expert stats: this model has no routed experts")
		return
	}
	fmt.Fprintln(w, "expert usage  layer  tokens  active/experts  CV     entropy  busiest")
	for _, l := range layers {
		busiest, top := -1, int64(0)
		for e, c := range l.Counts {
			if c > top {
				busiest, top = e, c
			}
		}
		fmt.Fprintf(w, "              %5d  %6d  %6d/%-7d  %5.2f  %6.3f   expert %d (%d)\n",
			l.Layer, l.Tokens, l.Active, l.Experts, l.CV, l.Entropy, busiest, top)
	}
}
