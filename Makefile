.PHONY: run test lint bench chaos
run:   ## the server and an example worker on SQLite, port 9850
	scripts/dev.sh
test:  ## the whole test suite (lint, types, import contracts, pytest on PostgreSQL and SQLite)
	scripts/test.sh
bench: ## the benchmark harness against the local PostgreSQL, beside DBOS
	scripts/bootstrap.sh dev && .venv/bin/pip install -q -e ".[bench]" && .venv/bin/python -m bench
chaos: ## the chaos suite, long profile: its own PostgreSQL cluster, real processes, injected faults (AIKI_CHAOS_PROFILE=quick|long, AIKI_CHAOS_SEED)
	scripts/bootstrap.sh dev && AIKI_CHAOS_PROFILE=$${AIKI_CHAOS_PROFILE:-long} .venv/bin/python -m pytest -q -s tests/chaos
