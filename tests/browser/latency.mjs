// Glass-to-glass latency probe: plays an HLS URL with hls.js in headless Chromium and reads, on
// every displayed frame, the wall-clock stamp the publisher drew into the picture
// (scripts/bench_latency.py: 32 black/white blocks of width/32 px, two rows of 16 starting half a
// block from the top-left corner, bit i = bit i of the low 32 bits of the ms clock, LSB first).
// Usage: node latency.mjs URL [--low-latency 0|1] [--warmup S] [--seconds S] [--hls-config JSON]
// Prints one JSON object; exits 1 if no stamp was decoded or hls.js had a fatal error.
import { withPlayerPage } from './player.mjs';

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const lowLatency = opt('low-latency', '1') !== '0';
const warmup = Number(opt('warmup', 10));
const seconds = Number(opt('seconds', 30));
const extraConfig = JSON.parse(opt('hls-config', '{}'));
if (!url || url.startsWith('--')) {
  console.error('usage: node latency.mjs URL [--low-latency 0|1] [--warmup S] [--seconds S] [--hls-config JSON]');
  process.exit(2);
}

const raw = await withPlayerPage(async (page) => {
  return page.evaluate(async ({ url, config, warmupMs, measureMs }) => {
    const video = document.getElementById('v');
    const out = { g2g: [], hlsLatency: [], targetLatency: [], ingestToScreen: [], heights: {},
                  errors: {}, fatal: null, waiting: 0, bufferStalled: 0, stallsInWindow: 0,
                  levelSwitches: -1, undecodable: 0, frames: 0, started: false };
    if (!Hls.isSupported()) { out.fatal = 'hls.js not supported'; return out; }

    // Each block is sampled at its centre: the canvas holds the stamp area at CELL px per block.
    const CELL = 8;
    const canvas = document.createElement('canvas');
    canvas.width = 17 * CELL;
    canvas.height = 3 * CELL;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const readStamp = (width) => {
      const b = width / 32;
      ctx.drawImage(video, 0, 0, 17 * b, 3 * b, 0, 0, canvas.width, canvas.height);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let low = 0;
      for (let i = 0; i < 32; i++) {
        const x0 = (1 + (i % 16)) * CELL - CELL / 4, y0 = (1 + Math.floor(i / 16)) * CELL - CELL / 4;
        let sum = 0;
        for (let y = y0; y < y0 + CELL / 2; y++) {
          for (let x = x0; x < x0 + CELL / 2; x++) {
            const o = (y * canvas.width + x) * 4;
            sum += px[o] + px[o + 1] + px[o + 2];
          }
        }
        const luma = sum / (3 * (CELL / 2) ** 2);
        // Mid-grey means a block that is not a stamp (or a smeared one): no reading beats a wrong one.
        if (luma > 64 && luma < 192) return null;
        if (luma >= 128) low += 2 ** i;
      }
      // The stamp carries the low 32 bits of the ms clock; the high bits are those of Date.now()
      // (same machine), corrected when the low bits wrapped between stamping and now.
      const now = Date.now();
      let stamp = now - (now % 2 ** 32) + low;
      if (stamp > now + 2 ** 31) stamp -= 2 ** 32;
      return stamp;
    };

    const start = performance.now();
    let firstFrameAt = null;
    const inWindow = () => firstFrameAt !== null && performance.now() - firstFrameAt >= warmupMs;
    const onFrame = (_, meta) => {
      if (firstFrameAt === null) firstFrameAt = performance.now();
      if (inWindow()) {
        out.frames++;
        out.heights[meta.height] = (out.heights[meta.height] || 0) + 1;
        const stamp = readStamp(meta.width);
        if (stamp === null) out.undecodable++;
        else out.g2g.push(performance.timeOrigin + meta.expectedDisplayTime - stamp);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);

    const hls = new Hls({ debug: false, ...config });
    hls.on(Hls.Events.ERROR, (_, d) => {
      const name = `${d.type}/${d.details}${d.fatal ? ' (fatal)' : ''}`;
      out.errors[name] = (out.errors[name] || 0) + 1;
      if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR && out.started) {
        out.bufferStalled++;
        if (inWindow()) out.stallsInWindow++;
      }
      if (d.fatal) out.fatal = d.details;
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(e => { out.errors[`play(): ${e}`] = 1; });
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, () => { out.levelSwitches++; });
    video.addEventListener('playing', () => { out.started = true; });
    video.addEventListener('waiting', () => {
      if (!out.started) return;
      out.waiting++;
      if (inWindow()) out.stallsInWindow++;
    });
    hls.loadSource(url);
    hls.attachMedia(video);

    // Playback must start within 30 s; then warm-up and the measuring window, wall-clock timed.
    while (!out.fatal) {
      await new Promise(r => setTimeout(r, 250));
      const now = performance.now();
      if (firstFrameAt === null) {
        if (now - start > 30000) { out.fatal = 'playback did not start within 30 s'; break; }
        continue;
      }
      if (now - firstFrameAt >= warmupMs + measureMs) break;
      if (!inWindow()) continue;
      // Media time against wall time over the window: below 1 without stalls means a starved
      // player whose clock slips, so latency grows for reasons outside the server.
      const clock = [now, video.currentTime, video.getVideoPlaybackQuality().droppedVideoFrames];
      out.clockStart = out.clockStart || clock;
      out.clockEnd = clock;
      out.hlsLatency.push(hls.latency);
      if (hls.targetLatency !== null) out.targetLatency.push(hls.targetLatency);
      if (hls.playingDate) out.ingestToScreen.push(Date.now() - hls.playingDate.getTime());
    }
    out.level = hls.levels[hls.currentLevel] ? hls.levels[hls.currentLevel].height : null;
    out.levels = hls.levels.map(l => l.height);
    out.autoLevel = hls.autoLevelEnabled;
    hls.destroy();
    return out;
  }, { url, config: { lowLatencyMode: lowLatency, ...extraConfig }, warmupMs: warmup * 1000,
       measureMs: seconds * 1000 });
});

const quantile = (xs, q) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))];
};
const round = (x, digits) => (x === null ? null : Number(x.toFixed(digits)));
const result = {
  url, low_latency: lowLatency, warmup_s: warmup, seconds,
  g2g_ms: { median: round(quantile(raw.g2g, 0.5), 0), p95: round(quantile(raw.g2g, 0.95), 0),
            min: round(quantile(raw.g2g, 0), 0), max: round(quantile(raw.g2g, 1), 0),
            count: raw.g2g.length },
  frames: raw.frames, undecodable_frames: raw.undecodable,
  media_clock_rate: raw.clockStart ? round((raw.clockEnd[1] - raw.clockStart[1]) * 1000
                                           / (raw.clockEnd[0] - raw.clockStart[0]), 3) : null,
  dropped_frames: raw.clockStart ? raw.clockEnd[2] - raw.clockStart[2] : null,
  hls_latency_s: round(quantile(raw.hlsLatency, 0.5), 3),
  target_latency_s: round(quantile(raw.targetLatency, 0.5), 3),
  ingest_to_screen_ms: round(quantile(raw.ingestToScreen, 0.5), 0),
  stalls: { waiting: raw.waiting, buffer_stalled: raw.bufferStalled, in_window: raw.stallsInWindow },
  level_switches: Math.max(0, raw.levelSwitches),
  levels: raw.levels, level_at_end: raw.level, auto_level: raw.autoLevel,
  frames_by_height: raw.heights,
  errors: raw.errors, fatal: raw.fatal,
};
console.log(JSON.stringify(result));
process.exit(raw.g2g.length > 0 && !raw.fatal ? 0 : 1);
