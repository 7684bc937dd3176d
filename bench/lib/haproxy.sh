# Sourced by bench/run and bench/callgrind: the reference proxy both measure beside ours.
# write_haproxy_conf FILE PORT BACKEND: an HAProxy config in FILE (one thread, http mode,
# keep-alive both ways) listening on 127.0.0.1:PORT and forwarding to BACKEND (ip:port).
write_haproxy_conf() {
    cat >"$1" <<EOF_HAPROXY
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server backend $3
EOF_HAPROXY
}
