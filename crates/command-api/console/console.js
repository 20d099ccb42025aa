// Cairn operator console: projection health and failed events (uses common.js).
'use strict';

(function () {
  const { $, el, code, shortId, duration, relative, timeCell, HttpError, call, setMessage, handleError, load } =
    window.CairnConsole;
  const HEALTH_URL = '/api/v1/admin/projections/health';
  const FAILED_URL = '/api/v1/admin/projections/failed-events';
  const KNOWN_STATUSES = ['active', 'catching_up', 'retrying', 'rebuilding', 'skipped', 'resolved'];

  function statusBadge(status) {
    const known = KNOWN_STATUSES.includes(status) ? status : 'other';
    return el('span', String(status).replace('_', ' '), 'badge status-' + known);
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

  window.CairnConsole.page(async () => {
    const [health, failed] = await Promise.all([call('GET', HEALTH_URL), call('GET', FAILED_URL)]);
    renderProjections(health.body.projections || [], health.serverNow);
    renderFailed(failed.body.failed_events || [], failed.serverNow);
  });
})();
