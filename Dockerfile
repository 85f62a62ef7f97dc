# syntax=docker/dockerfile:1
#
# Portico's container image.
#
#   docker build -t portico .                      # the production image (the last stage)
#   docker build -t portico:demo --target demo .   # the same plus fakeworker and a demo config
#
# The production image holds the repository's config.toml at /etc/portico/config.toml for
# reference only: it binds loopback, keeps state in ./data (next to the config, not
# writable here) and starts fakeworker processes, which the image does not have. Mount your
# own config over /etc/portico, with state_dir = "/var/lib/portico":
#
#   docker run --rm -v "$PWD/my-config:/etc/portico:ro" -p 8080:8080 -p 127.0.0.1:9090:9090 portico
#   docker run --rm -v "$PWD/my-config:/etc/portico:ro" portico validate --config /etc/portico/config.toml
#
# In Kubernetes the ConfigMap of deploy/kubernetes/40-config.yaml is that config.

# --- Build ------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (.dockerignore leaves out target/, data/, .git): Cargo needs every
# member's manifest to resolve the workspace, and --locked builds exactly Cargo.lock.
COPY . .
# The caches keep the crates.io index, downloaded crates and build artifacts between builds;
# the binary is copied out of the cached target/ before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway --bin portico \
 && install -D -m 0755 target/release/portico /out/portico \
 && mkdir -p /out/state

# The demo's fake model server, built only for `--target demo`.
FROM builder AS demo-builder
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bench --bin fakeworker \
 && install -D -m 0755 target/release/fakeworker /out/fakeworker

# --- Demo: docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 portico:demo ----------------
FROM gcr.io/distroless/cc-debian12:nonroot AS demo
COPY --from=builder /out/portico /usr/local/bin/portico
COPY --from=demo-builder /out/fakeworker /usr/local/bin/fakeworker
COPY deploy/docker/demo.toml /etc/portico/config.toml
COPY --from=builder --chown=65532:65532 /out/state /var/lib/portico
USER 65532:65532
WORKDIR /var/lib/portico
EXPOSE 8080 9090
ENTRYPOINT ["portico"]
CMD ["run", "--config", "/etc/portico/config.toml"]

# --- Runtime (the default target) ---------------------------------------------------------
# distroless: glibc, libgcc, CA certificates (S3, webhooks, SMTP) and nothing else — no
# shell, no package manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/portico /usr/local/bin/portico
COPY config.toml /etc/portico/config.toml
# The state directory (server.state_dir), writable by the non-root user; mount a volume here
# to keep events and usage history across containers.
COPY --from=builder --chown=65532:65532 /out/state /var/lib/portico
USER 65532:65532
WORKDIR /var/lib/portico
# 8080: the data listener of the configs in deploy/; 9090: the admin listener (/healthz,
# /metrics, admin API, console). Portico drains on SIGTERM (docker stop -t above
# grace_period_seconds) and reloads on SIGHUP (docker kill -s HUP).
EXPOSE 8080 9090
ENTRYPOINT ["portico"]
CMD ["run", "--config", "/etc/portico/config.toml"]
