package serve

import (
	"context"
	"fmt"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// EngineOptions configure how EngineOpener loads models.
type EngineOptions struct {
	// Devices are assigned to replicas in turn ("auto", "cpu", "cuda"):
	// with --replicas 2 and Devices [cuda cpu], replica 0 runs on the GPU
	// and replica 1 on the CPU. Default: auto.
	Devices   []string
	Int8      bool
	Threads   int                     // CPU threads per replica (0 = engine default)
	Scheduler engine.SchedulerOptions // batch size, token budget, KV bytes
}

// EngineOpener returns an Opener that loads checkpoints with the engine and
// serves each replica with its own batching Scheduler.
func EngineOpener(o EngineOptions) Opener {
	return func(ctx context.Context, src Source, i int) (*Replica, error) {
		dev := "auto"
		if len(o.Devices) > 0 {
			dev = o.Devices[i%len(o.Devices)]
		}
		if dev == "auto" && cuda.Available() != nil {
			// No GPU here at all: the CPU is the expected device, and the
			// "model loaded" log line says where each replica runs.
			dev = "cpu"
		}
		opts := []engine.Option{engine.WithDevice(dev), engine.WithInt8(o.Int8), engine.WithThreads(o.Threads)}
		var m *engine.Model
		var err error
		if src.Dir != "" {
			m, err = engine.Load(src.Dir, opts...)
		} else {
			m, err = engine.LoadFS(src.FS, opts...)
		}
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", src.Name, err)
		}
		if m.Tokenizer() == nil {
			_ = m.Close()
			return nil, fmt.Errorf("model %s has no tokenizer.json; the server needs one", src.Name)
		}
		sch, err := m.NewScheduler(o.Scheduler)
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("model %s: %w", src.Name, err)
		}
		cfg := m.Config()
		info := m.Info()
		var bytes int64
		for _, b := range info.BytesByDType {
			bytes += b
		}
		// The KV pool the scheduler allocated: its blocks (16 tokens each
		// in the engine) at the model's bytes per token; an estimate for
		// the memory budget, not an exact count.
		kv := int64(sch.Stats().KVBlocksTotal) * 16 * info.KVBytesPerTok
		return &Replica{
			Gen:        schedulerGen{sch, m},
			Tokenizer:  m.Tokenizer(),
			ContextLen: sch.Context(),
			VocabSize:  cfg.VocabSize,
			Defaults:   engine.Request{Sampling: cfg.DefaultSampling()},
			Bytes:      bytes + kv,
			Device:     info.Backend,
		}, nil
	}
}

// schedulerGen is a Scheduler as a Generator; Close also unloads the model.
type schedulerGen struct {
	s *engine.Scheduler
	m *engine.Model
}

func (g schedulerGen) Submit(ctx context.Context, r engine.Request) (Stream, error) {
	st, err := g.s.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (g schedulerGen) Stats() engine.SchedulerStats { return g.s.Stats() }

func (g schedulerGen) Close() error {
	err := g.s.Close()
	if cerr := g.m.Close(); err == nil {
		err = cerr
	}
	return err
}
