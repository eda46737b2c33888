# The index766 image: the release binary, the few libraries it links, CA certificates and the
# shipped schemas/ and sql/, nothing else (no shell, no package manager), run as a numeric
# non-root user on a read-only root filesystem.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg SOURCE=https://git.example.vn/index766 -t index766:0.1.0 .
#
# tests/image.sh assembles the final stage below without a Docker daemon (from the test build's
# binary) and checks the result; keep that stage to the instructions it reads: FROM scratch,
# COPY, ARG, LABEL, ENV, USER, EXPOSE, WORKDIR, ENTRYPOINT, CMD.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release binary without its line tables (the debug info is kept apart: index766.debug).
RUN cargo build --release --locked -p index766 \
 && objcopy --only-keep-debug target/release/index766 target/release/index766.debug \
 && objcopy --strip-debug --add-gnu-debuglink=target/release/index766.debug target/release/index766 \
 && mkdir -p /rootfs/lib/x86_64-linux-gnu /rootfs/lib64 /rootfs/etc/ssl/certs /rootfs/usr/local/bin \
 && cp target/release/index766 /rootfs/usr/local/bin/index766 \
 && for lib in $(ldd target/release/index766 | grep -o '/lib[^ ]*'); do cp "$lib" "/rootfs$lib"; done \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt

FROM scratch
ARG VERSION
ARG SOURCE
COPY --from=build /rootfs/ /
COPY schemas/ /usr/share/index766/schemas/
COPY sql/ /usr/share/index766/sql/
LABEL org.opencontainers.image.title="index766" \
      org.opencontainers.image.description="Real-time Index 766 scoring pipeline" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10766:10766
WORKDIR /var/lib/index766
EXPOSE 8766 5766
ENTRYPOINT ["/usr/local/bin/index766"]
CMD ["run", "--config", "/etc/index766/config/index766.toml"]
