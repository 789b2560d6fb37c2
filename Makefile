.PHONY: setup start train test lint format generate bench build clean

setup:
	@bash scripts/setup.sh

build: setup
	@npm run --silent build

## Trains a model on the shipped data if none is registered, then serves on $PORT (default 8080).
start: build
	@node dist/cli/bikeshare.js serve

train: build
	@node dist/cli/bikeshare.js train

## The whole suite: lint, typecheck, buf lint, generated-code check, unit and integration tests.
test: setup
	@bash scripts/test.sh

lint: setup
	@npm run --silent lint
	@npm run --silent check:generated

format:
	@npm run --silent format

generate:
	@npm run --silent generate

bench: build
	@npm run --silent bench

clean:
	rm -rf dist core/xgboost/build bench/out
