//! Many RTMP publishers from one process: each loops one FLV file in real time on its own
//! connection, as `ffmpeg -re -stream_loop -1 -c copy` does, at a fraction of the CPU of a
//! hundred ffmpeg processes (which took a quarter of this 2-core machine from the server and the
//! viewers in `bench.sh load 100 10000`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flv_publish::{read_flv, Publisher, Tag};

#[derive(clap::Args, Debug, Clone)]
pub struct PublisherArgs {
    /// The FLV file every publisher loops.
    #[arg(long)]
    file: std::path::PathBuf,
    /// `rtmp://host:port/app/`; each stream key is appended.
    #[arg(long)]
    rtmp: String,
    /// Stream keys, comma-separated: one publisher each.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Seconds to publish; 0: until killed.
    #[arg(long, default_value_t = 0)]
    secs: u64,
}

pub fn run(args: PublisherArgs) -> serde_json::Value {
    let tags = read_flv(&args.file);
    // Later loops leave out the codec configuration, as ffmpeg's `-stream_loop` does.
    let repeat: Vec<Tag> = tags
        .iter()
        .filter(|t| !is_sequence_header(t))
        .map(|t| Tag {
            kind: t.kind,
            ts: t.ts,
            body: t.body.clone(),
        })
        .collect();
    let tags = Arc::new((tags, repeat));
    let deadline = (args.secs > 0).then(|| Instant::now() + Duration::from_secs(args.secs));
    let loops = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let mut errors = Vec::new();
    for (n, key) in args.keys.iter().enumerate() {
        let url = format!("{}{key}", args.rtmp);
        // Connected one after another: the server allows few unauthenticated connections per
        // address at once.
        let publisher = match Publisher::connect(&url) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("publisher {n} could not connect: {e}");
                errors.push(format!("connect: {e}"));
                continue;
            }
        };
        let (tags, loops) = (tags.clone(), loops.clone());
        threads.push(std::thread::spawn(move || {
            let published = publish(publisher, &tags, &loops, deadline);
            if let Err(e) = &published {
                // Said at once: the benchmark ends this process with a signal. By index, not
                // by key: keys stay out of logs.
                eprintln!("publisher {n} stopped: {e}");
            }
            published
        }));
    }
    eprintln!("{} publishers connected", threads.len());
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("publisher thread panicked".into()),
        }
    }
    serde_json::json!({
        "publishers": args.keys.len(),
        "loops": loops.load(Ordering::Relaxed),
        "errors": errors,
    })
}

/// An AVC or AAC sequence header (FLV's packet type 0 of codec 7 or 10).
fn is_sequence_header(tag: &Tag) -> bool {
    let (Some(first), Some(0)) = (tag.body.first(), tag.body.get(1).copied()) else {
        return false;
    };
    (tag.kind == 9 && first & 0x0f == 7) || (tag.kind == 8 && first >> 4 == 10)
}

fn publish(
    mut publisher: Publisher,
    (first, repeat): &(Vec<Tag>, Vec<Tag>),
    loops: &AtomicU64,
    deadline: Option<Instant>,
) -> Result<(), String> {
    let (mut offset, mut loops_done) = (0, 0u64);
    while deadline.is_none_or(|d| Instant::now() < d) {
        let tags = if loops_done == 0 { first } else { repeat };
        offset = publisher.send(tags, offset, true)?;
        loops_done += 1;
        // Only pace_publish reads the send times; a long run would keep every one.
        publisher.video_sent.clear();
        loops.fetch_add(1, Ordering::Relaxed);
    }
    publisher.finish();
    Ok(())
}
