// Cairn operator console: what every page shares (the token, HTTP calls, rendering helpers,
// the refresh loop). Each page's own script calls CairnConsole.page(load) with the function that
// fetches and renders its data.
//
// Plain JavaScript, no build step, no dependencies. Every value from the server is rendered with
// textContent (never as markup). The admin token lives in sessionStorage (this tab only) and is
// sent as "Authorization: Bearer"; automation may pass it once as #token=<token> in the URL, which
// is stored and removed from the address bar at once.
'use strict';

window.CairnConsole = (function () {
  const TOKEN_KEY = 'cairn.console.token';
  const REFRESH_MS = 5000;

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let loading = false;
  let fetchPage = null;

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
    // The Date header has whole seconds: within one of it is "now".
    if (Math.abs(seconds) < 1) return 'just now';
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

  // Fetches and renders the page; on success shows it, on failure says why.
  async function load() {
    if (loading || !token()) return;
    loading = true;
    try {
      await fetchPage();
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

  // Runs a page: `loader` fetches and renders its data (throwing HttpError when a call fails).
  function page(loader) {
    fetchPage = loader;
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
  }

  return { $, el, code, shortId, duration, relative, timeCell, HttpError, call, setMessage, handleError, load, page };
})();
