//go:build linux && cgo

package cuda

import "github.com/deepseek-go/deepseek-go/kernels"

var _ kernels.Counter = (*Backend)(nil)

// Counts implements kernels.Counter: kernel launches (cuBLASLt calls and
// graph replays one each; ops recorded into a graph are not launches) and
// stream or event synchronisations, device-to-host copies included.
func (b *Backend) Counts() (launches, syncs int64) {
	return b.x.launches.Load(), b.x.syncs.Load()
}
