# originlens: true client addresses through AWS Global Accelerator and an NLB.
# `make help` lists the targets.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
TEST_FLAGS ?= -race -count=1 -timeout 25m
# gotestsum runs go test, keeps its output (the ok/FAIL lines) and ends with
# the list of skipped tests and their reasons. Pinned; fetched from the Go
# module proxy on first use.
GOTESTSUM_VERSION := v1.13.0
GOTESTSUM ?= $(GO) run gotest.tools/gotestsum@$(GOTESTSUM_VERSION)
# The run as go test -json: .ci/run checks its skips with cmd/skipcheck.
TEST_JSON ?= $(or $(TESTOUTPUT),testoutput)/go-test.json

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/app, bin/ingest, bin/nc-probe (and the dev tools), static like the release
	@mkdir -p $(BIN)
	@for d in cmd/*/; do n=$$(basename $$d); \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$n ./$$d || exit 1; done

.PHONY: demo
demo: build ## run the whole pipeline locally on embedded defaults (Ctrl-C stops it)
	@./scripts/demo.sh

.PHONY: test
test: ## run every test; ends with the skipped tests and why (a missing tool or root)
	@mkdir -p $(dir $(TEST_JSON))
	$(GOTESTSUM) --format standard-quiet --jsonfile $(TEST_JSON) -- $(TEST_FLAGS) $(PKGS)

.PHONY: e2e
e2e: ## run the network-namespace end-to-end test of the blog topology (root)
	$(GO) test -count=1 -v -timeout 10m ./test/e2e/...

.PHONY: lint
lint: ## go vet and gofmt check
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$spec/*_test.go | cut -d' ' -f2); do \
			echo "== $$spec $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime $${FUZZMINTIME:-5s} $$spec || exit 1; \
		done; done

.PHONY: bench
bench: ## Go micro-benchmarks (benchstat-friendly)
	$(GO) test -run '^$$' -bench . -benchmem -count $${COUNT:-1} $(PKGS)

.PHONY: bench-peer
bench-peer: build ## app vs nginx stream+geoip2 on loopback (needs nginx; see BENCHMARKS.md)
	@./scripts/bench-peer.sh

.PHONY: bench-relay
bench-relay: build ## app relay vs HAProxy usesrc clientip and nginx proxy_bind transparent (root; see BENCHMARKS.md)
	$(GO) build -o $(BIN)/bench-relay ./bench/relay
	./$(BIN)/bench-relay -app $(BIN)/app $(BENCH_RELAY_FLAGS)

.PHONY: package
package: ## build the Linux amd64 release tarball for the CloudFormation stack
	@./scripts/package.sh

.PHONY: clean
clean: ## remove build outputs
	rm -rf $(BIN) dist
