# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo demo-live bench fuzz soak chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Three local peers tell the mesh's story by themselves, then print transcripts.
demo: $(STAMP)
	$(PY) -m chat.demo

# The same three peers, interactive, in three tmux panes.
demo-live: $(STAMP)
	@command -v tmux >/dev/null || { echo "demo-live needs tmux (Debian: apt-get install tmux)"; exit 1; }
	@set -e; p=$$(echo "$${PORTS:-8080 8081 8082}" | tr , " "); set -- $$p; \
	tmux new-session -d -s trio-chat-demo -x 200 -y 50 "$(VENV)/bin/trio-chat peer $$1 --host 127.0.0.1 --name A"; \
	tmux split-window -h -t trio-chat-demo "sleep 0.5; $(VENV)/bin/trio-chat peer $$2 --host 127.0.0.1 127.0.0.1:$$1 --name B"; \
	tmux split-window -h -t trio-chat-demo "sleep 1; $(VENV)/bin/trio-chat peer $$3 --host 127.0.0.1 127.0.0.1:$$2 --name C"; \
	tmux select-layout -t trio-chat-demo even-horizontal; \
	echo "Three peers A, B, C in tmux session trio-chat-demo."; \
	echo "Type in a pane and press Enter; switch panes with Ctrl+B then an arrow key."; \
	echo "Leave a peer with /exit or Ctrl+D; leave tmux with Ctrl+B then d."; \
	echo "Come back to it with: tmux attach -t trio-chat-demo"; \
	if [ -t 0 ]; then tmux attach -t trio-chat-demo; fi

# Benchmarks (not part of make test): hub vs. the asyncio reference relay,
# W1-W6; prints a table and writes docs/benchmarks.md. W6 profiles with py-spy.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py

# The live-node fuzzer with many more examples than make test runs (2000).
FUZZ_EXAMPLES ?= 50000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# Reliability soak (not in make test): 10 min of kills, restarts, SIGSTOP cuts and
# slow consumers; fails on a delivery error or >20% RSS growth. SOAK_MINUTES=2: quick.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) tests/soak.py --minutes $(SOAK_MINUTES)

# A longer chaos run than the one in make test.
chaos: $(STAMP)
	$(PY) tests/chaos.py --seconds 120

lint: $(STAMP)
	$(VENV)/bin/ruff check chat tests benchmarks
	$(VENV)/bin/ruff format --check chat tests benchmarks
	$(VENV)/bin/mypy --strict

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
