// Package serve is deepseek-run's OpenAI-compatible inference server: the
// HTTP layer over the engine's batching Scheduler.
//
// It serves POST /v1/chat/completions, POST /v1/completions and
// GET /v1/models (streaming as server-sent events), routes each request to
// a model by its "model" field, and keeps HTTP concerns here: request
// decoding and validation, OpenAI's error shape and status codes, the API
// key, the body limit, a bounded per-model queue (429 with Retry-After),
// per-request timeouts, stop strings matched across token boundaries,
// reasoning_content for templates that open <think>, logprobs, n choices,
// usage, Prometheus metrics (/metrics), /health and /ready, structured
// request logs, panic recovery and graceful shutdown. Scheduling policy
// (batching, KV blocks, prefix cache) stays in the engine, behind the
// Generator interface.
//
// Models come from Options.Models (loaded at start) and Options.ModelsDir
// (each subfolder, loaded on first use); with a memory budget the least
// recently used idle model is unloaded to make room, and each model can
// run several replicas balanced by least outstanding requests.
package serve
