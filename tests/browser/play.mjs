// Plays an HLS URL with hls.js in headless Chromium and reports what happened as JSON.
// Usage: node play.mjs URL [--seconds N] [--level N] [--timeout N] [--low-latency 0|1]
//        [--hls-config JSON]   (merged into the Hls config, e.g. {"maxLiveSyncPlaybackRate":1.5})
// With LL-HLS playlists and --low-latency 1 (hls.js's default), hls.js loads parts and blocks on
// playlist reloads; the report then counts the parts loaded and samples hls.latency.
// With SWITCH_LEVELS=2,0,1 in the environment, it asks hls.js for each of those levels in turn
// (hls.nextLevel: a seamless switch at the next fragment), one every SWITCH_EVERY seconds of
// playback (default 2), and reports the levels switched to and the picture heights seen.
// With BACK_TO_LIVE=1 it runs the watch page's keepNearLiveEdge (src/http/pages/live-edge.js) as
// sites are advised to, and reports its jumps; the seconds they skipped do not count as played.
// Exit 0 when at least N seconds of media played without a fatal hls.js error, 1 otherwise.
import { withPlayerPage } from './player.mjs';

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const seconds = opt('seconds', 3);
const level = opt('level', -1);
const timeoutMs = opt('timeout', 40) * 1000;
const lowLatencyMode = opt('low-latency', 1) === 1;
const configAt = args.indexOf('--hls-config');
const hlsConfig = configAt >= 0 ? JSON.parse(args[configAt + 1]) : {};
const switchLevels = (process.env.SWITCH_LEVELS || '').split(',').filter(Boolean).map(Number);
const switchEvery = Number(process.env.SWITCH_EVERY || 2);
const backToLive = process.env.BACK_TO_LIVE === '1';
if (!url) {
  console.error('usage: node play.mjs URL [--seconds N] [--level N] [--timeout N]');
  process.exit(2);
}

const result = await withPlayerPage(async (page) => {
  return page.evaluate(async ({ url, seconds, level, timeoutMs, lowLatencyMode, hlsConfig,
                                switchLevels, switchEvery, backToLive }) => {
    const video = document.getElementById('v');
    const out = { supported: Hls.isSupported(), errors: [], levels: [], fatal: null,
                  currentTime: 0, playedLevel: null, programDateTime: null, lowLatencyMode,
                  partsLoaded: 0, segmentsLoaded: 0, stalls: 0, latencies: [],
                  targetLatency: null, requested: [], switched: [], heights: [],
                  jumps: 0, skipped: 0 };
    if (!out.supported) return out;
    const hls = new Hls({ debug: false, lowLatencyMode, ...hlsConfig });
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      if (d.part) out.partsLoaded++; else out.segmentsLoaded++;
    });
    video.addEventListener('waiting', () => { if (video.currentTime > 0) out.stalls++; });
    if (backToLive) {
      keepNearLiveEdge(hls, video, (skipped) => { out.jumps++; out.skipped += skipped; });
    }
    hls.on(Hls.Events.ERROR, (_, d) => {
      out.errors.push(`${d.type}/${d.details}${d.fatal ? ' (fatal)' : ''}`);
      if (d.fatal) out.fatal = d.details;
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
      out.levels = d.levels.map(l => ({ width: l.width, height: l.height, bitrate: l.bitrate,
                                        codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(',') }));
      if (level >= 0) { hls.currentLevel = level; hls.loadLevel = level; hls.autoLevelEnabled = false; }
      video.play().catch(e => out.errors.push(`play(): ${e}`));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => out.switched.push(d.level));
    hls.on(Hls.Events.FRAG_CHANGED, (_, d) => {
      out.playedLevel = d.frag.level;
      if (d.frag.programDateTime) out.programDateTime = d.frag.programDateTime;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    const start = Date.now();
    let startTime = null;
    while (Date.now() - start < timeoutMs && !out.fatal) {
      await new Promise(r => setTimeout(r, 200));
      if (startTime === null && video.currentTime > 0) startTime = video.currentTime;
      const next = out.requested.length;
      if (startTime !== null && next < switchLevels.length &&
          video.currentTime - startTime >= (next + 1) * switchEvery) {
        hls.nextLevel = switchLevels[next];
        out.requested.push(switchLevels[next]);
      }
      if (video.videoHeight && out.heights[out.heights.length - 1] !== video.videoHeight) {
        out.heights.push(video.videoHeight);
      }
      // hls.latency: seconds behind the live edge, sampled once playback has settled.
      if (startTime !== null && video.currentTime - startTime > 3 && hls.latency > 0) {
        out.latencies.push(Math.round(hls.latency * 1000) / 1000);
        out.targetLatency = hls.targetLatency;
      }
      if (startTime !== null && video.currentTime - startTime - out.skipped >= seconds) break;
      if (video.ended) break;
    }
    out.currentTime = video.currentTime;
    out.played = startTime === null ? 0 : video.currentTime - startTime - out.skipped;
    out.videoWidth = video.videoWidth;
    out.videoHeight = video.videoHeight;
    out.decodedFrames = video.getVideoPlaybackQuality().totalVideoFrames;
    hls.destroy();
    return out;
  }, { url, seconds, level, timeoutMs, lowLatencyMode, hlsConfig, switchLevels, switchEvery,
       backToLive });
});
console.log(JSON.stringify(result));
process.exit(result.supported && !result.fatal && result.played >= seconds ? 0 : 1);
