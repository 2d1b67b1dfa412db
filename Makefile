# k3py: set-up, tests, checks, images and benchmarks. Every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PYTHON    := $(VENV)/bin/python
PYTEST    := $(PYTHON) -m pytest
STAMP     := $(VENV)/.installed
# The official client's pydantic generation beside the dev extra's kubernetes 32.x: one venv
# holds one version of a distribution, so 37.x goes to its own directory and the tests that
# use it run it in a subprocess (tests/server/client37_checks.py).
CLIENT37  := $(VENV)/k8s37
CLIENT37_VERSION := 37.0.2
HOST_PY   ?= python3
# make fuzz: schemathesis in a venv of its own (its pytest plugin and pins must not reach the
# test venv); it fuzzes a real server through /openapi/v2 for at most FUZZ_MINUTES.
FUZZ_VENV := $(VENV)/fuzz
FUZZ_PACKAGES := schemathesis==3.39.16 hypothesis==6.131.0
FUZZ_MINUTES ?= 4

# Debian packages the test tiers and the image pipeline use. Installed only when missing.
APT_PACKAGES := ca-certificates openssl python3-venv zstd xz-utils gzip cpio kmod iproute2 nftables \
	mtools dosfstools e2fsprogs fdisk bmap-tools mmdebstrap qemu-system-arm qemu-user-static \
	binfmt-support gpgv debian-archive-keyring docker.io busybox-static postgresql \
	systemd-container u-boot-qemu u-boot-tools

.PHONY: help setup apt venv test test-unit test-integration test-image test-qemu check lint \
	docker-engine test-docker test-netns test-nspawn \
	check-config image qemu-cluster dist \
	format bench fuzz clean

help:
	@echo "make setup             install Debian packages and the .venv (idempotent)"
	@echo "make test              every test tier (unit, integration, image, qemu, ...)"
	@echo "make test-unit         hermetic unit tests only"
	@echo "make test-integration  real server on loopback, real kubectl"
	@echo "make test-nspawn       install.sh on Debian 13 trees under systemd-nspawn"
	@echo "make check             ruff lint + format check, mypy strict (as CI runs them)"
	@echo "make dist              the sdist and the wheel into dist/"
	@echo "make check-config      check this machine's kernel and system for k3py"
	@echo "make bench             benchmarks; results in bench/results/"
	@echo "make fuzz              schemathesis against a loopback server's /openapi/v2 (no 5xx)"
	@echo "make image BOARD=qemu-virt-arm64 ROLE=agent   build a board image into out/"
	@echo "make qemu-cluster      emulated server + ARM64/ARMv7 agents: join, workload, kubectl"

setup: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v kubectl >/dev/null || echo "warning: kubectl not found; the integration tier needs it"

venv: $(STAMP) $(CLIENT37)/.installed

$(CLIENT37)/.installed: $(STAMP)
	rm -rf $(CLIENT37)
	$(PYTHON) -m pip install -q --no-warn-conflicts --target $(CLIENT37) kubernetes==$(CLIENT37_VERSION)
	touch $@

$(STAMP): pyproject.toml setup.py
	test -x $(PYTHON) || $(HOST_PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev,image]'
	$(PYTHON) -m tools.mypy_view >/dev/null
	touch $@

# The slowest tests are listed at the end, to keep the whole run's time in view.
test: setup docker-engine
	$(PYTEST) --durations=25

test-unit: venv
	$(PYTEST) -m "not (integration or docker or netns or image or qemu or nspawn)"

test-integration: setup
	$(PYTEST) -m integration

test-image: setup
	$(PYTEST) -m image

# The docker tier needs a Docker engine: start dockerd in the background unless one answers.
docker-engine: apt
	.ci/start-dockerd

test-docker: setup docker-engine
	$(PYTEST) -m docker

# Root: clusters in network namespaces the tests create (pod network, services).
test-netns: setup docker-engine
	$(PYTEST) -m netns

test-qemu: setup
	$(PYTEST) -m qemu

# install.sh on a real systemd: Debian 13 trees (mmdebstrap, cached) under systemd-nspawn.
test-nspawn: setup
	$(PYTEST) -m nspawn

# Exits with the number of required failures (0 = this kernel suits k3py).
check-config: venv
	$(VENV)/bin/k3py check-config

check: lint
	$(PYTHON) -m tools.mypy_view >/dev/null
	$(PYTHON) -m mypy

# The sdist and the wheel (the firmware artefact images, install scripts and OTA bundles ship).
dist: venv
	rm -rf dist
	$(PYTHON) -m tools.dist --outdir dist $(if $(MIRROR),--mirror $(MIRROR))

lint: venv
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: venv
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

# A bootable board image in out/ (boards: ls board/; roles: server, agent).
BOARD ?= qemu-virt-arm64
ROLE  ?= agent
image: setup
	$(PYTHON) -m k3py image build --board $(BOARD) --role $(ROLE)

# One emulated server and two agents (ARM64, ARMv7) on a virtual network, a workload through
# kubectl, the cluster's state printed; consoles and images in out/qemu-cluster/.
qemu-cluster: setup
	$(PYTHON) qemu-tests/qemu_cluster.py $(QEMU_CLUSTER_FLAGS)

bench: setup
	$(PYTHON) -m bench

$(FUZZ_VENV)/.installed: $(STAMP)
	rm -rf $(FUZZ_VENV)
	$(HOST_PY) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/pip install -q $(FUZZ_PACKAGES)
	touch $@

fuzz: setup $(FUZZ_VENV)/.installed
	$(PYTHON) -m tests.fuzz.openapi --st $(FUZZ_VENV)/bin/st --minutes $(FUZZ_MINUTES)

clean:
	rm -rf $(VENV) build dist out *.egg-info .mypy_cache .pytest_cache .ruff_cache
