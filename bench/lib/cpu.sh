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
