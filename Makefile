# The two entry points of the README, plus the pieces they are made of.
.PHONY: demo test test-browser bootstrap lint bench

demo:        ## run the whole product with the example site (see README)
	scripts/demo.sh

test:        ## the whole test suite (real PostgreSQL, Temporal dev servers, workers)
	scripts/test.sh

test-browser: ## the admin in Debian's headless Chromium (django-trigger-relay/browser_tests/)
	scripts/services.sh
	scripts/install-debian-packages.sh
	scripts/bootstrap.sh
	cd django-trigger-relay && ../.venv/bin/python -m pytest browser_tests \
		--ds=browser_tests.settings -v

# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--server memory --users 8"
# (.venv/bin/python bench/end_to_end.py --help).
bench:       ## both routes of the example site side by side (bench/end_to_end.py); not in CI
	scripts/services.sh
	scripts/bootstrap.sh
	cargo build --release --locked
	.venv/bin/python bench/end_to_end.py $(BENCH_ARGS)

bootstrap:   ## install from requirements.lock and Cargo.lock, build the daemon
	scripts/bootstrap.sh

lint:        ## what CI checks besides the tests
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	.venv/bin/ruff check django-trigger-relay example grafana bench
	.venv/bin/ruff format --check django-trigger-relay example grafana bench
