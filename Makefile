# txcoord. `make run` starts a local 3-node cluster with demo participants and sends sample
# transactions through it; `make test` runs every test with the race detector.
GO      ?= go
BIN     := bin/txcoord
PKGS    := ./...

.PHONY: all build run test test-short lint fmt smoke clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/txcoord

run: build
	./$(BIN) dev --scenarios commit,nack,timeout

test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# The main job end to end, exiting after the sample transactions (used by CI).
smoke: build
	./$(BIN) dev --once --scenarios commit,nack,timeout --http-port 0 --raft-port 0 --participant-port 0

clean:
	rm -rf bin

# Chaos run on real processes (issue 4): `make chaos` is the CI run (2 minutes, >= 20 leader
# kills); `make chaos CHAOS_DURATION=30s NODES=5` the short 5-node variant; CHAOS_SEED repeats one.
.PHONY: chaos
chaos:
	scripts/chaos.sh $(or $(CHAOS_DURATION),2m) $(CHAOS_SEED)
