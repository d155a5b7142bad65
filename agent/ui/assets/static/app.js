// Cake Agents web UI. Vanilla JS, no build step. Every value from the API is put into
// the page with textContent, never as markup.
'use strict';

(function () {
  const body = document.body;
  const API = body.dataset.api || '/api/v1';
  const CSRF_HEADER = 'X-Cake-CSRF';
  const $ = (sel, root) => (root || document).querySelector(sel);

  // el builds an element: el('td', {class: 'x', 'data-label': 'State'}, 'text', child)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls the JSON API with the browser's credentials (proxy headers or the
  // sign-in cookie) and the CSRF header; errors carry the API's message.
  async function api(method, path, data) {
    const opts = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json', [CSRF_HEADER]: '1' } };
    if (data !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(data);
    }
    let res;
    try {
      res = await fetch(API + path, opts);
    } catch (e) {
      throw new ApiError(0, 'Network', 'Cannot reach the agent. Check your connection; retrying.');
    }
    if (res.status === 204) return null;
    let payload = null;
    if ((res.headers.get('Content-Type') || '').includes('json')) payload = await res.json().catch(() => null);
    if (!res.ok) {
      const err = payload && payload.error ? payload.error : { code: 'HTTP' + res.status, message: res.statusText || 'request failed' };
      throw new ApiError(res.status, err.code, err.message);
    }
    return payload;
  }

  // showError fills the page's alert with the error (and a sign-in link for 401).
  function showError(err, box) {
    box = box || $('#error');
    if (!box) return;
    if (!err) { box.hidden = true; box.textContent = ''; return; }
    box.textContent = err.message || String(err);
    if (err.status === 401) {
      box.append(' ', el('a', { href: '/login?next=' + encodeURIComponent(location.pathname) }, 'Sign in again'));
    }
    box.hidden = false;
  }

  let toastTimer;
  function toast(msg) {
    const t = $('#toast');
    if (!t) return;
    t.textContent = msg;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
  }

  // Times
  function ago(iso, future) {
    if (!iso) return '—';
    const t = new Date(iso).getTime();
    if (isNaN(t) || t <= 0) return '—';
    let s = Math.round((Date.now() - t) / 1000);
    const inFuture = s < 0;
    s = Math.abs(s);
    const m = Math.round(s / 60);
    const h = Math.round(s / 3600);
    let v;
    if (s < 45) v = inFuture ? 'moments' : 'just now';
    else if (m < 60) v = m + 'm';
    else if (h < 24) v = h + 'h';
    else v = Math.round(s / 86400) + 'd';
    if (v === 'just now') return v;
    return inFuture || future ? 'in ' + v : v + ' ago';
  }
  function timeEl(iso, future) {
    if (!iso) return el('span', { class: 'muted' }, '—');
    return el('time', { datetime: iso, title: new Date(iso).toLocaleString(), 'data-ago': future ? 'future' : 'past' }, ago(iso, future));
  }
  function refreshTimes() {
    document.querySelectorAll('time[data-ago]').forEach((t) => { t.textContent = ago(t.getAttribute('datetime'), t.dataset.ago === 'future'); });
  }
  setInterval(refreshTimes, 15000);

  function badge(state) {
    return el('span', { class: 'badge st-' + state }, state);
  }

  function repoText(s) {
    if (!s.repo) return el('span', { class: 'muted' }, 'no repository');
    const short = s.repo.replace(/^https?:\/\//, '').replace(/\.git$/, '');
    return el('span', { class: 'repo', title: s.repo }, short + (s.branch ? ' @ ' + s.branch : ''));
  }

  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('[data-copy]');
    if (!btn) return;
    const src = document.getElementById(btn.dataset.copy);
    if (!src) return;
    const text = src.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(src);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      document.execCommand('copy');
    }
    btn.textContent = 'Copied';
    toast('Copied to the clipboard');
    setTimeout(() => { btn.textContent = 'Copy'; }, 1500);
  });

  // poll runs fn now and every ms while the tab is visible.
  function poll(fn, ms) {
    let timer = null;
    let running = false;
    const tick = async () => {
      if (running) return;
      running = true;
      try { await fn(); } finally { running = false; }
    };
    const start = () => { if (!timer) { timer = setInterval(tick, ms); } };
    const stop = () => { clearInterval(timer); timer = null; };
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) { stop(); } else { tick(); start(); }
      document.querySelectorAll('.live').forEach((l) => l.classList.toggle('paused', document.hidden));
    });
    tick();
    start();
    return { tick, stop };
  }

  // ---- Session tables (list page and admin) ----

  function sessionRow(s) {
    const title = el('a', { class: 's-title', href: '/sessions/' + encodeURIComponent(s.id) }, s.title || s.id);
    const first = el('td', { 'data-label': 'Session' }, title, el('span', { class: 's-id' }, s.id),
      s.private ? null : el('span', { class: 'tag', title: 'Visible to everyone' }, 'public'),
      s.persistent ? el('span', { class: 'tag', title: 'Workspace kept on a volume' }, 'persistent') : null,
      s.startKind === 'warm' ? el('span', { class: 'tag', title: 'Started on a pod of the warm pool' }, 'warm') : null);
    const state = el('td', { 'data-label': 'State' }, badge(s.state));
    if (s.reason && s.state !== 'Running') state.title = s.reason + (s.message ? ': ' + s.message : '');
    return el('tr', { 'data-id': s.id, 'data-state': s.state },
      first,
      state,
      el('td', { 'data-label': 'Repository' }, repoText(s)),
      el('td', { 'data-label': 'Owner' }, s.owner || s.ownerId),
      el('td', { 'data-label': 'Age' }, timeEl(s.createdAt)),
      el('td', { 'data-label': 'Last activity' }, timeEl(s.lastActivityAt), s.lastActivitySource ? el('span', { class: 'muted small' }, ' · ' + s.lastActivitySource) : null));
  }

  // sessionTable keeps a table of sessions fresh: it reloads the pages already shown
  // and re-renders only when something changed, so focus and scrolling survive.
  function sessionTable(query) {
    const table = $('#sessions');
    const tbody = table.querySelector('tbody');
    const loading = $('#loading');
    const empty = $('#empty');
    const moreWrap = $('#more-wrap');
    let pages = 1;
    let last = '';
    let q = query;
    async function load() {
      let items = [];
      let cont = '';
      try {
        for (let i = 0; i < pages; i++) {
          const params = new URLSearchParams(q());
          params.set('limit', '50');
          if (cont) params.set('continue', cont);
          const page = await api('GET', '/sessions?' + params.toString());
          items = items.concat(page.items || []);
          cont = page.continue || '';
          if (!cont) break;
        }
        showError(null);
      } catch (e) {
        showError(e);
        loading.hidden = true;
        return;
      }
      loading.hidden = true;
      const key = JSON.stringify([items, cont]);
      if (key === last) return;
      last = key;
      tbody.replaceChildren(...items.map(sessionRow));
      table.hidden = items.length === 0;
      empty.hidden = items.length !== 0;
      moreWrap.hidden = !cont;
    }
    $('#more').addEventListener('click', () => { pages++; load(); });
    const p = poll(load, 3000);
    return { reload: () => { last = ''; pages = 1; p.tick(); } };
  }

  function sessionsPage() {
    const scope = () => (document.querySelector('input[name="scope"]:checked') || {}).value;
    const t = sessionTable(() => (scope() === 'mine' ? { owner: 'me' } : {}));
    const deleted = new URLSearchParams(location.search).get('deleted');
    if (deleted) {
      toast('Session ' + deleted + ' is being deleted');
      history.replaceState(null, '', '/');
    }
    document.querySelectorAll('input[name="scope"]').forEach((r) => r.addEventListener('change', () => {
      $('#loading').hidden = false;
      t.reload();
    }));
  }

  // ---- Create ----

  // loadModels fills the model picker: the default first (sent as no model, so the
  // agent's default applies), then every model a provider offers.
  async function loadModels() {
    const sel = $('#model');
    try {
      const list = await api('GET', '/models');
      const items = list.items || [];
      if (items.length === 0) {
        sel.replaceChildren(el('option', { value: '' }, 'No model provider is configured'));
        $('#model-help').textContent = 'No session can start until an admin adds a model provider (Settings › Providers).';
        return;
      }
      const def = items.find((m) => m.default);
      const opts = [el('option', { value: '' }, def ? 'Default (' + def.id + ')' : 'Default')];
      for (const m of items) {
        if (m.anyModel) continue; // a gateway takes any name: its default is listed above
        opts.push(el('option', { value: m.id }, m.name && m.name !== m.id ? m.id + ' — ' + m.name : m.id));
      }
      sel.replaceChildren(...opts);
      sel.disabled = false;
    } catch (e) {
      sel.replaceChildren(el('option', { value: '' }, 'Default'));
      showError(e);
    }
  }

  function newPage() {
    const form = $('#create');
    loadModels();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const btn = $('#submit');
      const req = {
        title: $('#title').value.trim(),
        repo: $('#repo').value.trim(),
        branch: $('#branch').value.trim(),
        prompt: $('#prompt').value,
        private: $('#private').checked,
        persistent: $('#persistent').checked,
        model: $('#model').value,
      };
      for (const k of ['title', 'repo', 'branch', 'prompt', 'model']) if (!req[k].trim()) delete req[k];
      if (!req.prompt && !req.repo) {
        showError(new Error('Give the agent a prompt or a repository to work on.'));
        $('#prompt').focus();
        return;
      }
      btn.disabled = true;
      btn.textContent = 'Creating…';
      try {
        const s = await api('POST', '/sessions', req);
        location.assign('/sessions/' + encodeURIComponent(s.id));
      } catch (e) {
        showError(e);
        btn.disabled = false;
        btn.textContent = 'Create session';
        $('#error').scrollIntoView({ block: 'nearest' });
      }
    });
  }

  // ---- Session detail ----

  function sessionPage() {
    const id = body.dataset.session;
    const path = '/sessions/' + encodeURIComponent(id);
    const messages = $('#messages');
    const activity = $('#activity');
    let sess = null;
    let es = null;
    let lastKey = '';
    const bubbles = new Map(); // message id -> {node, text}
    const roles = new Map(); // message id -> role, from OpenCode's message events
    let logsTimer = null;

    // note sets the status line under the conversation (none when text is empty).
    function note(text) {
      let n = messages.querySelector('.msg-note');
      if (!text) { if (n) n.remove(); return; }
      if (!n) { n = el('p', { class: 'msg-note' }); }
      messages.append(n);
      n.textContent = text;
    }

    function bubble(mid, role) {
      let b = bubbles.get(mid);
      if (!b) {
        const text = el('span', { class: 'msg-text' });
        const node = el('div', { class: 'msg msg-' + (role === 'user' ? 'user' : 'assistant'), 'data-id': mid },
          el('span', { class: 'msg-role' }, role === 'user' ? 'You' : 'Agent'), text);
        const n = messages.querySelector('.msg-note');
        if (n) n.remove();
        messages.append(node);
        b = { node, text };
        bubbles.set(mid, b);
      }
      return b;
    }

    function scrollDown() {
      messages.scrollTop = messages.scrollHeight;
    }

    async function loadLogs() {
      try {
        const list = await api('GET', path + '/logs');
        const items = list.items || [];
        messages.replaceChildren();
        bubbles.clear();
        if (items.length === 0) note('No messages yet. Send a prompt to start the conversation.');
        for (const m of items) {
          const b = bubble(m.id, m.role);
          b.text.textContent = m.text;
        }
        const last = items[items.length - 1];
        if (last && last.role === 'user' && !activity.textContent) activity.textContent = 'Agent is working…';
        scrollDown();
      } catch (e) {
        if (e.code !== 'SessionNotRunning') note('Could not load the conversation: ' + e.message);
      }
    }
    function loadLogsSoon() {
      clearTimeout(logsTimer);
      logsTimer = setTimeout(loadLogs, 400);
    }

    function onEvent(ev) {
      let e;
      try { e = JSON.parse(ev.data); } catch (x) { return; }
      const type = e.type || ev.type;
      const p = e.properties || {};
      if (type === 'message.updated' && p.info && p.info.id) {
        roles.set(p.info.id, p.info.role);
      } else if (type === 'message.part.updated' && p.part && p.part.type === 'text' && p.part.messageID) {
        const role = roles.get(p.part.messageID) || 'assistant';
        const b = bubble(p.part.messageID, role);
        b.text.textContent = p.part.text || '';
        scrollDown();
      } else if (type && type.startsWith('message.part.') && typeof p.delta === 'string') {
        const mid = p.messageID || 'streaming';
        const b = bubble(mid, roles.get(mid) || 'assistant');
        b.node.classList.add('msg-streaming');
        b.text.textContent += p.delta;
        activity.textContent = 'Agent is replying…';
        scrollDown();
      } else if (type === 'session.status') {
        const st = p.status && p.status.type;
        activity.textContent = st === 'busy' ? 'Agent is working…' : st === 'retry' ? 'Retrying the model…' : '';
      } else if (type === 'session.idle') {
        activity.textContent = '';
        messages.querySelectorAll('.msg-streaming').forEach((n) => n.classList.remove('msg-streaming'));
        loadLogsSoon();
      }
    }

    function openStream() {
      if (es) return;
      es = new EventSource(API + path + '/events');
      es.onmessage = onEvent;
      // Once the stream is live, read the history again: events sent while it was
      // connecting are in it.
      es.onopen = () => { activity.textContent = ''; loadLogsSoon(); };
      es.onerror = () => {
        if (es && es.readyState === EventSource.CLOSED) { es = null; }
        if (sess && sess.state === 'Running') activity.textContent = 'Reconnecting to the event stream…';
      };
    }
    function closeStream() {
      if (es) { es.close(); es = null; }
    }

    function kv(k, v) { return [el('dt', {}, k), el('dd', {}, v)]; }
    // prLink links the pull request the agent opened; only an https:// URL becomes a link.
    function prLink(u) {
      if (!u || !/^https:\/\//.test(u)) return null;
      return el('a', { id: 'pull-request', href: u, target: '_blank', rel: 'noopener noreferrer' }, u.replace(/^https:\/\/[^/]+\//, ''));
    }

    function render() {
      const s = sess;
      document.title = (s.title || s.id) + ' · Cake Agents';
      $('#title').textContent = s.title || s.id;
      $('#title').title = s.title || s.id;
      const st = $('#state');
      st.className = 'badge st-' + s.state;
      st.textContent = s.state;
      const why = [s.reason, s.message].filter(Boolean).join(': ');
      $('#reason').textContent = why;
      const running = s.state === 'Running';
      const active = ['Pending', 'Starting', 'Running'].includes(s.state);
      $('#stop').hidden = !active;
      if ($('#open-web')) $('#open-web').hidden = !running;
      $('#start').hidden = !(s.state === 'Stopped' || s.state === 'Failed');
      $('#delete').disabled = s.state === 'Deleting';
      const composer = $('#send');
      $('#text').disabled = !running;
      $('#send-btn').disabled = !running;
      composer.classList.toggle('disabled', !running);
      $('#kv').replaceChildren(
        ...kv('ID', el('span', { class: 'mono' }, s.id)),
        ...kv('Owner', s.owner || s.ownerId),
        ...kv('Repository', s.repo ? el('span', { class: 'repo' }, s.repo) : el('span', { class: 'muted' }, 'none')),
        ...kv('Branch', s.currentBranch || s.branch || el('span', { class: 'muted' }, 'default')),
        ...(prLink(s.pullRequestURL) ? kv('Pull request', prLink(s.pullRequestURL)) : []),
        ...kv('Visibility', s.private ? 'Private' : 'Public'),
        ...kv('Workspace', s.persistent ? 'Persistent volume' : 'Temporary'),
        ...kv('Start', s.startKind === 'warm' ? 'Warm (a pod of the warm pool)' : 'Cold (a pod made for it)'),
        ...kv('Created', timeEl(s.createdAt)),
        ...kv('Last activity', el('span', {}, timeEl(s.lastActivityAt), s.lastActivitySource ? ' (' + s.lastActivitySource + ')' : '')),
        ...(s.idleDeadline ? kv('Idle stop', timeEl(s.idleDeadline, true)) : []),
        ...(s.expiresAt ? kv('Expires', timeEl(s.expiresAt, true)) : []),
        ...(s.podName ? kv('Pod', el('span', { class: 'mono' }, (s.podNamespace ? s.podNamespace + '/' : '') + s.podName)) : []),
      );
    }

    let wasRunning = false;
    let lastState = '';
    async function load() {
      try {
        sess = await api('GET', path);
        showError(null);
      } catch (e) {
        if (e.status === 404) {
          closeStream();
          $('#detail').hidden = true;
          $('#gone').hidden = false;
          if (pollHandle) pollHandle.stop();
          return;
        }
        showError(e);
        return;
      }
      $('#detail').hidden = false;
      const key = JSON.stringify(sess);
      if (key !== lastKey) { lastKey = key; render(); }
      const running = sess.state === 'Running';
      if (running && !wasRunning) {
        // Subscribe before reading the history: a reply that lands in between is then
        // either in the history or on the stream, never lost.
        openStream();
        await loadLogs();
      } else if (!running && sess.state !== lastState) {
        closeStream();
        activity.textContent = '';
        const ended = sess.state === 'Stopped' || sess.state === 'Failed';
        // The agent keeps the conversation of a stopped session: show it, once.
        if (ended) await loadLogs();
        note(sess.state === 'Pending' || sess.state === 'Starting'
          ? 'Starting the session… the conversation appears when it is Running.'
          : 'The session is ' + sess.state + '.' + (ended ? ' Start it to continue the conversation.' : ''));
      }
      wasRunning = running;
      lastState = sess.state;
    }

    async function action(btn, verb) {
      btn.disabled = true;
      try {
        sess = await api('POST', path + '/' + verb);
        lastKey = '';
        toast(verb === 'stop' ? 'Stopping the session' : 'Starting the session');
        await load();
      } catch (e) {
        showError(e);
      } finally {
        btn.disabled = false;
      }
    }
    $('#stop').addEventListener('click', (ev) => action(ev.currentTarget, 'stop'));
    $('#start').addEventListener('click', (ev) => action(ev.currentTarget, 'start'));
    $('#fork').addEventListener('click', async (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      try {
        const s = await api('POST', '/sessions', { forkOf: id });
        location.assign('/sessions/' + encodeURIComponent(s.id));
      } catch (e) {
        showError(e);
        btn.disabled = false;
      }
    });

    if ($('#open-web')) {
      $('#open-web').addEventListener('click', async (ev) => {
        const btn = ev.currentTarget;
        // Opened now, while the click counts as the user's, or a popup blocker stops it;
        // it goes to the session's host once the agent has issued the link.
        const win = window.open('about:blank', '_blank');
        btn.disabled = true;
        try {
          const r = await api('POST', path + '/web');
          if (win) {
            win.opener = null;
            win.location.replace(r.url);
          } else {
            location.assign(r.url);
          }
        } catch (e) {
          if (win) win.close();
          showError(e);
        } finally {
          btn.disabled = false;
        }
      });
    }

    const dlg = $('#confirm');
    $('#delete').addEventListener('click', () => { dlg.returnValue = ''; dlg.showModal(); });
    dlg.addEventListener('close', async () => {
      if (dlg.returnValue !== 'ok') return;
      try {
        await api('DELETE', path);
        closeStream();
        location.assign('/?deleted=' + encodeURIComponent(id));
      } catch (e) {
        showError(e);
      }
    });

    const form = $('#send');
    const text = $('#text');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = text.value;
      if (!t.trim()) { text.focus(); return; }
      const btn = $('#send-btn');
      btn.disabled = true;
      try {
        await api('POST', path + '/messages', { text: t });
        text.value = '';
        if (!es) loadLogsSoon();
        activity.textContent = 'Sent; waiting for the agent…';
      } catch (e) {
        showError(e);
      } finally {
        btn.disabled = !(sess && sess.state === 'Running');
        text.focus();
      }
    });
    text.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); }
    });

    let pollHandle = null;
    pollHandle = poll(load, 2000);
    window.addEventListener('pagehide', closeStream);
  }

  // ---- Tokens ----

  function tokensPage() {
    const table = $('#tokens');
    const tbody = table.querySelector('tbody');
    async function load() {
      try {
        const list = await api('GET', '/tokens');
        const items = list.items || [];
        tbody.replaceChildren(...items.map((t) => el('tr', { 'data-id': t.id },
          el('td', { 'data-label': 'Name' }, el('strong', {}, t.name)),
          el('td', { 'data-label': 'Created' }, timeEl(t.createdAt)),
          el('td', { 'data-label': 'Expires' }, t.expiresAt ? timeEl(t.expiresAt, true) : 'never'),
          el('td', { 'data-label': 'Last used' }, t.lastUsedAt ? timeEl(t.lastUsedAt) : el('span', { class: 'muted' }, 'never')),
          el('td', {}, el('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-revoke': t.id, 'aria-label': 'Revoke token ' + t.name }, 'Revoke')))));
        table.hidden = items.length === 0;
        $('#empty').hidden = items.length !== 0;
        showError(null);
      } catch (e) {
        showError(e);
      }
      $('#loading').hidden = true;
    }
    tbody.addEventListener('click', async (ev) => {
      const btn = ev.target.closest('[data-revoke]');
      if (!btn) return;
      btn.disabled = true;
      try {
        await api('DELETE', '/tokens/' + encodeURIComponent(btn.dataset.revoke));
        toast('Token revoked');
      } catch (e) {
        showError(e);
      }
      load();
    });
    $('#create-token').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = $('#name').value.trim();
      if (!name) { showError(new Error('Give the token a name, e.g. "laptop".')); $('#name').focus(); return; }
      const req = { name };
      if ($('#expires').value) req.expiresIn = $('#expires').value;
      try {
        const t = await api('POST', '/tokens', req);
        $('#secret-value').textContent = t.token;
        $('#login-cmd').textContent = 'kubectl agents login --server ' + body.dataset.server + ' --token ' + t.token;
        $('#secret').hidden = false;
        $('#name').value = '';
        showError(null);
        $('#secret').scrollIntoView({ block: 'nearest' });
      } catch (e) {
        showError(e);
      }
      load();
    });
    load();
  }

  // ---- Git credentials ----

  function credentialsPage() {
    const table = $('#credentials');
    const tbody = table.querySelector('tbody');
    async function load() {
      try {
        const list = await api('GET', '/credentials');
        const items = list.items || [];
        // A host may have a token and an SSH key: a row per host and kind.
        tbody.replaceChildren(...items.map((c) => el('tr', { 'data-host': c.host, 'data-kind': c.kind },
          el('td', { 'data-label': 'Host' }, el('strong', {}, c.host)),
          el('td', { 'data-label': 'Kind' }, c.kind === 'ssh' ? 'SSH key' : 'Token'),
          el('td', { 'data-label': 'User name or key' }, el('span', { class: 'mono', title: c.publicKey || '' }, c.kind === 'ssh' ? c.fingerprint : c.username)),
          el('td', { 'data-label': 'Updated' }, timeEl(c.updatedAt)),
          el('td', {}, el('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-remove': c.host, 'data-kind': c.kind, 'aria-label': 'Remove the ' + (c.kind === 'ssh' ? 'SSH key' : 'token') + ' for ' + c.host }, 'Remove')))));
        table.hidden = items.length === 0;
        $('#empty').hidden = items.length !== 0;
      } catch (e) {
        showError(e);
      }
      $('#loading').hidden = true;
    }
    tbody.addEventListener('click', async (ev) => {
      const btn = ev.target.closest('[data-remove]');
      if (!btn) return;
      btn.disabled = true;
      try {
        await api('DELETE', '/credentials/' + encodeURIComponent(btn.dataset.remove) + '?kind=' + encodeURIComponent(btn.dataset.kind));
        toast('Credential removed');
        showError(null);
      } catch (e) {
        showError(e);
      }
      load();
    });
    $('#add-credential').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const host = $('#host').value.trim().toLowerCase().replace(/^https:\/\//, '').replace(/\/.*$/, '');
      const req = { token: $('#token').value, username: $('#username').value.trim() };
      try {
        await api('PUT', '/credentials/' + encodeURIComponent(host), req);
        // The token leaves the page as soon as it is stored.
        $('#token').value = '';
        $('#host').value = '';
        $('#username').value = '';
        toast('Token saved for ' + host);
        showError(null);
      } catch (e) {
        showError(e);
      }
      load();
    });
    // An SSH key: the host of an ssh:// URL (with its port unless 22) or of git@host:path.
    function sshHost(v) {
      v = v.trim().toLowerCase();
      let m = v.match(/^ssh:\/\/(?:[^@/]+@)?([^/]+)/);
      if (m) return m[1].replace(/:22$/, '');
      m = v.match(/^[^@/:]+@([^:/]+):/);
      return m ? m[1] : v;
    }
    $('#add-ssh-key').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const host = sshHost($('#ssh-host').value);
      const req = { kind: 'ssh', privateKey: $('#ssh-private-key').value, knownHosts: $('#ssh-known-hosts').value };
      try {
        const c = await api('PUT', '/credentials/' + encodeURIComponent(host), req);
        // The private key leaves the page as soon as it is stored; the public half stays
        // to be pasted at the host.
        $('#ssh-private-key').value = '';
        $('#ssh-known-hosts').value = '';
        $('#ssh-host').value = '';
        $('#ssh-public-key').textContent = c.publicKey;
        $('#ssh-public').hidden = false;
        toast('SSH key saved for ' + host);
        showError(null);
      } catch (e) {
        showError(e);
      }
      load();
    });
    // GitHub: the agent runs the device flow; the page shows the code and asks the agent
    // at GitHub's pace whether it was entered.
    $('#github-link').addEventListener('click', async () => {
      const btn = $('#github-link');
      btn.disabled = true;
      try {
        const l = await api('POST', '/github/link');
        $('#github-uri').textContent = l.verificationUri;
        $('#github-uri').href = l.verificationUri;
        $('#github-user-code').textContent = l.userCode;
        $('#github-status').textContent = 'Waiting for you to authorize at GitHub…';
        $('#github-code').hidden = false;
        showError(null);
        let every = Math.max(l.interval || 5, 1) * 1000;
        const step = async () => {
          try {
            const st = await api('POST', '/github/link/' + encodeURIComponent(l.id));
            if (st.status === 'pending') {
              if (st.interval) every = st.interval * 1000;
              setTimeout(step, every);
              return;
            }
            $('#github-status').textContent = st.message || st.status;
            if (st.status === 'linked') { toast('GitHub account linked'); load(); }
          } catch (e) {
            showError(e);
          }
          btn.disabled = false;
        };
        setTimeout(step, every);
      } catch (e) {
        showError(e);
        btn.disabled = false;
      }
    });
    load();
  }

  // ---- Admin ----

  function adminPage() {
    sessionTable(() => ({ all: 'true' }));
    const table = $('#audit');
    const tbody = table.querySelector('tbody');
    let cont = '';
    async function loadAudit(more) {
      try {
        const params = new URLSearchParams({ limit: '50' });
        if (more && cont) params.set('continue', cont);
        const page = await api('GET', '/audit?' + params.toString());
        const rows = (page.items || []).map((a) => el('tr', {},
          el('td', { 'data-label': 'Time' }, timeEl(a.time)),
          el('td', { 'data-label': 'Actor' }, a.actor),
          el('td', { 'data-label': 'Action' }, el('span', { class: 'mono' }, a.action)),
          el('td', { 'data-label': 'Target' }, a.target ? el('span', { class: 'mono' }, a.target) : ''),
          el('td', { 'data-label': 'Outcome', class: 'outcome-' + a.outcome }, a.outcome),
          el('td', { 'data-label': 'Detail' }, a.detail || '')));
        if (more) tbody.append(...rows); else tbody.replaceChildren(...rows);
        cont = page.continue || '';
        table.hidden = tbody.children.length === 0;
        $('#audit-empty').hidden = tbody.children.length !== 0;
        $('#audit-more-wrap').hidden = !cont;
      } catch (e) {
        showError(e);
      }
    }
    $('#audit-more').addEventListener('click', () => loadAudit(true));
    loadAudit(false);
  }

  // ---- Settings › Providers ----

  function providersPage() {
    const area = $('#providers-json');
    const save = $('#save');
    function show(v) {
      area.value = JSON.stringify(v || {}, null, 2);
      area.disabled = false;
      save.disabled = false;
    }
    (async () => {
      try {
        show(await api('GET', '/providers'));
      } catch (e) {
        showError(e);
      }
    })();
    $('#providers-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = JSON.parse(area.value);
      } catch (e) {
        showError(new Error('Not valid JSON: ' + e.message));
        area.focus();
        return;
      }
      save.disabled = true;
      save.textContent = 'Saving…';
      try {
        show(await api('PUT', '/providers', body));
        showError(null);
        toast('Providers saved');
      } catch (e) {
        showError(e);
        $('#error').scrollIntoView({ block: 'nearest' });
      } finally {
        save.disabled = false;
        save.textContent = 'Save providers';
      }
    });
  }

  const pages = { sessions: sessionsPage, new: newPage, session: sessionPage, tokens: tokensPage, credentials: credentialsPage, admin: adminPage, providers: providersPage };
  const run = pages[body.dataset.page];
  if (run) run();
})();
