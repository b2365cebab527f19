// Keeps an hls.js viewer of a live stream near the live edge after a stall.
//
// hls.js speeds up towards its target latency only while it is within one target duration of
// it (latency-controller.ts, `inLiveRange`): further back it takes the viewer for one watching
// the past on purpose and plays on at 1×. A stall (a slow device or network) can leave a live
// viewer there for the rest of the stream, seconds behind the chat. hls.js jumps back by itself
// only with `liveMaxLatencyDuration`, which needs a fixed `liveSyncDuration` instead of the
// server's PART-HOLD-BACK, so this does it here: once a stall is over, and only then, when the
// viewer is out of hls.js's catch-up range, seek to hls.js's live sync position. A viewer who
// seeks back on purpose stays where they are until they come back within range.
//
// Shared by the watch page and the browser tests' player (tests/browser/play.mjs), so the tests
// exercise the page's own code. `onJump(seconds)` is told how far each jump skipped.
'use strict';

function keepNearLiveEdge(hls, video, onJump) {
  let stalled = false; // a stall since the last jump or seek back
  let jumping = false; // our own seek, until it is done
  let behindOnPurpose = false; // the viewer sought back
  let lastTime = 0;
  const onTimeUpdate = () => {
    if (!video.seeking) lastTime = video.currentTime;
  };
  // Waiting while seeking is the seek's, not a stall.
  const onWaiting = () => {
    if (!video.seeking && video.currentTime > 0) stalled = true;
  };
  // hls.js itself seeks forward a little to get past holes; only a seek back is the viewer's.
  const onSeeking = () => {
    if (jumping || video.currentTime >= lastTime - 1) return;
    stalled = false;
    behindOnPurpose = true;
  };
  const onSeeked = () => {
    jumping = false;
  };
  video.addEventListener('timeupdate', onTimeUpdate);
  video.addEventListener('waiting', onWaiting);
  video.addEventListener('seeking', onSeeking);
  video.addEventListener('seeked', onSeeked);
  const timer = setInterval(() => {
    const details = hls.latestLevelDetails;
    const target = hls.targetLatency;
    if (!details || !details.live || target === null || video.paused) return;
    if (hls.latency <= target + details.targetduration) {
      behindOnPurpose = false;
      return;
    }
    // Once the stall is over: a player still waiting for data gains nothing by moving.
    const playing = video.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA;
    const to = hls.liveSyncPosition;
    if (!stalled || !playing || behindOnPurpose || jumping || to === null) return;
    if (to <= video.currentTime) return;
    const skipped = to - video.currentTime;
    stalled = false;
    jumping = true;
    video.currentTime = to;
    if (onJump) onJump(skipped);
  }, 500);
  hls.on(Hls.Events.DESTROYING, () => {
    clearInterval(timer);
    video.removeEventListener('timeupdate', onTimeUpdate);
    video.removeEventListener('waiting', onWaiting);
    video.removeEventListener('seeking', onSeeking);
    video.removeEventListener('seeked', onSeeked);
  });
}
