#!/usr/bin/env bash
# Installs what the project and its tests need on a fresh Debian machine; each step is skipped when
# already done, so running it again is cheap.
#   hack/install.sh          the Python package with every extra (trainer, server, operator, dev)
#   hack/install.sh --test   also Debian's prometheus, nginx, wrk, golang-go (the Kepler conformance tier
#                            builds Kepler's own Go code offline) and chromium (the report pages' browser
#                            tests drive it with playwright; playwright never downloads a browser), and the
#                            CRD apiserver (built once per machine into /opt/crd-apiserver-bin, about 5
#                            minutes the first time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
cd "$ROOT"

stamp=$("$PY" -c 'import hashlib,sys;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')
if [ "$("$PY" -c 'import kepler_contract,kepler_trainer,kepler_operator,pathlib;print(pathlib.Path(kepler_trainer.__file__).parents[2])' 2>/dev/null)" != "$ROOT" ] \
   || [ "$(cat "$ROOT/.install-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "installing the Python package and its extras" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e ".[all]"
  echo "$stamp" > "$ROOT/.install-stamp"
fi

[ "${1:-}" = "--test" ] || exit 0

need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
# Kepler's own Go model code is compiled by the conformance tier (tests/conformance; bookworm: Go 1.19)
command -v go >/dev/null || need+=(golang-go)
command -v strace >/dev/null || need+=(strace)  # kills the trainer at a chosen rename (test_cli_publishing)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -q >/dev/null
  # prometheus would start as a service where one can: the tests run their own, so keep it from starting
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

SHARED=${SHARED:-"$ROOT/../shared"}
if [ ! -x /opt/crd-apiserver-bin/apiextensions-apiserver ]; then
  if [ -f "$SHARED/tools/crd-apiserver/build.sh" ]; then
    echo "building the CRD apiserver (once per machine)" >&2
    bash "$SHARED/tools/crd-apiserver/build.sh" >/dev/null
  else
    echo "note: $SHARED/tools/crd-apiserver not found: the real-apiserver tier will be skipped" >&2
  fi
fi
