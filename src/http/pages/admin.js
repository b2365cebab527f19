// The operator console: everything through the admin API with the session cookie and the CSRF
// token (never stored in the page beyond memory).
'use strict';

const $ = (id) => document.getElementById(id);
let csrf = '';

function say(text) { $('status').textContent = text; }

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { 'x-livegate-csrf': csrf, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (r.status === 401) { showLogin(); throw new Error('logged out'); }
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.error) || `${method} ${path}: ${r.status}`);
  return data;
}

function cell(text) { const td = document.createElement('td'); td.textContent = text ?? ''; return td; }
function button(label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', () => onClick().catch((e) => say(e.message)));
  return b;
}
function row(cells) { const tr = document.createElement('tr'); tr.append(...cells); return tr; }

function health(status) {
  if (!status) return '–';
  const parts = [status.state];
  if (status.last_error) parts.push(status.last_error);
  return parts.filter(Boolean).join(': ');
}

async function loadLive() {
  const streams = await api('GET', '/api/v1/streams');
  $('live').replaceChildren(...streams.map((s) => {
    // Each consumer's status is a field of the stream (transcode, record, relays).
    const st = s;
    const relays = Array.isArray(st.relays) ? st.relays.map((r) => `${r.platform || r.id}: ${r.state}`).join(', ') : '–';
    const source = s.video_codec ? `${s.video_codec} ${s.width}x${s.height}` : (s.node ? `on ${s.node}` : '');
    const name = document.createElement('td');
    const a = Object.assign(document.createElement('a'), { href: `/watch/${encodeURIComponent(s.name)}`, textContent: s.title ? `${s.title} (${s.name})` : s.name });
    name.append(a);
    return row([name, cell(source), cell(String(s.viewers ?? '–')), cell(health(st.transcode)), cell(health(st.record)), cell(relays)]);
  }));
  if (!streams.length) $('live').replaceChildren(row([Object.assign(cell('Nobody is live.'), { colSpan: 6 })]));
}

function showKey(result, what) {
  const box = $('new-key');
  box.hidden = false;
  box.replaceChildren(
    document.createTextNode(`${what} for ${result.user} — shown once, copy it now: `),
    Object.assign(document.createElement('code'), { textContent: result.key }),
    document.createElement('br'),
    document.createTextNode('OBS: Settings → Stream → Service "Custom…", Server '),
    Object.assign(document.createElement('code'), { textContent: result.publish_url ? result.publish_url.replace(/\/[^/]*$/, '') : '' }),
    document.createTextNode(', Stream Key: the key above; keyframe interval 2 s.'),
  );
}

async function loadUsers() {
  const [keys, channels] = await Promise.all([api('GET', '/api/v1/keys'), api('GET', '/api/v1/channels')]);
  const byUser = Object.fromEntries(channels.map((c) => [c.user, c]));
  $('users').replaceChildren(...keys.map((k) => {
    const c = byUser[k.user] || { access: 'public', title: '' };
    const title = Object.assign(document.createElement('input'), { type: 'text', value: c.title || '', maxLength: 140 });
    title.setAttribute('aria-label', `Title of ${k.user}`);
    const access = document.createElement('select');
    access.setAttribute('aria-label', `Access to ${k.user}`);
    for (const mode of ['public', 'token']) access.append(Object.assign(document.createElement('option'), { value: mode, textContent: mode, selected: c.access === mode }));
    const titleCell = document.createElement('td'); titleCell.append(title);
    const accessCell = document.createElement('td'); accessCell.append(access);
    const actions = document.createElement('td');
    actions.append(
      button('Save', async () => { await api('PUT', `/api/v1/channels/${k.user}`, { title: title.value, access: access.value }); say(`${k.user} saved`); }),
      button('Rotate key', async () => { if (!confirm(`Rotate ${k.user}'s key? Their live session ends.`)) return; showKey(await api('POST', `/api/v1/keys/${k.user}/rotate`), 'New key'); await loadUsers(); }),
      button('Revoke', async () => { if (!confirm(`Revoke ${k.user}'s key?`)) return; await api('DELETE', `/api/v1/keys/${k.user}`); say(`${k.user}'s key revoked`); await loadUsers(); }),
    );
    return row([cell(k.user), cell(k.hint), titleCell, accessCell, actions]);
  }));
}

async function loadRelays() {
  const relays = await api('GET', '/api/v1/relays');
  const list = Array.isArray(relays) ? relays : (relays.relays || []);
  $('relays').replaceChildren(...list.map((r) => row([
    cell(r.user), cell(r.platform), cell(r.target || r.url || ''),
    (() => { const td = document.createElement('td'); td.append(button('Remove', async () => { await api('DELETE', `/api/v1/relays/${r.user}/${r.id}`); await loadRelays(); })); return td; })(),
  ])));
}

let vodPlayer;
async function loadRecordings() {
  const { recordings } = await api('GET', '/api/v1/recordings?limit=50');
  $('recordings').replaceChildren(...recordings.map((m) => {
    const actions = document.createElement('td');
    actions.append(
      button('Play', async () => {
        const video = $('vod');
        video.hidden = false;
        if (vodPlayer) vodPlayer.destroy();
        vodPlayer = new Hls();
        vodPlayer.loadSource(`/vod/${m.id}/index.m3u8`);
        vodPlayer.attachMedia(video);
        say(`Playing ${m.id}`);
      }),
      Object.assign(document.createElement('a'), { href: `/api/v1/recordings/${m.id}/download.mp4`, textContent: 'Download', download: `${m.id}.mp4` }),
      button('Delete', async () => { if (!confirm(`Delete ${m.id}?`)) return; await api('DELETE', `/api/v1/recordings/${m.id}`); await loadRecordings(); }),
    );
    const viewers = m.peak_viewers === undefined ? '–' : `${m.peak_viewers} / ${m.total_viewers}`;
    return row([cell(m.id), cell(new Date(m.started_at).toLocaleString()), cell(`${Math.round(m.duration_secs)} s`), cell(m.state), cell(viewers), actions]);
  }));
}

async function loadAll() {
  const results = await Promise.allSettled([loadLive(), loadUsers(), loadRelays(), loadRecordings()]);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  say(failed.length ? failed.join('; ') : `Updated ${new Date().toLocaleTimeString()}`);
}

function showLogin() { $('console').hidden = true; $('login').hidden = false; $('token').focus(); }
function showConsole() { $('login').hidden = true; $('console').hidden = false; loadAll(); }

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/admin/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: $('token').value }) });
  $('token').value = '';
  if (!r.ok) { say((await r.json().catch(() => ({}))).error || `login failed (${r.status})`); return; }
  csrf = (await r.json()).csrf;
  showConsole();
});
// The CSRF token is dropped before the logout request so the 5 s poll stops at once.
$('logout').addEventListener('click', async () => {
  const token = csrf;
  csrf = '';
  await fetch('/admin/logout', { method: 'POST', headers: { 'x-livegate-csrf': token } }).catch(() => {});
  showLogin();
  say('Logged out');
});
$('add-user').addEventListener('submit', async (e) => {
  e.preventDefault();
  try { showKey(await api('POST', '/api/v1/keys', { user: $('new-user').value }), 'Key'); $('new-user').value = ''; await loadUsers(); } catch (err) { say(err.message); }
});
$('add-relay').addEventListener('submit', async (e) => {
  e.preventDefault();
  const platform = $('relay-platform').value;
  const value = $('relay-key').value;
  const body = { user: $('relay-user').value, platform, ...(platform === 'custom' ? { url: value } : { key: value }) };
  try { await api('POST', '/api/v1/relays', body); $('relay-key').value = ''; await loadRelays(); say('Relay added'); } catch (err) { say(err.message); }
});

(async () => {
  const r = await fetch('/admin/session');
  csrf = (r.ok && (await r.json()).csrf) || '';
  if (csrf) showConsole(); else showLogin();
  setInterval(() => { if (csrf) loadLive().catch(() => {}); }, 5000);
})();
