# Entry points. The README's two commands are `make up` and `make test`.
SHELL := /bin/bash
MUSL := target/x86_64-unknown-linux-musl/release

.PHONY: help setup images up down test fmt lint bench e2e clean

help:
	@echo "make up     - set up this machine, build the images, bring up the example bottle"
	@echo "make down   - stop the example bottle and remove what it created"
	@echo "make test   - every check and test (what CI runs)"
	@echo "make bench  - run every benchmark under bench/ and update bench/RESULTS.md"
	@echo "make fmt | lint | images"

setup:
	scripts/setup.sh

images: setup
	scripts/images.sh

up: images
	$(MUSL)/control-plane up

down:
	$(MUSL)/control-plane down example

test:
	scripts/test.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

e2e: images
	cargo nextest run -p e2e --profile ci

bench: setup
	@set -e; for b in bench/*.sh; do echo "==> $$b"; bash "$$b"; done

clean:
	cargo clean
