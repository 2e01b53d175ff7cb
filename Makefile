# Drive: `make run` (venv, install, migrate, web + worker + scheduler) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
export FLASK_APP := wsgi.py

.PHONY: install migrate run test bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

migrate: install
	$(BIN)/flask db upgrade
	$(BIN)/flask pools ensure-default

run: migrate
	$(BIN)/flask serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install  # by hand only: never part of `make test`
	$(BIN)/python bench/upload_throughput.py
	$(BIN)/python bench/concurrent_uploads.py
	$(BIN)/python bench/event_latency.py
	$(BIN)/python bench/event_latency.py --with-uploads

clean:
	rm -rf $(VENV) instance .pytest_cache
