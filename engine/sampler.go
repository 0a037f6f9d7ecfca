package engine

import "github.com/deepseek-go/deepseek-go/engine/sample"

// SamplerOptions chooses how tokens are picked (package sample).
type SamplerOptions = sample.Options

// Sampler picks tokens from logits with its own random source (package
// sample).
type Sampler = sample.Sampler

// NewSampler validates o and returns a Sampler seeded with o.Seed.
func NewSampler(o SamplerOptions) (*Sampler, error) { return sample.New(o) }
