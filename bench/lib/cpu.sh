# Sourced by the benches: a process's CPU time, for CPU per request.
# cpu_ticks <pid>: the process's user and system CPU time so far (all its threads), two
# numbers in clock ticks (getconf CLK_TCK per second), from /proc/<pid>/stat.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # the fields after "(comm) ", which may hold spaces
    # shellcheck disable=SC2086
    set -- $stat
    echo "${12} ${13}"
}

# cpu_mark: the CPU times so far of every process in the caller's associative array
# CPU_PIDS (name -> pid), into CPU_MARK, for cpu_since.
declare -A CPU_MARK=()
cpu_mark() {
    local name
    for name in "${!CPU_PIDS[@]}"; do CPU_MARK[$name]=$(cpu_ticks "${CPU_PIDS[$name]}"); done
}

# cpu_since <scenario> <tag> <file>: appends to FILE, for each process of CPU_PIDS, the line
# `scenario tag name user_before system_before user_after system_after` (since cpu_mark),
# as report.py's cpu_per_request reads it.
cpu_since() {
    local name
    for name in "${!CPU_PIDS[@]}"; do
        echo "$1 $2 $name ${CPU_MARK[$name]} $(cpu_ticks "${CPU_PIDS[$name]}")" >>"$3"
    done
}
