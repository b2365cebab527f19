//! End-to-end tests: a real livegate process per test, real clients (ffmpeg, ffprobe, hls.js in
//! Chromium). One test binary, so `--test-threads` runs the cases in parallel.

mod access;
mod chat;
mod cli_api;
mod clock_wraps;
mod cluster;
mod codecs;
#[allow(dead_code)]
mod common;
mod edge;
mod flv_publish;
mod garage;
mod hooks;
mod hostile_flood;
mod hostile_media;
mod hostile_net;
mod hostile_record;
mod https;
mod ladder;
mod llhls;
mod pages;
mod record;
mod relay;
mod rtmp_hls;
mod shutdown;
mod sinks;
mod thumbnails;
mod whip;
mod whip_browser;
mod whip_client;
