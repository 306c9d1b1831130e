.PHONY: run test lint bench
run:   ## the server and an example worker on SQLite, port 9850
	scripts/dev.sh
test:  ## the whole test suite (lint, types, import contracts, pytest on PostgreSQL and SQLite)
	scripts/test.sh
bench: ## the benchmark harness against the local PostgreSQL, beside DBOS
	scripts/bootstrap.sh dev && .venv/bin/pip install -q -e ".[bench]" && .venv/bin/python -m bench
