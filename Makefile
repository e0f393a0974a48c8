GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build test vet bench clean

build:
	$(GO) build -o bin/ferry ./cmd/ferry

vet:
	$(GO) vet ./...

# All tests: unit, integration against real ipykernels and jupyter-server,
# the Jupyter conformance suite, nbclient and the terminal console.
test: build vet
	$(GO) test -count=1 -timeout 25m ./...

bench: build
	./bin/ferry bench overhead

clean:
	rm -rf bin
