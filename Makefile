# MultiModule. `make run` runs the seed example; `make test` runs every test.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
STATE_DIR   ?= ./state
# `make run` has a transit dir (and so control queue) of its own: two
# checkouts running it side by side never meet.
TRANSIT_DIR ?= ./.transit
BENCHTIME   ?= 4000000x
# make install puts multimodule, mmctl and the example daemon (as
# multimodule-counter) in $(DESTDIR)$(PREFIX)/bin.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
# Every input the daemon takes from outside: config files, messages,
# spill references, Router routes and messages, state files.
# Each fuzz target with how many inputs CI tries (about 10 s each on a
# 2-core box): a count, not a duration, because with a duration Go 1.26's
# fuzzing coordinator can fail a clean run with "context deadline
# exceeded" as the time runs out. FUZZTIME (say 10m) overrides them all.
FUZZ        := ./schema:FuzzLoad:4000x ./transit:FuzzCodec:100000x ./transit:FuzzEncode:400000x \
               ./transit:FuzzSpillReference:250000x ./transit:FuzzIPCTransit:400000x \
               ./tasks/router:FuzzRouter:300000x ./statestore:FuzzDecode:500000x

.PHONY: all build install run test vet lint bench fuzz soak tidy clean

all: build

# The first build downloads the modules in go.sum (CUE, Prometheus, bbolt,
# gopsutil, ~50 MB) and compiles CUE: a few minutes on a small box, with
# nothing printed while the compiler works. Later builds take seconds.
build:
	@test -d "$$($(GO) env GOMODCACHE)/cuelang.org" || \
		echo "first build: downloading modules and compiling CUE, a few minutes on a 2-core box..."
	$(GO) build -o bin/multimodule ./cmd/multimodule
	$(GO) build -o bin/mmctl ./cmd/mmctl
	$(GO) build -o bin/counter ./examples/counter

install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 bin/multimodule $(DESTDIR)$(BINDIR)/multimodule
	install -m 0755 bin/mmctl $(DESTDIR)$(BINDIR)/mmctl
	install -m 0755 bin/counter $(DESTDIR)$(BINDIR)/multimodule-counter

# The seed example: Example1 -> Router -> Example2, state in $(STATE_DIR).
# Ctrl-C stops it in order; run it again and the count goes on.
run: build
	./bin/counter -c examples/counter/config -s $(STATE_DIR) -T $(TRANSIT_DIR) -p examples

test: vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

lint: vet
	$(GO) run $(STATICCHECK) ./...

# Each fuzz target for its count (above), or for FUZZTIME (`make fuzz
# FUZZTIME=10m` for a real run). A failing input is saved under the
# package's testdata/fuzz.
fuzz:
	@for t in $(FUZZ); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$(or $(FUZZTIME),$${rest#*:}); \
		echo "fuzz $$pkg $$name $$n"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$n $$pkg || exit 1; \
	done

# Each benchmark prints its figure next to a raw baseline from the same run
# (in-process delivery vs a bare Go channel, cross-process vs a bare
# msgsnd/msgrcv loop, ...); internal/benchreport runs them all and writes
# the table to BENCHMARKS.md. About ten minutes.
bench:
	$(GO) run ./internal/benchreport -o BENCHMARKS.md

# The test fixture in testdata/extprog is a module of its own that imports
# this one: tidy both when dependencies change.
# Traffic through internal and external tasks while externals and the
# daemon are killed with SIGKILL, tasks flip, configs break and queues
# fill; then: nothing lost, state back at most one save interval, nothing
# leaked. About ten minutes; not in CI. SOAKTIME=2m for a short one.
SOAKTIME ?= 10m
soak:
	$(GO) run ./internal/soak -duration $(SOAKTIME)

tidy:
	$(GO) mod tidy
	cd testdata/extprog && $(GO) mod tidy
	cd bench/peers && $(GO) mod tidy

# The queues go first: a kernel queue whose key file is gone stays in the
# kernel, out of reach of everything but ipcrm. A queue a running daemon
# serves is kept, and make stops.
clean:
	if [ -d $(TRANSIT_DIR) ]; then $(GO) run ./cmd/mmctl -T $(TRANSIT_DIR) queues rm --all; fi
	rm -rf bin $(TRANSIT_DIR)
