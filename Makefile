# datakit + datakit-ebpf. The repository root doubles as the install directory.
.DELETE_ON_ERROR:
.PHONY: all deps build probes collector agent run test unit integration fuzz faults test-kernels kernels bench bench-scale bench-hooks fmt vet clean kube-apiserver thanos test-rootfs image

V ?= 0
Q := $(if $(filter 1,$(V)),,@)
CLANG ?= clang
BPFTOOL ?= bpftool
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
DATE := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)

BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Iprobes

PROBES := $(patsubst probes/%.bpf.c,collector/bpf/obj/%.bpf.o,$(wildcard probes/*.bpf.c))
GO_SRC := $(shell find . -name '*.go' -not -path './tests/*') go.mod go.sum

all: build

deps:
	$(Q)./scripts/install-deps.sh

build: deps probes collector agent

probes: $(PROBES)

probes/vmlinux.h:
	@echo "  GEN     $@"
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

collector/bpf/obj/%.bpf.o: probes/%.bpf.c probes/*.h probes/common/*.bpf.h probes/vmlinux.h
	@echo "  CLANG   $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

collector: externals/datakit-ebpf

# datakit-ebpf is fully static (libbpf, libelf, zlib, libc): one binary for every host and kernel.
build/datakit-ebpf: $(PROBES) $(GO_SRC)
	@echo "  GO      $@"
	$(Q)$(GO) build -tags netgo,osusergo -ldflags "-linkmode external -extldflags -static -X main.version=$(VERSION) -X main.buildDate=$(DATE)" -o $@ ./cmd/datakit-ebpf

externals/datakit-ebpf: build/datakit-ebpf
	$(Q)install -D -m 0755 $< $@

agent: datakit

datakit: $(GO_SRC)
	@echo "  GO      $@"
	$(Q)CGO_ENABLED=0 $(GO) build -ldflags "-X dkebpf/agent.Version=$(VERSION)" -o $@ ./cmd/datakit

# Runs the agent in the foreground on this directory; it spawns the collector. Ctrl-C stops both.
run: build
	$(Q)test -f conf.d/host/ebpf.conf || install -D -m 0644 conf.d/samples/ebpf.conf.sample conf.d/host/ebpf.conf
	./datakit run --dir $(CURDIR)

test: build unit fuzz integration kernels

unit:
	@echo "  TEST    unit"
	$(Q)$(GO) test -count=1 $$($(GO) list ./... | grep -v /tests/)

# Every Go fuzz target for FUZZTIME each (10 s in `make test`, 2 min in `make faults`).
FUZZTIME ?= 10s
fuzz:
	$(Q)FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# The fault and hostile-input suite at length: the agent hung for 10 minutes under the collector, 10x the
# writes killed mid-way, the sinks' engines down for 10 minutes, and so on (the short versions run in `make integration`), then the agent hung for
# OUTAGE under the bench's busiest workloads (W5: the most points; W1: the most HTTP exchanges; exact checks,
# nothing dropped; bench-results/outage-*.md), then every fuzz target for 2 minutes. The table of cases is
# printed and written to bench-results/faults.txt (~55 min in all).
OUTAGE ?= 10m
faults: build kube-apiserver thanos test-rootfs
	$(Q)mkdir -p bench-results && rm -f bench-results/faults.txt
	$(Q)DKEBPF_FAULTS_LONG=1 DKEBPF_FAULTS_REPORT=$(CURDIR)/bench-results/faults.txt $(GO) test -count=1 -timeout 60m -run 'TestFault' $(if $(filter 1,$(V)),-v) ./tests/integration; \
		rc=$$?; cat bench-results/faults.txt 2>/dev/null; exit $$rc
	$(Q)./scripts/install-bench-deps.sh
	$(Q)$(GO) build -o build/bench ./bench
	$(Q)./build/bench -outage $(OUTAGE) -workloads W5,W1
	$(Q)$(MAKE) --no-print-directory fuzz FUZZTIME=2m

# Root integration tests against the real kernel. They fail (never skip) if BPF cannot load.
# The DaemonSet's image, localhost/datakit-ebpf:latest (deploy/datakit-ebpf.yaml), from Debian's packages: no registry.
image: build
	$(Q)./scripts/build-image.sh

# A real kube-apiserver v1.37.2 for the Kubernetes tests, built once into /var/cache/dkebpf-kube (~7 min, ~2.9 GB RAM the first time).
kube-apiserver:
	@echo "  KUBE    kube-apiserver v1.37.2 (cached)"
	$(Q)./scripts/kube-apiserver.sh >/dev/null

# A real Thanos v0.42.5 (receive hashring + query) for the remote-write sink tests, built once into /var/cache/dkebpf-thanos (~5 min, ~1.5 GB RAM the first time).
thanos:
	@echo "  THANOS  thanos v0.42.5 (cached)"
	$(Q)./scripts/thanos.sh >/dev/null

# A Debian root file system for the test containers, made with mmdebstrap once into /var/cache/dkebpf-images.
test-rootfs:
	@echo "  ROOTFS  test container image (cached)"
	$(Q)./scripts/test-rootfs.sh >/dev/null

# -p 1: one test package at a time, so no other package's traffic (tests/kubeapi's apiserver and etcd)
# lands in the fault tests that count what a full kernel map refused.
integration: kube-apiserver thanos test-rootfs
	@echo "  TEST    integration (root, real kernel)"
	$(Q)mkdir -p bench-results && rm -f bench-results/faults-short.txt
	$(Q)DKEBPF_FAULTS_REPORT=$(CURDIR)/bench-results/faults-short.txt $(GO) test -p 1 -count=1 -timeout 30m $(if $(filter 1,$(V)),-v) ./tests/...; \
		rc=$$?; echo "  FAULTS  (short versions; \`make faults\` runs them at length)"; cat bench-results/faults-short.txt 2>/dev/null; exit $$rc

# The same binaries on Debian 5.10, 6.1, 6.1-rt and 6.12 under qemu, and on this host (~40 min).
test-kernels: build
	$(Q)./scripts/kernel-matrix/matrix.sh

# In `make test`: the matrix runs when qemu is present or installable (apt reachable), else it says why.
kernels: build
	$(Q)if ./scripts/kernel-matrix/install-deps.sh >/dev/null 2>&1; then ./scripts/kernel-matrix/matrix.sh; \
	else echo "kernel matrix NOT RUN: qemu-system-x86 >= 8 is neither installed nor installable here"; fi

# What the collector costs real workloads and how true its numbers are: base / floor / netflow,
# interleaved, 5 repetitions, with the peer tools of each workload (~20 min). QUICK=1: 3 repetitions of 2 s.
# Results in bench-results/.
# Then the scale run (bench-scale).
bench: build
	$(Q)./scripts/install-bench-deps.sh
	$(Q)$(GO) build -o build/bench ./bench
	$(Q)./build/bench $(if $(filter 1,$(QUICK)),-quick) $(BENCH_ARGS)
	$(Q)./build/bench -scale $(if $(filter 1,$(QUICK)),-quick) $(SCALE_ARGS)

# Cost as the work grows: 10, 1 000 and 100 000 concurrent keep-alive connections (base / netflow / all,
# interleaved, 3 repetitions), 1 000 new connections/s held for 3 minutes (maps, RSS, drops every 10 s), and
# the kernel state per connection (~12 min; QUICK=1: ~4 min). SCALE_ARGS: e.g. -churn 10m -scale-conns 10,50000.
bench-scale: build
	$(Q)./scripts/install-bench-deps.sh
	$(Q)$(GO) build -o build/bench ./bench
	$(Q)./build/bench -scale $(if $(filter 1,$(QUICK)),-quick) $(SCALE_ARGS)

# What each fallback hook costs against the preferred one: the kernel's own per-program run time
# (kernel.bpf_stats_enabled) under the same loopback workload, preferred / raw_tp / deepest rungs (~1 min).
bench-hooks: build
	$(Q)$(GO) build -o build/hookcost ./bench/hookcost
	$(Q)./build/hookcost $(HOOKCOST_ARGS)

fmt:
	$(Q)gofmt -w $$(git ls-files '*.go')
	$(Q)clang-format -i probes/*.bpf.c probes/*.h probes/common/*.h 2>/dev/null || true

vet:
	$(Q)$(GO) vet ./...

clean:
	$(Q)rm -rf build datakit externals/datakit-ebpf collector/bpf/obj/*.o probes/vmlinux.h
