# The two entry points of the README. Both install what they need first (hack/install.sh).
SAMPLE := tests/data/kepler-metrics/prom_response_2023.json
DEMO := data/demo

.PHONY: demo test install
install:
	bash hack/install.sh

# Train every trainer on every feature group of a bundled real Kepler dump (rapl and acpi), publish the
# pipeline (with its report page), then estimate power with the best model: no cluster, no Prometheus.
# `kepler-model report` rebuilds the page from the published folder and prints its path and size.
demo: install
	kepler-model train -v -i $(SAMPLE) -p demo -e rapl-sysfs,acpi --data-path $(DEMO)
	kepler-model estimate -v -i $(SAMPLE) -p demo -e rapl-sysfs --data-path $(DEMO)
	kepler-model report -p demo --data-path $(DEMO)
	@echo "pipeline: $(DEMO)/models/demo   estimation: $(DEMO)/output/estimation_result.csv"
	@echo "reports (open in a browser, offline): $(DEMO)/models/demo/report.html   $(DEMO)/output/report.html"

# Lint and type-check first (configured in pyproject.toml): seconds, and a finding fails before the long suite.
test:
	bash hack/install.sh --test
	python3 -m ruff check .
	python3 -m mypy
	python3 -m pytest -q
