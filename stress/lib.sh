# shellcheck shell=bash
# stress/lib.sh: what run_long.sh and run_valgrind.sh share (sourced).
# Each runs the stress programs one by one and ends with a summary that
# counts programs: "N passed, N failed".

passed=0
failed=0
summary=()

# show_figures LOG: the program's figures, without the per-check failure
# messages and the library's debug notes (both stay in the log).
show_figures() {
    grep -v ': FAIL ' "$1" | grep -v '^libals: ' | head -n 60 || true
}

# record NAME LOG STATUS [NOTE]: a program passed when it exited 0 and
# printed its closing line.
record() {
    local name=$1 log=$2 status=$3 note=${4-} closing
    closing=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
    if ((status == 0)) && [[ -n $closing ]]; then
        passed=$((passed + 1))
        summary+=("PASS  $(printf '%-18s' "$name") $closing$note")
    else
        failed=$((failed + 1))
        summary+=("FAIL  $(printf '%-18s' "$name") ${closing:-no closing line}, exit status $status$note (log: $log)")
    fi
}

# finish TITLE: prints the summary; succeeds only if every program passed.
finish() {
    printf '\n== summary (%s)\n' "$1"
    printf '%s\n' "${summary[@]}"
    printf '%d passed, %d failed\n' "$passed" "$failed"
    ((failed == 0))
}
