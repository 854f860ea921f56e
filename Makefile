# The two commands of README.rst:  make run  (the service on SQLite)  and  make test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-cluster bench bench-cassandra bench-abuse bench-streams clean

$(BIN)/twistd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/pip install -q -e '.[test,cassandra]'
	touch $@

setup: $(BIN)/twistd

# The service on the embedded SQLite store, development configuration, port 5000.
run: setup
	$(BIN)/twistd -n --pidfile= queuey $(if $(CONFIG),--config $(CONFIG)) --port $(or $(PORT),tcp:5000:interface=127.0.0.1:backlog=4096)

# Everything: installs what is missing, starts ZooKeeper and Cassandra, runs trial, stops them.
test: setup
	scripts/run-tests.sh

# The slower Cassandra failure tests on a 3-node cluster (CI runs them too).
test-cluster: setup
	scripts/run-cluster-tests.sh

bench: setup
	$(BIN)/python bench/http_bench.py

bench-cassandra: setup
	$(BIN)/python bench/cassandra_bench.py

# Server memory while clients abuse it (docs/api.rst, Limits).
bench-abuse: setup
	$(BIN)/python bench/abuse_bench.py

# Event-stream fan-out: 1,000 streams on one queue, p50/p99 from post to event (bench/README.rst).
bench-streams: setup
	$(BIN)/python bench/stream_bench.py

# Removes what this checkout made. The first runs also filled caches outside it,
# shared by every checkout, which it names and leaves alone.
clean:
	rm -rf $(VENV) var _trial_temp*
	@echo "Left alone, shared by every checkout (remove them by hand to fetch anew):"
	@echo "  ~/.cache/queuey   Cassandra and ZooKeeper as fetched by scripts/ (rm -rf ~/.cache/queuey)"
	@echo "  ~/.m2/repository  Maven's copy of the jars they came from (rm -rf ~/.m2/repository)"
	@echo "  ~/.cache/pip      pip's download cache (pip cache purge)"
