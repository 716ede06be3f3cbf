# glsim_pl — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -c constraints.txt
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if missing) and install the package with dev tools

train: $(STAMP) ## the embedded default: GLSim on the synthetic fine-grained set, CPU, a few minutes
	$(PY) -m glsim_pl.train

synthetic-backbone: $(STAMP) ## build the default's pretrained tiny ViT ahead of the first run (into the cache, CPU, about 2 minutes)
	$(PY) -m glsim_pl.pretrain_synthetic

test: $(STAMP) ## the fast test suite (CPU, a few minutes)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

test-full: $(STAMP) ## every test, slow ones included
	HF_HUB_OFFLINE=1 $(PY) -m pytest

smoke: $(STAMP) ## one batch through train/val/test
	$(PY) -m glsim_pl.train debug=fdr

lint: $(STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff autofix + format
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: $(STAMP) ## batched crop vs loop, GLSim vs ViT forward time
	$(PY) -m glsim_pl.bench crop && $(PY) -m glsim_pl.bench forward

bench-model: $(STAMP) ## cost table (throughput, latency, memory, selector FLOPs) -> bench_results/model
	$(PY) -m glsim_pl.bench model --out bench_results/model

bench-train: $(STAMP) ## the real Lightning training loop's img/s, GPU busy share, MFU vs the bare loop -> bench_results/train
	$(PY) -m glsim_pl.bench train --out bench_results/train

bench-regimes: $(STAMP) ## each finetune regime's training img/s and memory as ratios to full, interleaved (CPU: ViT-Ti/16 224, a few minutes) -> bench_results/regimes
	$(PY) -m glsim_pl.bench train --regimes all --model vit_t16 --size 224 --batch 8 \
		--methods vit --warmup 1 --steps 1 --rounds 9 --device cpu --out bench_results/regimes $(ARGS)

bench-gate: $(STAMP) ## adaptive GLSim: measured vs analytic cost per second-pass share (ViT-Ti/16 224; GPU: ARGS="--backbone vit_base_patch16_224")
	$(PY) -m glsim_pl.bench gate $(ARGS)

# -- GPU check: the GPU image has torch/timm/lightning/torchmetrics/matplotlib but no hydra/omegaconf/antlr4/torchdata
GPU_DIR ?= .gpu
GPU_PY ?= python3
GPU_PKGS := hydra omegaconf antlr4 torchdata
FIXTURE ?= tests/fixtures/official_glsim_vit_t16_l1_s96_int8.pt

gpu-bundle: $(STAMP) ## copy the pure-Python packages the GPU image lacks (with their dist-info) + the parity fixture into .gpu/ (carry it)
	rm -rf $(GPU_DIR) && mkdir -p $(GPU_DIR)/site $(GPU_DIR)/fixtures
	$(PY) -m glsim_pl.bench.bundle $(GPU_DIR)/site $(GPU_PKGS)
	cp $(FIXTURE) $(GPU_DIR)/fixtures/
	find $(GPU_DIR) -name __pycache__ -prune -exec rm -rf {} +
	@du -sh $(GPU_DIR)

gpu-check: ## on one GPU, no venv (after gpu-bundle): parity, bench train/forward/crop, eval, 2-epoch run -> OUT/gpu_check.md; SECTIONS=gate,seeds: the opt-in ones
	@test -d $(GPU_DIR)/site || { echo "run 'make gpu-bundle' first where .venv exists, then carry $(GPU_DIR)/"; exit 1; }
	PYTHONPATH=$(CURDIR)/$(GPU_DIR)/site:$(CURDIR)/src $(GPU_PY) -m glsim_pl.bench gpu_check --out $(or $(OUT),gpu_report) \
		$(if $(SECTIONS),--sections $(SECTIONS))

.PHONY: bench-train bench-regimes bench-gate gpu-bundle gpu-check

eval: $(STAMP) ## test a checkpoint (ours, official or hf-hub:...): make eval CKPT=path [DATASET=cub]
	$(PY) -m glsim_pl.eval $(if $(DATASET),dataset=$(DATASET)) ckpt_path=$(CKPT)

TARGET_COST ?= 1.5
gate-sweep: $(STAMP) ## gated checkpoint (method.gate=confidence): accuracy vs cost over tau, tau for TARGET_COST (1.5) x ViT chosen on val: make gate-sweep CKPT=path DATASET=cub
	$(PY) -m glsim_pl.eval dataset=$(or $(DATASET),synthetic) ckpt_path=$(CKPT) eval.gate_sweep=true \
		method.gate_target_cost=$(TARGET_COST) $(ARGS)

export: $(STAMP) ## checkpoint -> model.safetensors + config.json: make export CKPT=path OUT=dir
	$(PY) -m glsim_pl.export ckpt_path=$(CKPT) out=$(or $(OUT),exported)

predict: $(STAMP) ## predict on an image, folder or CSV: make predict CKPT=path INPUT=folder
	$(PY) -m glsim_pl.predict ckpt_path=$(CKPT) input=$(INPUT)

# -- paper reproduction, the official protocol (python -m glsim_pl.reproduce; docs/reproduction.md) -----------------
# stage 1: LR grid {0.03, 0.01, 0.003, 0.001} on train/val, best val top-1 (ties -> smaller LR); stage 2: SEEDS on
# train/test at that LR; GLSim and the ViT baseline each. LR=0.01 skips stage 1. ARGS="..." adds overrides.
SEEDS ?= 1,10,100
RESULTS ?= results
ARGS ?=
LR ?=
RUN_ID := $(shell date +%Y-%m-%d_%H-%M-%S)
REPRO_DIR ?= multirun/reproduce/$(RUN_ID)
REPRO_ROWS := cub nabirds inat17 dogs pets flowers food vegfru cub448
REPRO_TARGETS := $(addprefix reproduce-,$(REPRO_ROWS))
reproduce_args = --dir $(REPRO_DIR)/$(1) --out $(RESULTS) --seeds $(SEEDS) $(if $(LR),--lr $(LR))

reproduce-cub: ## a Table 4 row (GLSim + ViT-B/16): LR on val, seeds 1,10,100 -> results/cub.md (also reproduce-<nabirds|inat17|dogs|pets|flowers|food|vegfru|cub448>; LR=0.01 skips the LR search)

$(REPRO_TARGETS): reproduce-%: $(STAMP)
	$(PY) -m glsim_pl.reproduce $* $(call reproduce_args,$*) -- $(ARGS)

reproduce-table: $(REPRO_TARGETS) ## every Table 4 row plus CUB 448 (python -m glsim_pl.reproduce --cost: GPU-hours)

# a check, not a result: its runs and table go to a new temporary folder, never into the checkout
SMOKE_DIR ?= $(or $(TMPDIR),/tmp)/glsim-smoke-reproduce-$(RUN_ID)
smoke-reproduce: $(STAMP) ## both stages on the synthetic set with a tiny model (CPU, a few minutes) -> $TMPDIR/glsim-smoke-reproduce-<now>/smoke.md
	$(PY) -m glsim_pl.reproduce --experiments smoke_reproduce --name smoke --dir $(SMOKE_DIR)/runs --out $(SMOKE_DIR) \
		--seeds $(SEEDS) $(if $(LR),--lr $(LR)) -- $(ARGS)

.PHONY: reproduce-table smoke-reproduce $(REPRO_TARGETS)

# -- foundation backbones: 5 backbones x {full, linear, lora} x {vit, glsim} x SEEDS, each with its family's recipe
# (conf/recipe/<model preset>.yaml) -> one table with the GLSim - ViT delta per backbone x regime (docs/foundation.md)
FOUNDATION_MODELS ?= vit_b16,dinov2_b14_reg,clip_b16,siglip2_b16,dinov3_b16
FOUNDATION_REGIMES ?= full,linear,lora
foundation_run = $(PY) -m glsim_pl.train -m experiment=$(1) model=$(FOUNDATION_MODELS) finetune=$(FOUNDATION_REGIMES) \
	method=vit,glsim seed=$(2) hydra.sweep.dir=$(3) $(ARGS); code=$$?; \
	$(PY) -m glsim_pl.aggregate $(3) --out $(4) --name $(5) --pair method=vit --formats "" && exit $$code

foundation: $(STAMP) ## which regime, does GLSim help, per backbone: make foundation DATASET=cub -> results/foundation_<dataset>.md
	$(call foundation_run,foundation dataset=$(or $(DATASET),cub),$(SEEDS),multirun/foundation/$(or $(DATASET),cub)/$(RUN_ID),$(RESULTS),foundation_$(or $(DATASET),cub))

# a check, not a result: tiny random-init variants of every family on the synthetic set, into a new temporary folder
SMOKE_SEEDS ?= 1
SMOKE_FOUNDATION_DIR ?= $(or $(TMPDIR),/tmp)/glsim-smoke-foundation-$(RUN_ID)
smoke-foundation: $(STAMP) ## make foundation with tiny random-init backbones on the synthetic set (CPU, minutes) -> $TMPDIR/glsim-smoke-foundation-<now>/
	$(call foundation_run,smoke_foundation,$(SMOKE_SEEDS),$(SMOKE_FOUNDATION_DIR)/runs,$(SMOKE_FOUNDATION_DIR),smoke_foundation)

.PHONY: foundation smoke-foundation

# -- packaging: the wheel (conf/ inside) and the lowest supported versions -----------------------------------------
MIN_VENV ?= .venv-min
DIST ?= dist

wheel: $(STAMP) ## build dist/glsim_pl-<version>-py3-none-any.whl (the configs travel inside it)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w $(DIST) .

test-min: wheel ## opt-in: a separate venv with the lowest supported torch/torchvision/timm/lightning, the wheel, the fast suite
	@test -x $(MIN_VENV)/bin/python || python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet -c constraints-min.txt "$$(ls -t $(DIST)/glsim_pl-*.whl | head -1)[dev]"
	HF_HUB_OFFLINE=1 $(MIN_VENV)/bin/python -m pytest -m "not slow" $(ARGS)

.PHONY: wheel test-min

.PHONY: help install train synthetic-backbone test test-full smoke lint format bench bench-model eval gate-sweep export predict

# -- interactive demo in the browser (the [demo] extra: Gradio) ----------------------------------------------------
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[demo]"
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP) ## the Gradio demo on http://127.0.0.1:7860: make demo CKPT=path (ARGS="demo.port=8080 ...")
	$(PY) -m glsim_pl.demo ckpt_path=$(CKPT) $(ARGS)

.PHONY: demo
