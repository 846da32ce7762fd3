# eventsourced: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo

.PHONY: all build run test fuzz lint clean

all: build

build:
	$(CARGO) build --release

## Builds and serves on 127.0.0.1:2069, starting a private RabbitMQ when none answers.
run: build
	scripts/run

## Every test, against a private RabbitMQ started and stopped for the run.
test:
	scripts/test

## The property tests with many more random cases (a few minutes).
fuzz:
	EVENTSOURCED_PROPERTY_CASES=$${EVENTSOURCED_PROPERTY_CASES:-2000000} $(CARGO) test --release --bin eventsourced properties

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
