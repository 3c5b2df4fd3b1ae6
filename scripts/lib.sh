# Shared by the scripts: find a CPython by minor version, and make a venv
# with heapsite built into it. Source it; do not run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One cargo target directory for every Python version: only what depends on
# the interpreter (pyo3-ffi, frames.c, heapsite itself) rebuilds per version.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"

# python_for 3.11 -> path of that interpreter (pyenv's, else python3.11 on PATH)
python_for() {
    local minor="$1" candidate
    for candidate in "$PYENV_ROOT"/versions/"$minor".*/bin/python3; do
        if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    command -v "python$minor" && return 0
    case "$minor" in
        # Not on the machine image: Debian's packages, set up under the cache.
        3.14|3.15) "$ROOT/scripts/get-python" "$minor"; return ;;
    esac
    echo "no CPython $minor found (looked in $PYENV_ROOT/versions and PATH)" >&2
    return 1
}

# make_venv PYTHON DIR: a venv with pip. Debian's interpreters look for pip's
# wheel under /usr/share/python-wheels, which is in get-python's root instead:
# the venv is made without pip and pip installed from that root's wheel.
make_venv() {
    local base="$1" venv="$2" wheel
    if "$base" -m venv "$venv" >/dev/null 2>&1; then return 0; fi
    rm -rf "$venv"
    "$base" -m venv --without-pip "$venv" >&2 || return 1
    wheel="$(ls "$(dirname "$base")"/../share/python-wheels/pip-*.whl 2>/dev/null | head -n 1)"
    [ -n "$wheel" ] || { echo "no pip wheel beside $base" >&2; return 1; }
    "$venv/bin/python" "$wheel/pip" install -q --disable-pip-version-check "$wheel" >&2
}

# venv_for 3.11 [extra pip packages...] -> path of a venv's python with
# heapsite built and installed, editable, from this checkout: the release
# profile, or the one HEAPSITE_PROFILE names (the test command's
# quick-release, Cargo.toml says why).
venv_for() {
    local minor="$1"; shift
    local venv="$ROOT/.venvs/$minor" base
    base="$(python_for "$minor")" || return 1
    if [ ! -x "$venv/bin/python" ]; then
        make_venv "$base" "$venv" || return 1
    fi
    local packages=("maturin>=1.5,<2" "pytest>=7" numpy protobuf grpcio-tools selenium pytest-memray pytest-xdist pytest-timeout greenlet gevent "$@")
    # guppy3, the heap() oracle, does not build on 3.15 (tests/test_heap.py says why).
    [ "$minor" = "3.15" ] || packages+=(guppy3)
    # Installed once per venv and set of packages: pip's resolver takes
    # seconds even when everything is there already.
    local stamp="$venv/.heapsite-deps-$(printf '%s\n' "${packages[@]}" | cksum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}" >&2 || return 1
        touch "$stamp"
    fi
    (cd "$ROOT" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
        "$venv/bin/maturin" develop --profile "${HEAPSITE_PROFILE:-release}" --quiet >&2) || return 1
    echo "$venv/bin/python"
}
