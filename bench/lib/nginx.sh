# Sourced by bench/run and bench/mtls: the backend both measure against.
# write_nginx_conf DIR PORT: an nginx config in DIR (one worker, `return 200 "ok"`,
# keep-alive, no access log, everything it writes kept under DIR) listening on PORT.
write_nginx_conf() {
    local dir=$1 port=$2
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF_NGINX
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen $port backlog=4096;
        location / { default_type text/plain; return 200 "ok"; }
    }
}
EOF_NGINX
}
