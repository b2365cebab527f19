# livegate: build with Debian 12's FFmpeg 5.1 development libraries, run on a slim Debian 12.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
      libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
RUN cargo build --release --locked

FROM debian:bookworm-slim
# The FFmpeg runtime libraries the transcoder links against, and CA roots for RTMPS/S3.
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 \
      libavfilter8 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data livegate && mkdir -p /data && chown livegate /data
COPY --from=build /src/target/release/livegate /usr/local/bin/livegate
COPY config/livegate.toml /etc/livegate/livegate.toml
USER livegate
ENV LIVEGATE_DATA_DIR=/data LIVEGATE_CONFIG=/etc/livegate/livegate.toml
VOLUME /data
EXPOSE 1935 8080
# The binary probes its own /healthz: the slim image has no curl, and its /bin/sh (dash) has no
# /dev/tcp. `docker stop` waits 10 s: shutdown_grace_secs (8 s by default) fits in it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s CMD ["livegate", "health"]
CMD ["livegate", "serve"]
