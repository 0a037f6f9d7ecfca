//go:build unix

package bench

import "syscall"

// cpuSeconds is the process's user+system CPU time: divided by wall time
// it shows how many cores a benchmark really got on a shared machine.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
