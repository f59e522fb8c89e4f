# The engine image: one binary, `paystream` (`serve` by default; `worker …`, `migrate`, `sandbox`,
# `demo`, … as the command). docker-compose.yml runs it as the engine and as its two workers.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin paystream

FROM debian:bookworm-slim
# curl: for the healthchecks. A fixed, unprivileged uid/gid (10001), so orchestrators that insist
# on non-root (runAsNonRoot) can verify it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 paystream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/paystream --create-home \
       --shell /usr/sbin/nologin paystream
COPY --from=build /src/target/release/paystream /usr/local/bin/paystream
# Runs as that user, never root: it needs no privilege (a port above 1024; files only in its home,
# where the embedded SQLite database lands when DATABASE_URL is unset).
USER 10001:10001
WORKDIR /var/lib/paystream
# Reachable from outside the container (the engine's own default is 127.0.0.1:8080).
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["paystream"]
CMD ["serve"]
