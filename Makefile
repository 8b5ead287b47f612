# `make demo`: install, then run every stage on the built-in demo data and print a playlist.
# `make test`: install, then lint and run the test suite.
# The demo world lives in demo/ (demo/data, demo/outputs, demo/models): data/ is for your own CSVs, and
# `make clean` removes only what the project generated (the demo world and caches), never data/, outputs/, models/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TITLE ?= 深夜emo 🌙
DEMO := --data_dir=demo/data --output_dir=demo/outputs --model_dir=demo/models

.PHONY: install demo test mpd clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) prepare_data.py --source=demo $(DEMO)
	$(PY) train_rq_kmeans.py $(DEMO)
	$(PY) debug_collisions.py $(DEMO)
	$(PY) prepare_corpus.py $(DEMO)
	$(PY) train_tiger.py $(DEMO)
	$(PY) evaluate_tiger.py $(DEMO)
	$(PY) generate_playlist.py $(DEMO) --title "$(TITLE)"

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

clean:
	rm -rf demo .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
