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

# Train the bundled default model weights/fers_default.pt from ../shared (under 60 min on 2 CPU cores),
# and write the default ensemble's random-init member weights/fers_random200.pt (seconds).
weights: setup
	$(PY) scripts/train_default.py
	$(PY) scripts/make_ensemble_member.py

clean:
	rm -rf demo dist .qgis-profile .plugins .run .pytest_cache
