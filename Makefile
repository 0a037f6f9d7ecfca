# deepseek-go — build, test and benchmark. No CUDA SDK is needed to build.
GO ?= go
# Packages cheap enough to run under the race detector on 2 cores.
RACE_PKGS ?= ./engine/... ./tokenizer/... ./kernels/cpu/... ./quant/...

.PHONY: build test race bench ptx fuzz
build:
	$(GO) build -o build/deepseek-run ./cmd/deepseek-run

test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -short $(RACE_PKGS)

bench:
	$(GO) test ./bench -run '^$$' -bench . -benchtime 3x

# Regenerate PTX from kernels/cuda/*.cu (needs nvcc; run on the GPU host).
ptx:
	$(MAKE) -C kernels/cuda ptx
