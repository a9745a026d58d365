# The project's front door. Every target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DATA_DIR ?= $(or $(ECG_DATA_DIR),../shared/data/mitdb)

.PHONY: venv test lint system-deps eval-qrs train eval-model bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Mosquitto, Prometheus and Chromium from Debian's packages (the tests run the real ones).
system-deps:
	bash scripts/install-system-deps.sh

test: venv system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

eval-qrs: venv
	$(PY) -m detector.evaluate_qrs --data-dir $(DATA_DIR) $(if $(RECORDS),--records $(RECORDS)) --out $(or $(OUT),reports/qrs.json)

# Beat model: train on DS1 (writes models/artifacts/), then evaluate on DS2 with figures.
train: venv
	$(PY) -m models.train --data-dir $(DATA_DIR)
	$(PY) -m models.classify --data-dir $(DATA_DIR)
	$(PY) -m models.evaluate --data-dir $(DATA_DIR) --out reports/model.json --figures reports --benchmark-out models/artifacts/benchmark.json --metrics-out models/artifacts/metrics.json

# Beat classes (the live classifier, offline): EC57 gross VEB/SVEB Se and +P, default DS2.
.PHONY: eval-classes
eval-classes: venv
	$(PY) -m models.evaluate_classes --data-dir $(DATA_DIR) $(if $(RECORDS),--records $(RECORDS)) --out $(or $(OUT),reports/classes.json)

eval-model: venv
	$(PY) -m models.evaluate --data-dir $(DATA_DIR) $(if $(RECORDS),--records $(RECORDS)) --out $(or $(OUT),reports/model.json)

# Arrhythmia analysis, measured (not a test): the live chain offline (streamer chunks -> detector
# engine -> alerting core, a nurse acknowledging after 30 s) on every annotated record of DATA_DIR,
# scored against the reference (EC57 beats, VT/VF/AF/SVT episodes, alarms): reports/arrhythmia.json.
# cudb: make eval-arrhythmia DATA_DIR=../shared/data/cudb OUT=reports/arrhythmia-cudb.json
# Noise stress (nstdb recipe, em and ma noise at 12, 6 and 0 dB on MIT-BIH 100, 118, 119
# unless RECORDS says otherwise): make eval-noise -> reports/arrhythmia-noise.json
.PHONY: eval-arrhythmia eval-noise
eval-arrhythmia: venv
	$(PY) -m bench.arrhythmia --data-dir $(DATA_DIR) $(if $(RECORDS),--records $(RECORDS)) --out $(or $(OUT),reports/arrhythmia.json)

eval-noise: venv
	$(PY) -m bench.arrhythmia --data-dir $(DATA_DIR) $(if $(RECORDS),--records $(RECORDS)) --noise em,ma --snr-db 12,6,0 --out $(or $(OUT),reports/arrhythmia-noise.json)

# Benchmark, not a test: mosquitto + detector + a real-time load generator on this machine;
# finds the most beds sustained in real time and writes reports/bench.json (see bench/).
bench: venv system-deps
	$(PY) -m bench --data-dir $(DATA_DIR) --out $(or $(OUT),reports/bench.json)

# Benchmark, not a test: the detector on the NATS bus (3 NATS nodes, 1/2/4 workers, kill -9
# failover, the engine hop next to Mosquitto): reports/cluster.json (docs/scaling.md).
.PHONY: bench-cluster
bench-cluster: venv system-deps
	$(PY) -m bench.cluster --data-dir $(DATA_DIR) --out $(or $(OUT),reports/cluster.json)

# Benchmark, not a test: alarm timing through the detector and the policy, alarm load on the
# MIT-BIH records, dashboard latency (real broker, service, headless chromium): reports/alarms.json.
.PHONY: bench-alarms
bench-alarms: venv
	$(PY) -m bench.alarms --data-dir $(DATA_DIR) --dashboard --chunk-sweep --out $(or $(OUT),reports/alarms.json)

# A simulated ward on this machine: an MQTT broker (Mosquitto where installed, else embedded),
# the streamer (8 MIT-BIH beds; BEDS=100,203 SPEED=10 to change), the detector and the alerting
# service. Prints the dashboard URL with its token and every /metrics URL; Ctrl-C stops it all.
.PHONY: ward
ward: venv
	$(PY) scripts/ward.py --data-dir $(DATA_DIR) $(if $(BEDS),--beds $(BEDS)) $(if $(SPEED),--speed $(SPEED))

# Not a test: a bounded fuzz run (issue 10). Every decoder, the upload parser and both message
# handlers in process (mutations and hypothesis), then the real services over a real Mosquitto
# and HTTP with hostile input while a real record streams: reports/fuzz.json (docs/security.md).
.PHONY: fuzz
fuzz: venv
	$(PY) -m fuzz --data-dir $(DATA_DIR) --out $(or $(OUT),reports/fuzz.json)
