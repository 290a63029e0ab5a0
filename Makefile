# unitok: pure-Go CPU engine always; the CUDA engine when nvcc is found.
#
#   make test           CPU tests (scalar, then SIMD with -race), fuzz smoke runs; with nvcc, the CUDA library,
#                       go test -tags cuda ./... (GPU tests skip without a GPU) and the kernels under CPU emulation
#   make cuda           build/libunitok_cuda.a (SASS sm_80, sm_90; PTX compute_90; static cudart)
#   make cuda-test-bin  build/unitok_cuda.test and build/unitok-cuda (self-contained, for a GPU machine)
#   make bench          Go benchmarks (CPU; CUDA too when built)
#   make emu-test       the CUDA tests against a CPU emulation of the kernels (no GPU; slow)
#   make emu-asan       the same under AddressSanitizer
#
# On a GPU machine (no Go, no nvcc there): carry build/ and run bench/device_check.sh.

SHELL   := /bin/bash
GO      ?= go
PKGS    ?= ./...
NVCC    ?= nvcc
BUILD   := build
OBJDIR  := $(BUILD)/obj
LIB     := $(BUILD)/libunitok_cuda.a

CUDA_ARCH := -gencode arch=compute_80,code=sm_80 \
             -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 -lineinfo -Xcompiler -fPIC,-Wall
NVCC_ALL  := $(NVCCFLAGS) $(CUDA_ARCH) -cudart static -I. -Icsrc

CU_SRCS := csrc/api.cu quant_kernels.cu attention_kernels.cu
CU_OBJS := $(patsubst %.cu,$(OBJDIR)/%.o,$(CU_SRCS))
CU_HDRS := csrc/unitok_cuda.h csrc/launchers.h $(wildcard kernels/*.cuh)

HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)
HAVE_CLI  := $(wildcard cmd/unitok/*.go)

.PHONY: all test test-cpu fuzz-smoke test-cuda cuda cuda-test-bin bench vet clean device-check-nogpu

all: test

test: test-cpu device-check-nogpu
ifneq ($(HAVE_NVCC),)
	$(MAKE) test-cuda
	$(MAKE) emu-test
else
	@echo "CUDA path skipped: nvcc not found"
endif

# The CPU engine twice: scalar Go (the default build), then the AVX2/FMA
# kernels (GOEXPERIMENT=simd) under the race detector; then each fuzz
# target briefly.
test-cpu:
	$(GO) test $(PKGS)
	GOEXPERIMENT=simd $(GO) test -race $(PKGS)
	$(MAKE) fuzz-smoke

FUZZTIME ?= 5s
FUZZ_TARGETS := internal/npy:FuzzNpyHeader internal/npy:FuzzNpyOpen \
	internal/safetensors:FuzzOpenSafetensors internal/pth:FuzzUnpickle \
	internal/pth:FuzzOpenZip internal/pth:FuzzCheckpointPickle

fuzz-smoke:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done

# Without a GPU, bench/device_check.sh must refuse (exit 3, "no GPU"), never pass.
device-check-nogpu:
	@if ls /dev | grep -qE '^nvidia[0-9]+$$' || command -v nvidia-smi >/dev/null; then \
		echo "device-check-nogpu: this machine may have a GPU: skipped"; \
	else \
		out=$$(OUT=$(BUILD)/device_nogpu bash bench/device_check.sh 2>&1); rc=$$?; \
		if [ $$rc -eq 3 ] && echo "$$out" | grep -q 'no GPU'; then echo "ok: bench/device_check.sh refuses without a GPU (exit 3)"; \
		else echo "$$out" | tail -n 5; echo "FAIL: bench/device_check.sh exited $$rc without a GPU"; exit 1; fi; \
	fi

# -count=1: go's test cache does not see a rebuilt libunitok_cuda.a.
test-cuda: $(LIB)
	$(GO) test -count=1 -tags cuda $(PKGS)

cuda: $(LIB)

$(LIB): $(CU_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(OBJDIR)/%.o: %.cu $(CU_HDRS)
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ALL) -c $< -o $@

# The binaries, plus build/sysroot: the loader and the exact shared libraries
# they were linked against (ldd), so bench/device_check.sh can start them on a
# machine with another glibc (see scripts/make_sysroot.sh). Carry to the GPU
# machine: build/unitok_cuda.test build/prep_cuda.test build/unitok-cuda build/sysroot.
CUDA_BINS := $(BUILD)/unitok_cuda.test $(BUILD)/prep_cuda.test $(if $(HAVE_CLI),$(BUILD)/unitok-cuda)
cuda-test-bin: $(LIB)
	$(GO) test -tags cuda -c -o $(BUILD)/unitok_cuda.test .
	$(GO) test -tags cuda -c -o $(BUILD)/prep_cuda.test ./internal/prep/
ifneq ($(HAVE_CLI),)
	$(GO) build -tags cuda -o $(BUILD)/unitok-cuda ./cmd/unitok
else
	@echo "cmd/unitok has no Go files yet: CUDA CLI not built"
endif
	bash scripts/make_sysroot.sh $(BUILD)/sysroot $(CUDA_BINS)
	{ echo "commit $$(git rev-parse HEAD 2>/dev/null)$$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"; \
	  echo "built $$(date -u +%FT%TZ) on $$(uname -n)"; $(GO) version; $(NVCC) --version | tail -n 1; } > $(BUILD)/sysroot/BUILD_INFO

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./...
ifneq ($(HAVE_NVCC),)
	$(MAKE) $(LIB)
	$(GO) test -tags cuda -run '^$$' -bench CUDA -benchtime 2s .
endif

vet:
	$(GO) vet ./...
ifneq ($(HAVE_NVCC),)
	$(MAKE) $(LIB)
	$(GO) vet -tags cuda ./...
endif

clean:
	rm -rf $(BUILD)

# ---- CPU emulation of the kernels (test harness; no GPU, no nvcc needed) ----
# Rebuilds the same sources with g++ against csrc/emu/cuda_runtime.h (one
# host thread per CUDA thread, barriers for __syncthreads) into
# build/emu/libunitok_cuda.a, and runs the CUDA tests against it. Slow;
# checks indexing and logic, not performance. EMU_RUN selects the tests.
EMU_DIR ?= $(BUILD)/emu
EMU_SRCS := $(patsubst %.cu,$(EMU_DIR)/src/%.cc,$(CU_SRCS))
EMU_OBJS := $(patsubst %.cc,%.o,$(EMU_SRCS)) $(EMU_DIR)/src/emu_runtime.o
EMU_CXXFLAGS ?= -O2 -g
# -fsanitize=alignment: a float4 access that is not 16-byte aligned (a fault
# on a GPU) stops the run; the emulation's float4 is 16-byte aligned as on a
# GPU. Kernel variants are chosen as on a GPU; tests force the others.
EMU_SAN := -fsanitize=alignment -fno-sanitize-recover=alignment
EMU_CXX := g++ -std=c++20 -pthread -fPIC -ffp-contract=off $(EMU_SAN) $(EMU_CXXFLAGS) -Icsrc/emu -I. -Icsrc
EMU_RUN ?= TestCUDA
EMU_GOFLAGS ?=
EMU_ENV ?=

.PHONY: emu emu-test emu-asan emu-align-check
emu: $(EMU_DIR)/libunitok_cuda.a

$(EMU_DIR)/src/%.cc: %.cu
	@mkdir -p $(@D)
	sed -E 's/([A-Za-z_][A-Za-z_0-9]*(<[A-Za-z_0-9, ]*>)?)<<<([^>]*)>>>\(/::emu::launch(\1, \3, /' $< > $@

$(EMU_DIR)/src/%.o: $(EMU_DIR)/src/%.cc $(CU_HDRS) csrc/emu/cuda_runtime.h
	$(EMU_CXX) -c $< -o $@

$(EMU_DIR)/src/emu_runtime.o: csrc/emu/emu_runtime.cc csrc/emu/cuda_runtime.h
	@mkdir -p $(@D)
	$(EMU_CXX) -c $< -o $@

$(EMU_DIR)/libunitok_cuda.a: $(EMU_OBJS)
	rm -f $@
	ar rcs $@ $^

# The emulation must catch a misaligned float4 load (offset 1 float), and
# must not complain about an aligned one (offset 0).
$(EMU_DIR)/align_selftest: csrc/emu/align_selftest.cc $(EMU_DIR)/src/emu_runtime.o csrc/emu/cuda_runtime.h
	$(EMU_CXX) $< $(EMU_DIR)/src/emu_runtime.o -o $@

emu-align-check: $(EMU_DIR)/align_selftest
	$< 0 >/dev/null
	@if $< 1 >$(EMU_DIR)/align_selftest.log 2>&1; then echo "FAIL: the emulation missed a misaligned float4 load"; exit 1; fi
	@grep -q 'misaligned address' $(EMU_DIR)/align_selftest.log || { cat $(EMU_DIR)/align_selftest.log; exit 1; }
	@echo "ok: the emulation stops on a misaligned float4 load"

emu-test: $(EMU_DIR)/libunitok_cuda.a emu-align-check
	set -o pipefail; $(EMU_ENV) CGO_LDFLAGS="-L$(CURDIR)/$(EMU_DIR) $(EMU_SAN)" $(GO) test $(EMU_GOFLAGS) -tags cuda -count=1 -timeout 30m -run '$(EMU_RUN)' -v . 2>&1 | grep -v '^=== RUN'

# The emulation under AddressSanitizer: out-of-bounds reads and writes of the
# kernels (device memory is host memory here) stop the test.
emu-asan:
	$(MAKE) emu-test EMU_DIR=$(BUILD)/emu-asan EMU_CXXFLAGS="-O1 -g -fsanitize=address -fno-omit-frame-pointer" EMU_GOFLAGS=-asan EMU_ENV=UNITOK_ASAN=1
