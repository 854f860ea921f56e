# The two commands of README.rst:  make run  (the service on SQLite)  and  make test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-cluster bench bench-cassandra bench-scale bench-cluster clean

$(BIN)/twistd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,cassandra]' --config-settings editable_mode=compat
	touch $@

setup: $(BIN)/twistd

# The service on the embedded SQLite store, development configuration, port 5000.
run: setup
	$(BIN)/twistd -n --pidfile= queuey $(if $(CONFIG),--config $(CONFIG)) --port $(or $(PORT),tcp:5000:interface=127.0.0.1)

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

# The queue directory with a million queues on one node (about an hour), and 1 vs 2 queuey on three nodes.
bench-scale: setup
	$(BIN)/python bench/scale_bench.py

bench-cluster: setup
	$(BIN)/python bench/cluster_bench.py

clean:
	rm -rf $(VENV) var _trial_temp*
