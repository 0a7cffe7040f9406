# ometria-importer: build with the official Rust image, run on a slim base.
# The base images are build arguments, so a mirror or a local image can
# stand in for them: docker build --build-arg RUST_IMAGE=… .
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# No debug info in the image's binary (the profile keeps it for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
# Dependencies first, in a layer of their own, so that a change to the
# sources does not download and build them again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# `docker build --target test .` runs the test suite (./run.sh test does).
FROM builder AS test
COPY tests ./tests
RUN cargo test --release --locked

FROM ${RUNTIME_IMAGE}
# HTTPS needs root certificates: the builder's bundle (the binary also
# carries Mozilla's roots; this one serves whatever else runs here).
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /src/target/release/ometria-importer /usr/local/bin/ometria-importer
RUN useradd --uid 10001 --user-group --home-dir /opt/ometria --no-create-home --shell /usr/sbin/nologin ometria \
    && mkdir -p /opt/ometria/state \
    && chown -R ometria:ometria /opt/ometria
WORKDIR /opt/ometria
ENV IMPORTER_STATE_DIR=/opt/ometria/state \
    IMPORTER_METRICS_ADDR=0.0.0.0:9898 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME /opt/ometria/state
# Metrics and health; the webhook receiver, when IMPORTER_WEBHOOK_ADDR=0.0.0.0:9899.
EXPOSE 9898 9899
USER 10001:10001
# The importer is PID 1 and stops cleanly on SIGTERM within its 8 s grace
# period, under Docker's 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["ometria-importer", "health"]
ENTRYPOINT ["ometria-importer"]
CMD ["go"]
