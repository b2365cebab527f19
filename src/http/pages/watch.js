// The watch page: hls.js (low-latency, quality choice, live latency shown), the stream's title
// and viewers, and its chat. A `?token=` in the page URL is passed to the player and the chat.
'use strict';

const user = decodeURIComponent(location.pathname.split('/')[2] || '');
const token = new URLSearchParams(location.search).get('token');
const withToken = (url) => (token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url);
const $ = (id) => document.getElementById(id);

function status(text, error) {
  const el = $('status');
  el.hidden = !text;
  el.textContent = text || '';
  el.classList.toggle('error', Boolean(error));
}

let channel = { access: 'public' };

async function loadChannel() {
  try {
    const r = await fetch(`/api/v1/channels/${encodeURIComponent(user)}`);
    if (!r.ok) return;
    channel = await r.json();
    $('title').textContent = channel.title || user;
    $('description').textContent = channel.description || '';
    document.title = `${channel.title || user} · livegate`;
  } catch (_) { /* the title stays the user name */ }
}

// This user's entry in the streams list, or undefined when offline.
async function liveEntry() {
  const r = await fetch('/api/v1/streams');
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  return (await r.json()).find((x) => x.name === user);
}

async function refreshViewers() {
  try {
    const s = await liveEntry();
    $('viewers').textContent = s && s.viewers !== undefined ? `${s.viewers} watching` : '';
  } catch (_) { /* shown again at the next refresh */ }
}

const needsTicket = () => channel.access === 'token' && !token;

let hls;
let retry;
let liveJumps = 0; // back to the live edge after a stall (live-edge.js); read by the page test

async function play() {
  clearTimeout(retry);
  if (needsTicket()) {
    status('This stream is for ticket holders: open it from the site you came from.', true);
    return;
  }
  let live;
  try {
    live = await liveEntry();
  } catch (e) {
    status(`Cannot reach the server (${e.message}); retrying…`, true);
    retry = setTimeout(play, 5000);
    return;
  }
  if (!live) {
    status(`${user} is offline. This page starts playing when they go live.`);
    retry = setTimeout(play, 5000);
    return;
  }
  if (live.playable === false) {
    status(`${user} is starting…`);
    retry = setTimeout(play, 1000);
    return;
  }
  status('');
  const master = withToken(`/live/${encodeURIComponent(user)}/index.m3u8`);
  const video = $('video');
  if (!window.Hls || !Hls.isSupported()) {
    video.src = master; // Safari plays HLS natively.
    return;
  }
  if (hls) hls.destroy();
  hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
  keepNearLiveEdge(hls, video, () => { liveJumps += 1; });
  hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
    const select = $('quality');
    const options = data.levels.map((l, i) => {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = l.height ? `${l.height}p` : `${Math.round(l.bitrate / 1000)} kbit/s`;
      return o;
    });
    const auto = document.createElement('option');
    auto.value = '-1';
    auto.textContent = 'Auto';
    select.replaceChildren(auto, ...options);
    select.disabled = false;
    video.play().catch(() => status('Press play to start.'));
  });
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (!data.fatal) return;
    hls.destroy();
    hls = undefined;
    if (data.response && data.response.code === 403) {
      status('Access denied: the ticket is not valid for this stream (expired?). Reopen it from the site you came from.', true);
      return;
    }
    status('Playback stopped (the stream may have ended); trying again…', true);
    retry = setTimeout(play, 5000);
  });
  hls.loadSource(master);
  hls.attachMedia(video);
}

$('quality').addEventListener('change', (e) => {
  if (hls) hls.currentLevel = Number(e.target.value);
});

setInterval(() => {
  if (hls && Number.isFinite(hls.latency) && hls.latency > 0) {
    $('latency').textContent = `Latency ${hls.latency.toFixed(1)} s`;
  }
}, 1000);

// Chat.
let ws;
function line(cls, who, text, entry) {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  if (entry && entry.id !== undefined) li.dataset.id = String(entry.id);
  if (entry && entry.sender) li.dataset.sender = entry.sender;
  if (who) {
    const w = document.createElement('span');
    w.className = 'who';
    w.textContent = who;
    li.append(w);
  }
  li.append(document.createTextNode(text));
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.children.length > 200) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function describe(e) {
  const d = e.data || {};
  if (e.kind === 'tip') return `${d.from || 'Someone'} tipped ${d.amount ?? ''}`.trim();
  if (typeof d.text === 'string') return d.text;
  return e.kind;
}

function show(entry) {
  switch (entry.type) {
    case 'welcome':
      $('say').disabled = false;
      if (!$('name').value) $('name').value = entry.name;
      $('messages').replaceChildren();
      entry.history.forEach(show);
      line('system', '', `You are ${entry.name}.`);
      break;
    case 'message': line('', entry.name, entry.text, entry); break;
    case 'event': line('event', '', describe(entry), entry); break;
    case 'deleted': document.querySelectorAll(`#messages li[data-id="${entry.id}"]`).forEach((li) => li.remove()); break;
    case 'banned': document.querySelectorAll('#messages li[data-sender]').forEach((li) => { if (li.dataset.sender === entry.sender) li.remove(); }); break;
    case 'error': line('system', '', entry.error); break;
    default: break;
  }
}

function connectChat() {
  if (needsTicket()) {
    line('system', '', 'Chat is for ticket holders.');
    return;
  }
  const name = $('name').value.trim() || localStorage.getItem('livegate-name') || '';
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  let url = `${scheme}://${location.host}/live/${encodeURIComponent(user)}/chat`;
  if (name) url += `?name=${encodeURIComponent(name)}`;
  ws = new WebSocket(withToken(url));
  ws.onmessage = (m) => { try { show(JSON.parse(m.data)); } catch (_) { /* not ours */ } };
  ws.onclose = (e) => {
    $('say').disabled = true;
    line('system', '', e.code === 1006 ? 'Chat unavailable (this stream may need a ticket). Reconnecting…' : `Chat closed (${e.reason || e.code}). Reconnecting…`);
    setTimeout(connectChat, 5000);
  };
}

$('send').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ type: 'message', text }));
  $('text').value = '';
});
$('name').addEventListener('change', () => {
  localStorage.setItem('livegate-name', $('name').value.trim());
  if (ws) { ws.onclose = null; ws.close(); }
  connectChat();
});

$('title').textContent = user;
$('name').value = localStorage.getItem('livegate-name') || '';
setInterval(refreshViewers, 10000);
loadChannel().then(() => {
  refreshViewers();
  play();
  connectChat();
});
