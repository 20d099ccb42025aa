// Cairn operator console: projection health and failed events.
//
// Plain JavaScript, no build step, no dependencies. Every value from the server is rendered with
// textContent (never as markup). The admin token lives in sessionStorage (this tab only) and is
// sent as "Authorization: Bearer"; automation may pass it once as #token=<token> in the URL, which
// is stored and removed from the address bar at once.
'use strict';

(function () {
  const TOKEN_KEY = 'cairn.console.token';
  const REFRESH_MS = 5000;
  const HEALTH_URL = '/api/v1/admin/projections/health';
  const FAILED_URL = '/api/v1/admin/projections/failed-events';
  const KNOWN_STATUSES = ['active', 'catching_up', 'retrying', 'rebuilding', 'skipped', 'resolved'];

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let loading = false;

  // ---- token -------------------------------------------------------------------------------

  function takeTokenFromFragment() {
    if (!location.hash) return;
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get('token');
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token.trim());
    }
    history.replaceState(null, '', location.pathname + location.search);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showLogin(message) {
    stopRefresh();
    $('console').hidden = true;
    $('signout').hidden = true;
    $('refresh').hidden = true;
    $('login').hidden = false;
    setMessage(message, 'error');
    $('token').focus();
  }

  // ---- helpers -----------------------------------------------------------------------------

  function setMessage(text, kind) {
    const message = $('message');
    message.textContent = text || '';
    message.className = kind || '';
    message.hidden = !text;
  }

  // An element with text content (never markup) and optional classes.
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function code(text, title) {
    const node = el('code', text);
    if (title) node.title = title;
    return node;
  }

  function statusBadge(status) {
    const known = KNOWN_STATUSES.includes(status) ? status : 'other';
    return el('span', String(status).replace('_', ' '), 'badge status-' + known);
  }

  function shortId(id) {
    return id ? String(id).slice(0, 8) : '';
  }

  function duration(seconds) {
    const s = Math.abs(seconds);
    if (s < 1) return Math.round(s * 1000) + ' ms';
    if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }

  // "12 s ago" / "in 3.2 s", measured against the server's clock (the response's Date header).
  function relative(iso, serverNow) {
    if (!iso) return '';
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return String(iso);
    const seconds = (at - serverNow) / 1000;
    return seconds >= 0 ? 'in ' + duration(seconds) : duration(seconds) + ' ago';
  }

  function timeCell(iso, serverNow) {
    const cell = el('td', relative(iso, serverNow), 'time');
    if (iso) cell.title = String(iso);
    return cell;
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(method, url) {
    const response = await fetch(url, {
      method: method,
      headers: { Authorization: 'Bearer ' + token(), Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && (body.detail || body.title);
      throw new HttpError(response.status, detail || response.statusText || 'request failed');
    }
    const date = Date.parse(response.headers.get('Date') || '');
    return { body: body, serverNow: Number.isNaN(date) ? Date.now() : date };
  }

  // ---- rendering ---------------------------------------------------------------------------

  function renderProjections(rows, serverNow) {
    const tbody = $('projections').tBodies[0];
    const fresh = rows.map((row) => {
      const tr = document.createElement('tr');
      tr.dataset.projection = row.projection;
      tr.dataset.instance = row.instance_id;
      tr.dataset.status = row.status;
      tr.appendChild(el('td', row.projection, 'name'));
      const instance = el('td');
      instance.appendChild(code(row.instance_id));
      tr.appendChild(instance);
      tr.appendChild(el('td', row.position, 'num mono'));
      const lag = el('td', null, 'num');
      lag.appendChild(el('span', row.lag_events + (row.lag_events === 1 ? ' event' : ' events')));
      if (row.lag_events > 0 && row.lag_seconds > 0) {
        lag.appendChild(el('span', ' · ' + duration(row.lag_seconds) + ' behind', 'hint'));
      }
      if (row.lag_events > 0) tr.classList.add('lagging');
      tr.appendChild(lag);
      const status = el('td');
      status.appendChild(statusBadge(row.status));
      tr.appendChild(status);
      const failed = el('td', null, 'num');
      failed.appendChild(el('span', row.error_count, row.error_count > 0 ? 'bad' : ''));
      if (row.skipped_events > 0) failed.appendChild(el('span', ' (' + row.skipped_events + ' skipped)', 'hint'));
      if (row.last_error) failed.title = 'last error: ' + row.last_error;
      tr.appendChild(failed);
      const lease = el('td');
      if (row.lease_owner) {
        lease.appendChild(code(shortId(row.lease_owner), row.lease_owner));
        lease.appendChild(el('span', ' expires ' + relative(row.lease_expires_at, serverNow), 'hint'));
        if (row.lease_expires_at) lease.title = 'owner ' + row.lease_owner + ', expires ' + row.lease_expires_at;
      } else {
        lease.appendChild(el('span', 'no lease', 'hint'));
      }
      tr.appendChild(lease);
      tr.appendChild(timeCell(row.last_processed_at, serverNow));
      return tr;
    });
    tbody.replaceChildren(...fresh);
    $('no-projections').hidden = rows.length > 0;
    const instances = Array.from(new Set(rows.map((r) => r.instance_id)));
    $('instance').textContent = instances.length === 1 ? 'of instance ' + instances[0] : '';
  }

  function actionButton(label, row, action) {
    const button = el('button', label, 'action action-' + action);
    button.type = 'button';
    button.addEventListener('click', () => act(row, action, button));
    return button;
  }

  function renderFailed(rows, serverNow) {
    const tbody = $('failed-events').tBodies[0];
    const fresh = rows.map((row) => {
      const tr = document.createElement('tr');
      tr.dataset.projection = row.projection;
      tr.dataset.instance = row.instance_id;
      tr.dataset.position = row.position;
      tr.dataset.status = row.status;
      tr.appendChild(el('td', row.projection, 'name'));
      tr.appendChild(el('td', row.position, 'num mono'));
      tr.appendChild(el('td', row.event_type, 'mono'));
      const aggregate = el('td');
      aggregate.appendChild(el('span', row.aggregate_type + ' '));
      aggregate.appendChild(code(shortId(row.aggregate_id), row.aggregate_id));
      aggregate.appendChild(el('span', ' #' + row.sequence, 'hint'));
      tr.appendChild(aggregate);
      tr.appendChild(el('td', row.failure_count, 'num'));
      const status = el('td');
      status.appendChild(statusBadge(row.status));
      if (row.passed && row.status !== 'resolved') status.appendChild(el('span', ' passed', 'hint'));
      tr.appendChild(status);
      tr.appendChild(el('td', row.error, 'error'));
      tr.appendChild(timeCell(row.last_failed_at, serverNow));
      const actions = el('td', null, 'actions');
      if (!row.passed && (row.status === 'retrying' || row.status === 'skipped')) {
        actions.appendChild(actionButton('Retry', row, 'retry'));
      }
      if (!row.passed && row.status === 'retrying') {
        actions.appendChild(actionButton('Skip', row, 'skip'));
      }
      if (row.passed && row.status === 'skipped') {
        actions.appendChild(el('span', 'rebuild to apply', 'hint'));
      }
      tr.appendChild(actions);
      return tr;
    });
    tbody.replaceChildren(...fresh);
    $('failed-events').hidden = rows.length === 0;
    $('no-failed').hidden = rows.length > 0;
  }

  // ---- loading and actions -----------------------------------------------------------------

  function handleError(error) {
    if (error instanceof HttpError && error.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('The token was refused (401): ' + error.message);
      return;
    }
    if (error instanceof HttpError && error.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('This token may not administer the instance (403): ' + error.message);
      return;
    }
    setMessage('Could not load: ' + error.message + ' — retrying.', 'error');
  }

  async function load() {
    if (loading || !token()) return;
    loading = true;
    try {
      const [health, failed] = await Promise.all([call('GET', HEALTH_URL), call('GET', FAILED_URL)]);
      renderProjections(health.body.projections || [], health.serverNow);
      renderFailed(failed.body.failed_events || [], failed.serverNow);
      $('login').hidden = true;
      $('console').hidden = false;
      $('signout').hidden = false;
      $('refresh').hidden = false;
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      if ($('message').className === 'error') setMessage('');
      document.body.dataset.loaded = 'true';
    } catch (error) {
      handleError(error);
    } finally {
      loading = false;
    }
  }

  async function act(row, action, button) {
    if (action === 'skip') {
      const ok = window.confirm(
        'Skip event ' + row.position + ' (' + row.event_type + ') of projection ' + row.projection +
          '? The projection will pass over it without applying it.'
      );
      if (!ok) return;
    }
    button.disabled = true;
    const url = [FAILED_URL, row.projection, row.instance_id]
      .concat(row.position.split('.'))
      .map((part, i) => (i === 0 ? part : encodeURIComponent(part)))
      .join('/') + '/' + action;
    try {
      const result = await call('POST', url);
      const updated = result.body.failed_event;
      setMessage(
        (action === 'retry' ? 'Retrying ' : 'Skipped ') + row.event_type + ' at ' + row.position +
          ' (' + row.projection + '): now ' + updated.status + '.',
        'ok'
      );
    } catch (error) {
      if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
        handleError(error);
        return;
      }
      setMessage(action + ' failed (' + (error.status || 'network') + '): ' + error.message, 'error');
    }
    await load();
  }

  function stopRefresh() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  function start() {
    stopRefresh();
    load();
    timer = setInterval(() => {
      if (!document.hidden) load();
    }, REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', () => {
    takeTokenFromFragment();
    $('login').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('token').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $('token').value = '';
      setMessage('');
      start();
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('');
    });
    $('refresh').addEventListener('click', () => load());
    if (token()) {
      start();
    } else {
      showLogin('');
    }
  });
})();
