# syntax=docker/dockerfile:1
# The images `conduit install` and `conduit inject` name, from one build:
#   docker build --target controller -t ghcr.io/conduit-mesh/controller:0.1.0 .
#   docker build --target proxy      -t ghcr.io/conduit-mesh/proxy:0.1.0 .
#   docker build --target emojivoto  -t ghcr.io/conduit-mesh/emojivoto-web:v1 .   (the sample
#     app: one image holds its four programs; tag it as each of the four the manifest names)
# (`conduit install --set controller.image=...` and `conduit inject --proxy-image ...`
# point at your own registry.) Protobufs compile with protox (pure Rust): the build needs
# no protoc and nothing outside this repository and crates.io. The proxy builds on its
# own: its function order (crates/conduit-proxy/build.rs) fits that build's symbols.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p conduit-proxy \
    && cargo build --release --locked -p conduit-controller -p emojivoto \
    && install -D -m 0755 -t /out target/release/conduit-controller target/release/conduit-proxy \
    && install -D -m 0755 -t /out/emojivoto target/release/emojivoto-emoji-svc \
       target/release/emojivoto-voting-svc target/release/emojivoto-web target/release/emojivoto-vote-bot

# The controller: one static-ish binary on a distroless base with glibc, no shell,
# running as the non-root user the Deployment names.
FROM gcr.io/distroless/cc-debian12:nonroot AS controller
COPY --from=build /out/conduit-controller /usr/local/bin/conduit-controller
USER 2103:2103
ENTRYPOINT ["/usr/local/bin/conduit-controller"]

# The proxy and its init (`conduit-proxy init` writes the pod's iptables rules with
# iptables-restore, so the image carries iptables); the proxy runs as UID 2102, the init
# container as root with only NET_ADMIN and NET_RAW.
FROM debian:bookworm-slim AS proxy
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/conduit-proxy /usr/local/bin/conduit-proxy
USER 2102:2102
ENTRYPOINT ["/usr/local/bin/conduit-proxy"]

# The sample app's four programs; the manifest runs each by its command.
FROM gcr.io/distroless/cc-debian12:nonroot AS emojivoto
COPY --from=build /out/emojivoto/ /usr/local/bin/
