# Everything a fresh machine with Python 3.11 and pip needs: `make run`, `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PORT ?= 50051

.PHONY: install test lint protos check-generated run bench bench-smoke buf-lint buf-breaking clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --no-save --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

test: $(STAMP) redis-server
	$(BIN)/python -m pytest

# The shared rate-limit tests run a real Redis (tests/redis/); Debian's package when missing.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server could not be installed"; exit 1; }

# Mutation testing of the modules with the most decision logic ([tool.mutmut] in pyproject.toml):
# one line per module, `mutation: PATH KILLED/TRIED`; fails below 90% killed. Not part of
# `make test` (minutes, not seconds). See docs/contributing-tests.md.
MUTATION_MIN ?= 90
.PHONY: mutation
mutation: $(STAMP)
	rm -rf mutants
	mkdir -p .build
	$(BIN)/mutmut run --max-children 2 >.build/mutmut.log 2>&1 || { tail -c 2000 .build/mutmut.log; exit 1; }
	$(BIN)/mutmut results --all true | $(BIN)/python .ci/mutation-summary --min $(MUTATION_MIN)

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/mypy octollm_grpc
	$(MAKE) --no-print-directory buf-lint buf-breaking check-generated

# OctoLLM's protos import google/rpc/*.proto: buf gets them from the installed
# googleapis-common-protos (staged under .build, not committed), as protoc does.
GOOGLEAPIS := .build/googleapis/.staged
$(GOOGLEAPIS): $(STAMP)
	rm -rf .build/googleapis && mkdir -p .build/googleapis/google/rpc
	cp $$($(BIN)/python -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(m.__file__))')/*.proto .build/googleapis/google/rpc/
	touch $@

buf-lint: $(BUF) $(GOOGLEAPIS)
	$(BUF) lint

# Breaking-change check of the wire contract against the last commit of main.
buf-breaking: $(BUF) $(GOOGLEAPIS)
	./.ci/buf-breaking $(BUF)

# The library's own error protos go inside the package (with the .proto, for users' imports);
# the sample service's protos go to server/gen. Both through the same command users run.
protos: $(STAMP)
	rm -rf .build/gen && mkdir -p .build/gen
	$(BIN)/octollm-grpc generate protos --out .build/gen --package octollm_grpc._proto \
	  --no-grpc --copy-protos octollm/errors/v1/errors.proto >/dev/null
	if [ -d protos/octollm/tasks ]; then $(BIN)/octollm-grpc generate protos --out .build/gen \
	  --package server.gen $$(cd protos && find octollm/tasks octollm/arms -name '*.proto' | sort) \
	  >/dev/null; fi
	rm -rf octollm_grpc/_proto/octollm && mv .build/gen/octollm_grpc/_proto/octollm octollm_grpc/_proto/
	if [ -d .build/gen/server/gen ]; then rm -rf server/gen && mv .build/gen/server/gen server/gen; fi

check-generated: protos
	@if [ -n "$$(git status --porcelain -- octollm_grpc/_proto server/gen)" ]; then \
	  echo "generated code differs from the protos; run 'make protos' and commit:"; \
	  git status --porcelain -- octollm_grpc/_proto server/gen; exit 1; fi

run: $(STAMP)
	$(BIN)/python -m server --port $(PORT)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The shared (Redis) rate limit's added latency per call next to the local one (docs/redis.md).
.PHONY: bench-redis
bench-redis: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.ratelimit_redis

clean:
	rm -rf $(VENV) $(TOOLS) .build .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants
