#!/usr/bin/env bash
# Builds what a site installs, into dist/ (or $TRIGGER_RELAY_DIST):
#   django_trigger_relay-<v>.tar.gz and -py3-none-any.whl   the add-on (hatchling)
#   trigger_relay-<v>.tar.gz and -manylinux_2_17_x86_64.whl  the daemon (maturin, zig)
# Each wheel is built from its own sdist (pypa/build's default), as pip builds one on a
# platform without a wheel: a file missing from an sdist is then missing from the wheel,
# and the tests that install the wheels see it. The daemon's wheel is linked with zig for
# manylinux2014 (glibc 2.17) and its tag is read back with auditwheel.
#
# The daemon's release build reuses target/wheel/ across runs (only the crate itself is
# compiled again, its sdist being unpacked in a new directory each time): about 6 minutes
# cold on 2 cores, 2-3 minutes after that.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${TRIGGER_RELAY_DIST:-$ROOT/dist}
PY=$ROOT/.venv/bin/python

[ -x "$ROOT/.venv/bin/maturin" ] || {
    echo "build-wheels: no maturin in .venv; run scripts/bootstrap.sh first" >&2
    exit 1
}

rm -rf "$OUT"
mkdir -p "$OUT"

echo "== the add-on: sdist, then its wheel built from the sdist"
"$PY" -m build --no-isolation --outdir "$OUT" django-trigger-relay

echo "== the daemon: sdist, then its manylinux2014 wheel built from the sdist (release, zig)"
# maturin finds zig as `python -m ziglang` of the first python on PATH.
PATH=$ROOT/.venv/bin:$PATH \
    MATURIN_PEP517_ARGS="--zig --compatibility manylinux2014" \
    CARGO_TARGET_DIR=$ROOT/target/wheel \
    "$PY" -m build --no-isolation --outdir "$OUT" .

daemon_wheel=$(ls "$OUT"/trigger_relay-*.whl)
audit=$("$ROOT/.venv/bin/auditwheel" show "$daemon_wheel")
echo "$audit"
if ! grep -q 'manylinux_2_17_x86_64' <<<"$audit"; then
    echo "build-wheels: $daemon_wheel is not manylinux_2_17 (glibc 2.17) compatible" >&2
    exit 1
fi

echo "== built into $OUT"
ls -l "$OUT"
