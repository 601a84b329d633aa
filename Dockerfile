# portier container image: build with the Rust toolchain, run on distroless as non-root.
#
#   docker build -t ghcr.io/portier/portier:0.1.0 .
#
# The image name is a placeholder (see deploy/kustomization.yaml). The runtime image has no
# shell; portier's probes are HTTP (/healthz, /readyz on --admin-addr).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions in Cargo.lock.
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/portier /out/portier

# glibc and libgcc (what a Rust binary links to), CA certificates for HTTPS backends, and a
# "nonroot" user, uid/gid 65532. Same Debian release (12) as the build stage, so glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portier /usr/local/bin/portier
USER 65532:65532
# http, https, admin
EXPOSE 80 443 8080
ENTRYPOINT ["/usr/local/bin/portier"]
