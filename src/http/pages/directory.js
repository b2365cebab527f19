// The directory: every live stream with its thumbnail, title, viewers and uptime, refreshed
// every 5 s from /api/v1/streams.
'use strict';

function uptime(started) {
  const secs = Math.max(0, Math.floor((Date.now() - Date.parse(started)) / 1000));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min`;
}

function card(s) {
  const li = document.createElement('li');
  li.className = 'card';
  const a = document.createElement('a');
  a.href = `/watch/${encodeURIComponent(s.name)}`;
  const title = s.title || s.name;
  a.setAttribute('aria-label', `${title}, ${s.viewers ?? 0} watching`);
  if (s.access === 'token') {
    const p = document.createElement('div');
    p.className = 'placeholder';
    p.textContent = 'Members only';
    a.append(p);
  } else {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.alt = '';
    img.loading = 'lazy';
    // A new URL per refresh: the thumbnail changes every few seconds.
    img.src = `/live/${encodeURIComponent(s.name)}/thumb.jpg?at=${Math.floor(Date.now() / 5000)}`;
    img.addEventListener('error', () => { img.replaceWith(Object.assign(document.createElement('div'), { className: 'placeholder', textContent: 'Starting…' })); });
    a.append(img);
  }
  const body = document.createElement('div');
  body.className = 'body';
  const h = document.createElement('p');
  h.className = 'title';
  h.textContent = title;
  const meta = document.createElement('p');
  meta.className = 'meta';
  const live = document.createElement('span');
  live.className = 'live';
  live.textContent = 'LIVE';
  const watching = s.viewers === undefined ? '' : ` · ${s.viewers} watching`;
  const since = s.started_at ? ` · ${uptime(s.started_at)}` : '';
  meta.append(live, document.createTextNode(` ${s.name}${watching}${since}`));
  body.append(h, meta);
  a.append(body);
  li.append(a);
  return li;
}

async function refresh() {
  const status = document.getElementById('status');
  try {
    const r = await fetch('/api/v1/streams');
    if (!r.ok) throw new Error(`the server answered ${r.status}`);
    const streams = (await r.json()).filter((s) => s.state === undefined || s.state === 'live');
    document.getElementById('streams').replaceChildren(...streams.map(card));
    status.textContent = streams.length ? `${streams.length} live` : 'Nobody is live right now.';
  } catch (e) {
    status.textContent = `Cannot load the streams: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 5000);
