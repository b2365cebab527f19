//! The load generator behind `scripts/bench.sh load` and the chat part of `bench.sh site`: a
//! benchmark tool, not a test.
//!
//! `load viewers`: simulated players that behave like hls.js (master, then the media playlist
//! every target duration — or blocking reloads and parts in LL-HLS mode — fetching every new
//! segment or part; some switch rungs), one keep-alive connection each, with latency per request
//! kind, errors, bytes/s and the server's CPU, RSS, threads and file descriptors over time.
//! `load chat`: WebSocket connections in one room while the site posts events at a fixed rate.
//! `load publishers`: many RTMP publishers looping one FLV file in real time, from one process.
//! Prints a JSON report on stdout; progress goes to stderr.

mod chat;
mod client;
#[path = "../../tests/e2e/flv_publish.rs"]
mod flv_publish;
mod process;
mod publishers;
mod stats;
mod viewers;

use clap::Parser;

#[derive(Parser)]
#[command(name = "load", about = "livegate load generator")]
enum Command {
    /// hls.js-like viewers.
    Viewers(viewers::ViewerArgs),
    /// Chat fan-out.
    Chat(chat::ChatArgs),
    /// RTMP publishers looping a file.
    Publishers(publishers::PublisherArgs),
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    raise_fd_limit();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    let report = match Command::parse() {
        Command::Viewers(args) => runtime().block_on(viewers::run(args)),
        Command::Chat(args) => runtime().block_on(chat::run(args)),
        // Blocking sockets, a thread each: no runtime.
        Command::Publishers(args) => publishers::run(args),
    };
    println!("{report}");
}
