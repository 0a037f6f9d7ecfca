package cpu

import "sync"

// parallelFor splits [0, n) into at most threads contiguous chunks and runs
// fn(start, end) on each, returning when all are done. Work smaller than
// minChunk per goroutine runs inline: spawning costs more than it saves.
func parallelFor(n, threads, minChunk int, fn func(start, end int)) {
	if n <= 0 {
		return
	}
	if minChunk < 1 {
		minChunk = 1
	}
	chunks := threads
	if c := n / minChunk; c < chunks {
		chunks = c
	}
	if chunks <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + chunks - 1) / chunks
	for s := 0; s < n; s += per {
		e := min(s+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(s, e)
		}()
	}
	wg.Wait()
}
