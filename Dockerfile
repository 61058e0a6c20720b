# Keyway's container image: `docker build -t keyway:0.1.0 .` (the tag `keyway manifests`
# uses by default; `--image` names another).
#
# Stage 1 builds the release binary; stage 2 is distroless: no shell, no package manager,
# only glibc and libgcc (the binary links nothing else: rustls with ring, no OpenSSL), and
# it runs as the unprivileged user 65532. The Deployment from `keyway manifests` adds a
# read-only root filesystem, no capabilities and `net.ipv4.ip_unprivileged_port_start=0`
# so that listeners on 80 and 443 need no root.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Only the gateway itself; `--locked`: exactly the dependency versions of Cargo.lock.
RUN cargo build --release --locked -p keyway \
    && install -D -m 0755 target/release/keyway /out/keyway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keyway /usr/local/bin/keyway
USER 65532:65532
EXPOSE 80 443 19000
ENTRYPOINT ["/usr/local/bin/keyway"]
CMD ["run", "--kubernetes", "--admin-address", "0.0.0.0:19000"]
