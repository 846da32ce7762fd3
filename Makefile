# eventsourced: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo

.PHONY: all build run test bench soak fuzz lint audit msrv static static-aarch64 static-armv7 static-armv6 test-static clean

all: build

build:
	$(CARGO) build --release

## Builds and serves on 127.0.0.1:2069, starting a private RabbitMQ when none answers.
run: build
	scripts/run

## Every test, against a private RabbitMQ started and stopped for the run.
test:
	scripts/test

.PHONY: test-cluster bench-failover

## The cluster tests (tests/cluster.rs): several instances on a private three-node RabbitMQ
## cluster started and stopped for the run (quorum queues, nodes killed while clients stream).
test-cluster:
	scripts/test-cluster

## The failover figures on a private three-node cluster (ROUNDS=3): the pause clients see when
## the node leading their queue, or the node their stream's connection is on, is SIGKILLed.
bench-failover:
	scripts/bench-failover

## The release server against a private broker, side by side with a raw AMQP consumer: one table
## (BEFORE=REV adds an earlier commit's build beside this one's); then the AMQP frame parser
## alone, today's codec beside that of BEFORE (default: the commit before amq-protocol 10).
bench:
	scripts/bench
	scripts/bench-codec

## The static build (made first) under 500 streams for 30 minutes (SOAK_MINUTES=5 for five) with
## clients dropping and a broker restart, the server under a 256M memory cgroup; fails on growth
## or a lost/repeated message.
## Writes target/soak/soak.csv and soak.png. Not part of CI.
soak:
	scripts/soak

## The property tests with many more random cases (a few minutes); a failure is shrunk and its
## seed saved in proptest-regressions/, which every later run tries first.
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-200000} $(CARGO) test --release --lib property_tests

## Fully static musl binaries (dist/eventsourced-x86_64, -aarch64, -armv7, -armv6), built with
## Debian's Rust toolchain; installs what it needs when missing and run as root.
static:
	scripts/build-static x86_64

static-aarch64:
	scripts/build-static aarch64

static-armv7:
	scripts/build-static armv7

static-armv6:
	scripts/build-static armv6

## The static binaries are static, serve from an empty root, run under qemu; the unit verifies;
## where podman exists, the image builds and runs for each architecture.
test-static:
	scripts/test-static

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Cargo.lock against the RustSec advisories copied in vendor/advisory-db (no network) and the
## bans in deny.toml: fails on a vulnerable or unmaintained crate deny.toml does not excuse.
audit:
	scripts/audit

## The declared rust-version builds the project from Cargo.lock (rustup fetches it if missing).
msrv:
	scripts/msrv

clean:
	$(CARGO) clean
