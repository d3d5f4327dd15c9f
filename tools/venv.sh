# Sourced by demo.sh and test.sh: create .venv and install the project into it, once per
# change of pyproject.toml (a stamp file remembers what was installed).
ensure_venv() {
    local extra="$1"
    local py="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        "$py" -m venv .venv
    fi
    local stamp=".venv/.installed$extra-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip >&2
        .venv/bin/python -m pip install --quiet -e ".$extra" >&2
        touch "$stamp"
    fi
}
