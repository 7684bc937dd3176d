# Sourced by the benches: installs from Debian what they need and lack.
# install_missing COMMAND:PACKAGE ...: apt-get installs the package of every command not
# on PATH, keeping the packages' own services (nginx, say) from starting on the host.
# Uses the caller's log and die.
install_missing() {
    local missing=() tool
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing: ${missing[*]}"
    local made_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 || rc=$?
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# build_release PACKAGE...: the release binaries of conduit-proxy and PACKAGE..., the
# proxy built on its own: features unify across the packages of one build, and the
# proxy's function order (crates/conduit-proxy/build.rs) fits its build alone.
build_release() {
    log "building the release binaries (conduit-proxy, then: ${*:-nothing else})"
    (cd "$REPO" && cargo build --release -p conduit-proxy >&2) || die "cargo build --release -p conduit-proxy failed"
    (($#)) || return 0
    local args=() pkg
    for pkg in "$@"; do args+=(-p "$pkg"); done
    (cd "$REPO" && cargo build --release "${args[@]}" >&2) || die "cargo build --release ${args[*]} failed"
}
