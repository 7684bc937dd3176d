# Sourced by bench/routes and bench/routes-callgrind: the app both measure on the local
# runtime. One nginx backend behind two Services that select the same pod: `plain-svc`,
# with no profile, and `routed-svc`, with a 10-route profile whose last GET route (the
# one the requests take) is retryable and has a timeout, so that every request is matched
# against all ten, timed, and prepared for a retry; and a Deployment of busybox clients.
# Needs write_nginx_conf (lib/nginx.sh).

# write_routes_app DIR CLIENTS: the nginx config, a 32 KiB body and DIR/app.yml (not yet
# meshed) with CLIENTS client replicas.
write_routes_app() {
    local dir=$1 clients=$2 routes="" i
    write_nginx_conf "$dir/nginx" 8080
    head -c 32768 /dev/zero | tr '\0' x >"$dir/body"
    for i in $(seq 0 9); do
        routes+="  - name: \"GET /api/v1/things$i/{id}\"
    condition: {method: GET, pathRegex: \"/api/v1/things$i/[^/]+\"}
"
    done
    cat >"$dir/app.yml" <<EOF_APP
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        command: [nginx, -c, $dir/nginx/nginx.conf]
---
apiVersion: v1
kind: Service
metadata: {name: plain-svc, namespace: shop}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: routed-svc, namespace: shop}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {name: routed-svc.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
${routes%$'\n'}
    isRetryable: true
    timeout: 10s
  - name: "POST /api/v1/things9/{id}"
    condition: {method: POST, pathRegex: "/api/v1/things9/[^/]+"}
    isRetryable: true
    timeout: 10s
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  replicas: $clients
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
      - {name: client, image: busybox, command: [sleep, "36000"]}
EOF_APP
}

# client_pods CONDUIT: the client pods' names, one per line.
client_pods() {
    "$1" local status -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["pods"]:
    if p["deployment"] == "client":
        print(p["name"])'
}

# wait_for_services CONDUIT POD: until both Services answer from POD.
wait_for_services() {
    local svc
    for svc in plain-svc routed-svc; do
        for _ in $(seq 1 60); do
            "$1" local exec -n shop "$2" -- curl -sf -o /dev/null "http://$svc.shop/api/v1/things9/abc" && break
            sleep 1
        done || return 1
    done
}
