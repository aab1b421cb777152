# shellcheck shell=bash
# PASS/FAIL lines and one summary line, for the check scripts (lint-workflows,
# check-deploy, rehearse-publish). Sourced after lib/docker-engine.sh.
#
#   pass TEXT / fail TEXT            one line, counted
#   check TEXT COMMAND...            PASS when COMMAND succeeds
#   refuses TEXT COMMAND...          PASS when COMMAND fails (its output hidden)
#   checks_summary NAME              "NAME: N passed, M failed"
#   checks_ok                        succeeds when nothing failed
#   python_tools VENV PACKAGE==VERSION...
#                                    a venv with exactly these PyPI packages,
#                                    made (again) when one is missing or another version

checks_passed=0
checks_failed=0
pass() { checks_passed=$((checks_passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { checks_failed=$((checks_failed + 1)); printf 'FAIL %s\n' "$*"; }
check() {
    local description=$1
    shift
    if "$@"; then pass "$description"; else fail "$description"; fi
}
refuses() {
    local description=$1
    shift
    if "$@" >/dev/null 2>&1; then fail "$description"; else pass "$description"; fi
}
checks_summary() { printf '%s: %d passed, %d failed\n' "$1" "$checks_passed" "$checks_failed"; }
checks_ok() { ((checks_failed == 0)); }

python_tools() {
    local venv=$1 wanted
    shift
    wanted=$(printf '%s\n' "$@" | sort)
    if [[ -x "$venv/bin/pip" ]] && [[ "$("$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null \
        | grep -Fxf <(printf '%s\n' "$@") | sort)" == "$wanted" ]]; then
        return 0
    fi
    log_info "installing $* into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        ensure_debian_packages python3 python3-venv
        /usr/bin/python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
}
