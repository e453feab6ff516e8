# The millrace worker image: a static-ish release build on Debian, run as a non-root user on a slim base.
#   docker build -t millrace .
#   docker run --rm millrace plugin inspect /plugins/router.wasm
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY runtime runtime
COPY plugin-registry plugin-registry
COPY worker worker
COPY tests tests
RUN cargo build --release --locked -p millrace-worker --bin millrace \
 && strip target/release/millrace

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/cache/millrace /etc/millrace && chown 65532:65532 /var/cache/millrace
COPY --from=build /src/target/release/millrace /usr/local/bin/millrace
USER 65532:65532
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/millrace"]
CMD ["worker", "--config", "/etc/millrace/worker.yaml"]
