GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build test test-short vet bench clean

# The core packages, also tested under the race detector: the ones of
# CORE that exist (go list names only packages with Go files, so a core
# package still to come does not break the build).
MODULE := github.com/ferry-nb/ferry
CORE := wire kernel client policy state agent location transfer recovery thinktime files recall backend/backendtest
RACE_PKGS = $(filter $(addprefix $(MODULE)/internal/,$(CORE)),$(shell PATH="$(PATH)" $(GO) list ./internal/...))

build:
	$(GO) build -o bin/ferry ./cmd/ferry

vet:
	$(GO) vet ./...

# All tests: unit, integration against real ipykernels and jupyter-server,
# the Jupyter conformance suite, nbclient, the terminal console and the
# classic Notebook in headless Chromium (internal/browser); then
# the core packages' fast layer again under the race detector.
test: build vet
	$(GO) test -count=1 -timeout 40m ./...
	$(GO) test -race -count=1 -short $(RACE_PKGS)

# The dev loop: unit tests and a few quick real-kernel smoke tests; the
# slow integration suites skip, each saying so (go test -v shows why).
test-short:
	$(GO) test -short ./...

bench: build
	./bin/ferry bench overhead

clean:
	rm -rf bin
