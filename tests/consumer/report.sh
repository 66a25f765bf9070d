# tests/consumer/report.sh: the pass/fail tally of the consumer scripts
# (tests/consumer/run.sh, tests/consumer_tsan/run.sh), sourced by both.
# The sourcing script sets WORK, its work directory, before calling finish.

passed=0
failed=0

# finish: removes WORK unless something failed or KEEP=1, prints the closing
# "N passed, N failed" line and exits non-zero if anything failed.
finish() {
    if [ "$failed" -ne 0 ] || [ "${KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
