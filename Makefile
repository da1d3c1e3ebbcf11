# Everything a fresh machine with Python 3.11 and pip needs: `make run`, `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PORT ?= 50051
.DEFAULT_GOAL := help

.PHONY: help install test lint protos check-generated run bench buf-lint buf-breaking dist docs \
	oldest clean

# `make` alone lists the targets: each documented one carries a `## what it does` comment.
help: ## list these targets
	@echo "usage: make TARGET   (PORT=50061 make run to move the sample service)"
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned dev set and this package (editable)

# The committed generated code is made by the oldest supported generator (see
# requirements-oldest.txt), in a venv of its own so the dev venv keeps the newest grpcio-tools.
CODEGEN := $(TOOLS)/codegen
$(CODEGEN)/.installed: requirements-oldest.txt
	$(PY) -m venv $(CODEGEN)
	$(CODEGEN)/bin/python -m pip install -q -r requirements-oldest.txt
	touch $@

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --no-save --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

# The Node.js client of the declared-errors interop test (tests/errors/test_declared_errors.py):
# grpc-js for the call, protobufjs-cli (pbjs) to generate the JS enums and messages from the protos.
NODE_INTEROP := $(TOOLS)/node-interop
PBJS := $(NODE_INTEROP)/node_modules/.bin/pbjs
$(PBJS):
	mkdir -p $(NODE_INTEROP)
	npm install --silent --no-save --no-audit --no-fund --prefix $(NODE_INTEROP) \
	  @grpc/grpc-js@1.14.7 protobufjs@8.8.1 protobufjs-cli@2.7.1

test: $(STAMP) redis-server curl $(PBJS) $(BUF) ## run the whole test suite (newest pinned set)
	$(BIN)/python -m pytest

# The shared rate-limit tests run a real Redis (tests/redis/); Debian's package when missing.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server could not be installed"; exit 1; }

# The TLS sample tests call the HTTPS gateway with the real curl; Debian's package when missing.
.PHONY: curl
curl:
	@command -v curl >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
	@command -v curl >/dev/null 2>&1 || { echo "curl could not be installed"; exit 1; }

# Mutation testing of the modules with the most decision logic ([tool.mutmut] in pyproject.toml):
# one line per module, `mutation: PATH KILLED/TRIED`; fails below 90% killed. Not part of
# `make test` (minutes, not seconds). See docs/contributing-tests.md.
MUTATION_MIN ?= 90
.PHONY: mutation
mutation: $(STAMP) ## mutation testing of the decision logic (minutes; fails below 90% killed)
	rm -rf mutants
	mkdir -p .build
	$(BIN)/mutmut run --max-children 2 >.build/mutmut.log 2>&1 || { tail -c 2000 .build/mutmut.log; exit 1; }
	$(BIN)/mutmut results --all true | $(BIN)/python .ci/mutation-summary --min $(MUTATION_MIN)

lint: $(STAMP) $(BUF) ## ruff, mypy --strict, buf lint + breaking, generated-code drift, dists, docs
	$(BIN)/ruff check .
	$(BIN)/mypy octollm_grpc
	$(MAKE) --no-print-directory buf-lint buf-breaking check-generated dist docs

oldest: $(STAMP) $(PBJS) $(BUF) ## the library's suite on the oldest supported set (nox -s oldest)
	$(BIN)/nox -s oldest

# The sdist and the wheel (built from that sdist, in an isolated env with the build-system
# requirements), then the metadata and README rendering check PyPI would do.
dist: $(STAMP) ## build the sdist and wheel into dist/ and check them (twine check --strict)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

docs: $(STAMP) ## build the documentation site into .build/site (warnings are errors)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .build/site

# OctoLLM's protos import google/rpc/*.proto: buf gets them from the installed
# googleapis-common-protos (staged under .build, not committed), as protoc does.
GOOGLEAPIS := .build/googleapis/.staged
$(GOOGLEAPIS): $(STAMP)
	rm -rf .build/googleapis && mkdir -p .build/googleapis/google/rpc
	cp $$($(BIN)/python -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(m.__file__))')/*.proto .build/googleapis/google/rpc/
	touch $@

buf-lint: $(BUF) $(GOOGLEAPIS) ## lint the protos (buf)
	$(BUF) lint

# Breaking-change check of the wire contract against the last commit of main.
buf-breaking: $(BUF) $(GOOGLEAPIS) ## breaking-change check of the protos against main (buf)
	./.ci/buf-breaking $(BUF)

# The library's own error protos go inside the package (with the .proto, for users' imports);
# the sample service's protos go to server/gen. Both through the same command users run.
protos: $(CODEGEN)/.installed ## regenerate octollm_grpc/_proto and server/gen (grpcio-tools 1.66)
	rm -rf .build/gen && mkdir -p .build/gen
	PYTHONPATH=. $(CODEGEN)/bin/python -m octollm_grpc generate protos --out .build/gen --package octollm_grpc._proto \
	  --no-grpc --copy-protos octollm/errors/v1/errors.proto octollm/errors/v1/options.proto >/dev/null
	if [ -d protos/octollm/tasks ]; then PYTHONPATH=. $(CODEGEN)/bin/python -m octollm_grpc generate protos --out .build/gen \
	  --package server.gen $$(cd protos && find octollm/tasks octollm/arms -name '*.proto' | sort) \
	  >/dev/null; fi
	rm -rf octollm_grpc/_proto/octollm && mv .build/gen/octollm_grpc/_proto/octollm octollm_grpc/_proto/
	if [ -d .build/gen/server/gen ]; then rm -rf server/gen && mv .build/gen/server/gen server/gen; fi

check-generated: protos ## fail if the committed generated code differs from the protos
	@if [ -n "$$(git status --porcelain -- octollm_grpc/_proto server/gen)" ]; then \
	  echo "generated code differs from the protos; run 'make protos' and commit:"; \
	  git status --porcelain -- octollm_grpc/_proto server/gen; exit 1; fi

run: $(STAMP) ## start the sample task service on 127.0.0.1:50051 (or PORT)
	$(BIN)/python -m server --port $(PORT)

bench: $(STAMP) valgrind ## run the benchmarks (instruction counts and CPU; ~15 minutes)
	$(BIN)/python -m benchmarks

# The benchmark's headline figures are instruction counts (valgrind's callgrind); Debian's
# package when missing, as for redis-server.
.PHONY: valgrind
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	@command -v callgrind_control >/dev/null 2>&1 || { echo "valgrind could not be installed"; exit 1; }

# The shared (Redis) rate limit's added latency per call next to the local one (docs/redis.md).
.PHONY: bench-redis
bench-redis: $(STAMP) redis-server ## the shared (Redis) rate limit's latency next to the local one
	$(BIN)/python -m benchmarks.ratelimit_redis

# Also what `make run` leaves: the sample's SQLite database (octollm-tasks.db, its WAL files).
clean: ## remove venvs, tools, caches, build output and the sample's database files
	rm -rf $(VENV) $(TOOLS) .build .nox dist build *.egg-info .pytest_cache .mypy_cache \
	  .ruff_cache .hypothesis mutants
	rm -f *.db *.db-journal *.db-wal *.db-shm
