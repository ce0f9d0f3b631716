# FERS for QGIS. `make demo` and `make test` install what is missing (apt packages as root,
# the .venv) and then run; both are idempotent.
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint package weights bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	$(PY) -m pytest test

# The suite without the tests marked slow (dialogs, qgis_process, Dask, training, real scenes): a check while editing.
test-fast: setup
	.venv/bin/ruff check .
	$(PY) -m pytest test -m "not slow"

lint: setup
	.venv/bin/ruff check .

package:
	@$(PY) scripts/package.py

# Train the bundled models from ../shared (under 60 min on 2 CPU cores): weights/fers_default.pt (both
# branches) and the default ensemble's spectral members weights/fers_spectral100.pt and fers_spectral200.pt.
weights: setup
	$(PY) scripts/train_default.py
	$(PY) scripts/train_members.py

clean:
	rm -rf demo dist .qgis-profile .plugins .run .pytest_cache
