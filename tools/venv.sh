# Sourced by demo.sh and test.sh: create .venv and install the project into it, once per
# change of pyproject.toml (a stamp file remembers what was installed).
ensure_venv() {
    local extra="$1"
    local py="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        # Debian's python3 lacks ensurepip unless python3-venv is installed: fall back to
        # virtualenv from PyPI (user install, no root needed).
        if ! "$py" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            "$py" -m virtualenv --version >/dev/null 2>&1 || "$py" -m pip install --quiet --user virtualenv
            "$py" -m virtualenv --quiet .venv
        fi
    fi
    local stamp=".venv/.installed$extra-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip >&2
        .venv/bin/python -m pip install --quiet -e ".$extra" >&2
        touch "$stamp"
    fi
}
