# Sourced by the benches that count the instructions of a local runtime's proxies
# (bench/routes-callgrind, bench/mesh-callgrind); proxy_pid_of also by bench/routes.
# Needs the caller's REPO.

# callgrind_runtime_bin DIR PROXY CASE_PATTERN: DIR/bin, for CONDUIT's programs to be run
# from: a link to the build's conduit (the runtime runs the programs it finds beside
# itself), a controller that scrapes the proxies once an hour rather than every 5 s (a
# scrape costs a proxy by the second, not by the request: it would not cancel out), and a
# conduit-proxy that runs PROXY under callgrind for the pods whose name matches the shell
# case pattern CASE_PATTERN, writing DIR/callgrind/<pid>.out, and PROXY as it is for the
# others; every proxy with the environment NAME=VALUE ... given after it. valgrind gets
# $BENCH_CALLGRIND_ARGS too (scripts/function-order: --demangle=no).
callgrind_runtime_bin() {
    local dir=$1 real=$2 pattern=$3 env=""
    shift 3
    (($#)) && env="export $(printf '%q ' "$@")"
    mkdir -p "$dir/bin" "$dir/callgrind"
    # The proxies (UID 2102) write their callgrind outputs there.
    chmod 777 "$dir/callgrind"
    ln "$REPO/target/release/conduit" "$dir/bin/conduit" 2>/dev/null || cp "$REPO/target/release/conduit" "$dir/bin/conduit"
    printf '%s\n' '#!/usr/bin/env bash' \
        "exec $REPO/target/release/conduit-controller \"\${@/#--scrape-interval=*/--scrape-interval=1h}\"" >"$dir/bin/conduit-controller"
    printf '%s\n' '#!/bin/sh' \
        "$env" \
        'case "$CONDUIT_PROXY_POD_NAME" in' \
        "$pattern) exec valgrind --tool=callgrind --vgdb=no ${BENCH_CALLGRIND_ARGS:-} --callgrind-out-file=$dir/callgrind/%p.out $real \"\$@\" ;;" \
        'esac' \
        "exec $real \"\$@\"" >"$dir/bin/conduit-proxy"
    chmod 755 "$dir/bin/conduit-controller" "$dir/bin/conduit-proxy"
}

# callgrind_runtime_down DIR: brings down the local runtime of DIR/bin/conduit (its
# CONDUIT_LOCAL_DIR) and removes DIR, first copying its callgrind outputs and DIR/results
# to $BENCH_KEEP when that is set.
callgrind_runtime_down() {
    "$1/bin/conduit" local down >/dev/null 2>&1 || true
    if [[ -n ${BENCH_KEEP:-} ]]; then
        mkdir -p "$BENCH_KEEP" && cp "$1/callgrind/"*.out "$1/results" "$BENCH_KEEP/" 2>/dev/null || true
    fi
    rm -rf "$1"
}

# proxy_pid_of POD: the pid of pod POD's proxy, the process (conduit-proxy, or valgrind
# running it) whose environment names the pod.
proxy_pid_of() {
    local environ pid found=""
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        if { tr '\0' '\n' <"$environ" | grep -qx "CONDUIT_PROXY_POD_NAME=$1"; } 2>/dev/null &&
            { tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q conduit-proxy; } 2>/dev/null; then
            found=$pid
        fi
    done
    [[ -n $found ]] && echo "$found"
}

# callgrind_total DIR PID...: stops the proxies PID... under callgrind (SIGTERM, a
# graceful stop) and prints, one line each, the instructions each executed in its life
# (from DIR/callgrind/<pid>.out); fails if one left no total.
callgrind_total() {
    local dir=$1 pid total
    shift
    kill -TERM "$@"
    for pid in "$@"; do
        for _ in $(seq 1 600); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/callgrind/$pid.out" 2>/dev/null || true)
        [[ -n $total ]] || { log "the proxy with pid $pid left no callgrind total"; return 1; }
        echo "$total"
    done
}
