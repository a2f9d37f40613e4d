# The two entry points of the README, plus the pieces they are made of.
.PHONY: demo test bootstrap lint bench

demo:        ## run the whole product with the example site (see README)
	scripts/demo.sh

test:        ## the whole test suite (real PostgreSQL, Temporal dev servers, workers)
	scripts/test.sh

bootstrap:   ## install from requirements.lock and Cargo.lock, build the daemon
	scripts/bootstrap.sh

lint:        ## what CI checks besides the tests
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	.venv/bin/ruff check django-trigger-relay example grafana
	.venv/bin/ruff format --check django-trigger-relay example grafana
