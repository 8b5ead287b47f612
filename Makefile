# `make demo`: install, then run every stage on the built-in demo data and print a playlist.
# `make test`: install, then lint and run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TITLE ?= 深夜emo 🌙

.PHONY: install demo test mpd clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) prepare_data.py --source=demo
	$(PY) train_rq_kmeans.py
	$(PY) debug_collisions.py
	$(PY) prepare_corpus.py
	$(PY) train_tiger.py
	$(PY) evaluate_tiger.py
	$(PY) generate_playlist.py --title "$(TITLE)"

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

clean:
	rm -rf data outputs models
