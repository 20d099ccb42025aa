// Cairn operator console: actions targets, their health and recent failed calls (uses common.js).
'use strict';

(function () {
  const { el, code, shortId, timeCell, call } = window.CairnConsole;
  const $ = window.CairnConsole.$;
  const TARGETS_URL = '/api/v1/admin/actions/targets';
  const FAILURES_URL = '/api/v1/admin/actions/failures';

  function badge(text, kind) {
    return el('span', text, 'badge status-' + kind);
  }

  function health(row) {
    if (row.state === 'disabled') return badge('disabled', 'skipped');
    if (row.failing_since) return badge('failing', 'retrying');
    if (row.last_success_at) return badge('healthy', 'active');
    return badge('no calls yet', 'other');
  }

  function renderTargets(rows, serverNow) {
    const fresh = rows.map((row) => {
      const tr = document.createElement('tr');
      tr.dataset.target = row.id;
      tr.dataset.state = row.state;
      tr.dataset.health = row.state === 'disabled' ? 'disabled' : row.failing_since ? 'failing' : 'healthy';
      const name = el('td', row.name, 'name');
      name.title = row.id;
      tr.appendChild(name);
      const endpoint = el('td');
      endpoint.appendChild(code(row.endpoint));
      tr.appendChild(endpoint);
      tr.appendChild(el('td', row.kind + (row.interrupt_on_error ? ' · interrupts' : '')));
      const state = el('td');
      state.appendChild(badge(row.state, row.state === 'active' ? 'active' : 'skipped'));
      if (row.disabled_reason) state.appendChild(el('div', row.disabled_reason, 'hint'));
      tr.appendChild(state);
      const healthCell = el('td');
      healthCell.appendChild(health(row));
      if (row.failing_since) {
        healthCell.appendChild(el('div', 'since ' + timeCell(row.failing_since, serverNow).textContent, 'hint'));
      }
      if (row.last_error) healthCell.title = 'last error: ' + row.last_error;
      tr.appendChild(healthCell);
      tr.appendChild(el('td', row.waiting, 'num'));
      tr.appendChild(el('td', row.failed, row.failed > 0 ? 'num bad' : 'num'));
      tr.appendChild(timeCell(row.last_success_at, serverNow));
      tr.appendChild(timeCell(row.last_failure_at, serverNow));
      return tr;
    });
    $('targets').tBodies[0].replaceChildren(...fresh);
    $('no-targets').hidden = rows.length > 0;
  }

  function renderFailures(rows, serverNow) {
    const fresh = rows.map((row) => {
      const tr = document.createElement('tr');
      tr.dataset.target = row.target_id;
      tr.dataset.event = row.event_id;
      tr.appendChild(timeCell(row.started_at, serverNow));
      tr.appendChild(el('td', row.target_name || shortId(row.target_id), 'name'));
      const event = el('td');
      event.appendChild(el('span', (row.event_type || '') + ' '));
      event.appendChild(code(shortId(row.event_id), row.event_id));
      tr.appendChild(event);
      tr.appendChild(el('td', row.attempt, 'num'));
      tr.appendChild(el('td', row.status === null ? 'no answer' : row.status, 'num'));
      tr.appendChild(el('td', Math.round(row.latency_ms) + ' ms', 'num'));
      const error = el('td', row.error || '', 'error');
      if (row.response) error.appendChild(el('div', row.response, 'hint'));
      tr.appendChild(error);
      return tr;
    });
    $('failures').tBodies[0].replaceChildren(...fresh);
    $('failures').hidden = rows.length === 0;
    $('no-failures').hidden = rows.length > 0;
  }

  window.CairnConsole.page(async () => {
    const [targets, failures] = await Promise.all([call('GET', TARGETS_URL), call('GET', FAILURES_URL)]);
    renderTargets(targets.body.targets || [], targets.serverNow);
    renderFailures(failures.body.failures || [], failures.serverNow);
  });
})();
