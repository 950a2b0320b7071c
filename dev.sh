#!/usr/bin/env bash
# pitcrew's entry point on a fresh Debian/Ubuntu machine. Every command first does the set-up it needs:
# the Debian packages (Prometheus, Alertmanager, docker-compose, PostgreSQL, Redis), a Python 3.11 venv in .venv with the
# pinned requirements, and `pip check`.
#
#   ./dev.sh demo     set up, then run the closed-loop demo on the local stack (pitcrew demo)
#   ./dev.sh up       set up, then start the local stack (pitcrew stack up)
#   ./dev.sh test     set up, then run the whole test suite (what CI runs)
#   ./dev.sh down     stop the local stack
#   ./dev.sh setup    only the set-up
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

die() { echo "dev.sh: $*" >&2; exit 2; }

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  die "Python 3.11 is required (the bundled Triton's Python stub and the pinned wheels are for 3.11); install python3.11 and python3.11-venv"
}

apt_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  # The distributed profile (pitcrew stack up --profile distributed): PostgreSQL and the Celery broker.
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing Debian packages ${missing[*]} and no sudo: run as root 'apt-get install -y ${missing[*]}'"
    sudo="sudo"
  fi
  echo "dev.sh: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

venv() {
  local python stamp
  python=$(find_python)
  if [ ! -x .venv/bin/python ]; then
    echo "dev.sh: creating .venv with $python"
    "$python" -m venv .venv
  fi
  stamp=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat .venv/.pitcrew-installed 2>/dev/null)" != "$stamp" ]; then
    echo "dev.sh: installing pinned requirements into .venv (about two minutes the first time)"
    if ! .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -e . >.venv/pip-install.log 2>&1; then
      grep -v '^WARNING: Location' .venv/pip-install.log | tail -30 >&2
      die "pip install -r requirements.txt failed (full log: .venv/pip-install.log)"
    fi
    .venv/bin/pip check
    echo "$stamp" > .venv/.pitcrew-installed
  fi
}

setup() { apt_packages; venv; }

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; exec .venv/bin/pitcrew demo "$@" ;;
  up) setup; exec .venv/bin/pitcrew stack up ;;
  down) exec .venv/bin/pitcrew stack down ;;
  test)
    setup
    shift
    .venv/bin/ruff check .
    # Two workers, one test module each at a time (module-scoped stacks stay in one process): the
    # integration modules mostly wait on servers, so two of them share two cores well. Modules are handed
    # out in collection order (tests/conftest.py puts the long integration modules first), not xdist's
    # default of the modules with the most tests first, which left the long ones for the end.
    exec .venv/bin/pytest -n "${PITCREW_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
    ;;
  *) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 2 ;;
esac
