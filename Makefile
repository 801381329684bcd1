# The two commands a newcomer needs are `make run` and `make test`.
# Everything else here is for people working on forcelink itself.

PY := .venv/bin/python
SERVICES := $(PY) scripts/services.py

.PHONY: help install run test test-fast services services-down check format bench clean

help:
	@echo "make run            install, start local Postgres + the local org, sync until Ctrl-C"
	@echo "make test           install, start Postgres/Kafka/S3, run the whole test suite"
	@echo "make services       start the backing services and print their URLs as exports"
	@echo "make services-down  stop them"
	@echo "make check          ruff format --check, ruff lint, mypy --strict"
	@echo "make format         rewrite the code with ruff format"
	@echo "make bench          run the benchmarks under bench/ (prints figures)"

install:
	@scripts/install.sh

run: install
	@$(PY) scripts/run_local.py

test: install
	@$(SERVICES) up >/dev/null
	@eval "$$($(SERVICES) env)" && $(PY) -m pytest $(PYTEST_ARGS)

services: install
	@$(SERVICES) up

services-down:
	@$(SERVICES) down

check: install
	$(PY) -m ruff format --check forcelink connector processors api emulator migrations tests bench scripts
	$(PY) -m ruff check forcelink connector processors api emulator migrations tests bench scripts
	$(PY) -m mypy

format:
	$(PY) -m ruff format forcelink connector processors api emulator migrations tests bench scripts
	$(PY) -m ruff check --fix forcelink connector processors api emulator migrations tests bench scripts

bench: install
	@$(SERVICES) up >/dev/null
	@test -d bench/debezium/target/lib || mvn -q -B -f bench/debezium/pom.xml package
	@eval "$$($(SERVICES) env)" && for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean: services-down
	rm -rf .services .forcelink
