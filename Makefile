.PHONY: setup start test lint format generate bench replay build clean

## Installs what is missing, and the git pre-commit hook (format, lint, typecheck of staged files).
setup:
	@bash scripts/setup.sh
	@bash scripts/hooks/install.sh

build: setup
	@npm run --silent build

## Trains a model on the shipped data if none is registered, then serves on $PORT (default 8080).
start: build
	@node dist/cli/bikeshare.js serve

## The whole suite: lint, typecheck, buf lint, generated-code check, unit and integration tests.
test: setup
	@bash scripts/setup.sh --test-tools
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

## Replays 2012 through fresh servers with and without automatic retraining; writes docs/replay/.
replay: build
	@node dist/cli/bikeshare.js replay --out docs/replay
