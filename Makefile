# cuboid-ad: every target bootstraps .venv/ (a virtual environment in the checkout) on first use.
#
#   make demo                        the whole chain on the built-in synthetic example
#   make test                        the test suite
#   make extract cuboids train       DATA=folder with train/ (default: the built-in example)
#   make score VIDEO=clip.mkv        score one clip with the models in WORK
#   make evaluate                    score DATA/test against DATA/labels.json
#   make serve                       the local web app over WORK's models (the demo's by default)
#   make demo-supervised             the supervised classifier on the demo's anomaly kinds (after make demo)
#   make bench-ped2                  the quality benchmark on UCSD Ped2 (BENCH_DATA=, PRESET=, CONFIG=)
#   make bench-speed                 speed and memory figures, with the models bench-ped2 trained
#   make bench-watch                 live scoring of Ped2's test clips streamed in real time (after bench-ped2)
#   make bench-cluster               Ped2 training on a Dask LocalCluster against the joblib default, capacity table
#   make bench-supervised            the supervised classifier on Ped2 by two-fold cross-validation (after bench-ped2)
#   make bench-nuisance              camera nuisances (shake, night noise, low bit rate, ...): false events and AUC (after bench-ped2)
#   make bench-feedback              operator feedback absorbed: before and after, the update's time (after bench-ped2)
#
# Variables: DATA, WORK (default work), CONFIG (optional TOML), VIDEO, JOBS.
# The stage targets are phony on purpose: the CLI compares each output's recorded
# config and inputs (which file timestamps cannot show) and skips what is up to date.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; set TORCH= to keep a torch you installed yourself (e.g. a CUDA build).
TORCH ?= torch==2.13.0

DEMO_DATA := examples/demo-data
DATA ?= $(DEMO_DATA)
WORK ?= work
CONFIG ?=
VIDEO ?=
JOBS ?= 0

CLI := $(PY) cli.py
OPTS := --work $(WORK) $(if $(CONFIG),--config $(CONFIG)) --jobs $(JOBS)
DATA_DEP := $(if $(filter $(DEMO_DATA),$(DATA)),$(DEMO_DATA)/labels.json)

.PHONY: extract cuboids train score evaluate demo demo-supervised test clean-demo bench-ped2 bench-speed bench-watch bench-cluster bench-supervised bench-nuisance bench-feedback serve

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q '$(TORCH)')
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(DEMO_DATA)/labels.json: pipeline/media/synthetic.py | $(STAMP)
	$(CLI) demo-data --out $(DEMO_DATA)

extract: $(STAMP) $(DATA_DEP)
	$(CLI) extract --data $(DATA) $(OPTS)

cuboids: $(STAMP)
	$(CLI) cuboids --data $(DATA) $(OPTS)

train: $(STAMP)
	$(CLI) train --data $(DATA) $(OPTS)

score: $(STAMP)
	@test -n "$(VIDEO)" || { echo "usage: make score VIDEO=path/to/clip [WORK=work]"; exit 2; }
	$(CLI) score "$(VIDEO)" --work $(WORK) --heatmaps

evaluate: $(STAMP) $(DATA_DEP)
	$(CLI) evaluate --data $(DATA) --work $(WORK)

DEMO_WORK := work/demo
demo: $(STAMP) $(DEMO_DATA)/labels.json
	$(MAKE) --no-print-directory extract cuboids train evaluate DATA=$(DEMO_DATA) WORK=$(DEMO_WORK) CONFIG=configs/demo.toml
	$(CLI) score $(DEMO_DATA)/test/02.mkv --work $(DEMO_WORK) --heatmaps

# The supervised route on the demo: a classifier of its three anomaly kinds (classes/ folders), then
# one test clip classified, with the attention drawn over its most anomalous frames.
demo-supervised: $(STAMP) $(DEMO_DATA)/classes/normal
	$(CLI) supervise --data $(DEMO_DATA) --work $(DEMO_WORK) --config configs/demo.toml
	$(CLI) classify $(DEMO_DATA)/test/03.mkv --work $(DEMO_WORK) --heatmaps 3

$(DEMO_DATA)/classes/normal: pipeline/media/synthetic.py | $(STAMP)
	$(CLI) demo-data --out $(DEMO_DATA)

# The browser tests drive Debian's chromium and the MQTT test Debian's mosquitto broker; as root,
# install them when missing (else those tests skip and say why).
test: $(STAMP)
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ echo "installing chromium for the browser tests"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium: the browser tests will skip"
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ echo "installing mosquitto for the MQTT test"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; } || \
		echo "could not install mosquitto: the MQTT test will skip"
	@/usr/bin/python3 tests/pipeline/rtsp_server.py --check 2>/dev/null || \
		[ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ echo "installing GStreamer's RTSP server for the RTSP test"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good >/dev/null; } || \
		echo "could not install GStreamer's RTSP server: the RTSP test will skip"
	$(PY) -m pytest -q

# The local web app over WORK's models (default: the demo's): http://127.0.0.1:8000/
serve: $(STAMP)
	$(CLI) serve --work $(if $(filter work,$(WORK)),$(DEMO_WORK),$(WORK))

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_WORK)

# Quality benchmark: trains on BENCH_DATA/train, evaluates on BENCH_DATA/test, prints the table
# (beside the no-learning motion and speed baselines) and writes BENCH_WORK/<dataset>-<preset>/bench.json.
BENCH_DATA ?= ../shared/datasets/ucsd-ped2
BENCH_WORK ?= work/bench
PRESET ?= default
bench-ped2: $(STAMP)
	$(PY) -m bench.quality --data $(BENCH_DATA) --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET) \
		--preset $(PRESET) $(if $(CONFIG),--config $(CONFIG)) --force

# Speed and memory: medians of RUNS runs on one Ped2 test clip, with the models that
# bench-ped2 trained (run it first); a LONG-minute synthetic video for the memory figures.
RUNS ?= 5
LONG ?= 30
bench-speed: $(STAMP)
	@test -f $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/models/manifest.json || \
		{ echo "no models in $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET): run make bench-ped2 first"; exit 2; }
	$(PY) -m bench.speed --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET) \
		--clip $(BENCH_DATA)/test/04.mkv --runs $(RUNS) --long-minutes $(LONG)

# Live: the Ped2 test clips joined and served in real time by a local ffmpeg stream server,
# watched with the models bench-ped2 trained; latency, drops, CPU, and unpaced fps.
bench-watch: $(STAMP)
	@test -f $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/models/manifest.json || \
		{ echo "no models in $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET): run make bench-ped2 first"; exit 2; }
	$(PY) -m bench.watch --data $(BENCH_DATA) --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)

# Cluster: Ped2's 12 regions trained twice from scratch, 2 at a time x 1 torch thread, in joblib
# threads and on a Dask LocalCluster (2 workers x 1 thread): overhead ratio, bit-identity,
# scoring on the cluster, and a capacity table for 10 / 100 / 1,000 cameras (docs/cluster.md).
bench-cluster: $(STAMP)
	$(PY) -m bench.cluster --data $(BENCH_DATA) --work $(BENCH_WORK)/cluster

# Supervised: the classifier trained on half of the labelled test clips and scored on the other half,
# then the other way round, beside (and fused with) the unsupervised models bench-ped2 evaluated.
bench-supervised: $(STAMP)
	@test -f $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/eval/metrics.json || \
		{ echo "no evaluation in $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET): run make bench-ped2 first"; exit 2; }
	$(PY) -m bench.supervised --data $(BENCH_DATA) --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-supervised \
		--eval $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/eval $(if $(CONFIG),--config $(CONFIG))

# Camera nuisances: Ped2's clips with shake, night noise, low bit rates, exposure and infrared switches, flicker
# and rain, scored by the models bench-ped2 trained: false events a minute and test AUC beside the clean figures.
bench-nuisance: $(STAMP)
	@test -f $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/models/manifest.json || \
		{ echo "no models in $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET): run make bench-ped2 first"; exit 2; }
	$(PY) -m bench.nuisance --data $(BENCH_DATA) --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)

# Operator feedback: a false alarm under a nuisance marked as normal and absorbed; the marked stretch, other
# footage with the nuisance and Ped2's test clips before and after, the update's time (on a copy of the models).
bench-feedback: $(STAMP)
	@test -f $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET)/models/manifest.json || \
		{ echo "no models in $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET): run make bench-ped2 first"; exit 2; }
	$(PY) -m bench.feedback --data $(BENCH_DATA) --work $(BENCH_WORK)/$(notdir $(abspath $(BENCH_DATA)))-$(PRESET) --time-runs 3
