# The two entry points of the README, plus the pieces they are made of.
.PHONY: demo test test-fast test-browser bootstrap dist lint fmt bench bench-smoke help

demo:        ## run the whole product with the example site (see README)
	scripts/demo.sh

test:        ## the whole test suite (real PostgreSQL, Temporal dev servers, workers)
	scripts/test.sh

# The loop while you work (CONTRIBUTING.md, "The loops"): no Temporal dev server, daemon
# process, built wheel or browser; PostgreSQL and Redis only. CI runs `make test`.
test-fast:   ## the loop while you work: unit tests, the add-on's tests without Temporal or wheels
	scripts/services.sh
	cargo nextest run --locked --lib
	cd django-trigger-relay && ../.venv/bin/python -m pytest -q -m "not e2e and not installed"

test-browser: ## the admin in Debian's headless Chromium (django-trigger-relay/browser_tests/)
	scripts/services.sh
	scripts/install-debian-packages.sh
	scripts/bootstrap.sh
	cd django-trigger-relay && ../.venv/bin/python -m pytest browser_tests \
		--ds=browser_tests.settings -v

# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--server memory --users 8"
# (.venv/bin/python bench/end_to_end.py --help).
bench:       ## both routes of the example site side by side (bench/end_to_end.py); CI runs bench-smoke
	scripts/services.sh
	scripts/bootstrap.sh
	cargo build --release --locked
	.venv/bin/python bench/end_to_end.py $(BENCH_ARGS)

bench-smoke: ## every phase of the bench once, a few firings, the debug daemon (CI: it must run)
	scripts/services.sh
	scripts/bootstrap.sh
	BENCH_DATABASE=trigger_relay_bench_smoke .venv/bin/python bench/end_to_end.py \
		--daemon target/debug/trigger-relay --firings 20 --latency 5 --repeats 1 \
		--backlog 50 --users 2 --fanout 20

bootstrap:   ## install from requirements.lock and Cargo.lock, build the daemon
	scripts/bootstrap.sh

dist:        ## the packages a site installs, into dist/: both sdists and wheels (manylinux2014 daemon)
	scripts/bootstrap.sh
	scripts/build-wheels.sh

lint:        ## what CI checks besides the tests
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	.venv/bin/ruff check django-trigger-relay example grafana bench
	.venv/bin/ruff format --check django-trigger-relay example grafana bench
	cd django-trigger-relay && ../.venv/bin/mypy
	.venv/bin/python scripts/check-citations.py

fmt:         ## rustfmt and ruff (format, then the fixable lints) on everything make lint checks
	cargo fmt
	.venv/bin/ruff format django-trigger-relay example grafana bench
	.venv/bin/ruff check --fix django-trigger-relay example grafana bench

help:        ## this list
	@grep -E '^[a-z-]+:[^#]*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):[^#]*## /\1\t/' \
		| awk -F '\t' '{ printf "  make %-13s %s\n", $$1, $$2 }'
