# deepseek-go — build, test and benchmark. No CUDA SDK is needed to build.
GO ?= go
# Packages cheap enough to run under the race detector on 2 cores (serve
# included: its tests drive the scheduler from many goroutines).
RACE_PKGS ?= ./engine/... ./tokenizer/... ./kernels/cpu/... ./quant/... ./cmd/... ./serve/...
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 30s

.PHONY: build test vet race bench fuzz ptx

# build/deepseek-run: the CLI (runs the embedded demo model without -m).
build:
	$(GO) build -o build/deepseek-run ./cmd/deepseek-run

# test is what CI runs (.ci/run): vet, every test (fuzz seed corpora
# included), then the race detector on the engine packages with -short sizes.
test: vet
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -short $(RACE_PKGS)

vet:
	$(GO) vet ./...

race:
	$(GO) test -count=1 -race -short $(RACE_PKGS)

bench:
	$(GO) test ./bench -run '^$$' -bench . -benchtime 3x

# Run every Fuzz target of every package for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
		done; \
	done

# Regenerate PTX from kernels/cuda/*.cu (needs nvcc; run on the GPU host).
ptx:
	$(MAKE) -C kernels/cuda ptx
