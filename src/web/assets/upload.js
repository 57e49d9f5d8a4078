// Borrower upload page. Everything the server returns is untrusted: it reaches the DOM only
// through textContent / setAttribute. The link token lives only in `base` below: never
// logged, never stored, never sent anywhere but this service's own API.
(function () {
  'use strict';

  // The page's words, in its language: a JSON data block the server renders into the page
  // (read once; a missing or broken block leaves the keys showing rather than no page).
  var STRINGS = {};
  try {
    STRINGS = JSON.parse(document.getElementById('strings').textContent) || {};
  } catch (e) { /* keep the keys */ }
  var LANG = (document.documentElement.lang || 'en').toLowerCase().split('-')[0];
  // Dates in the page's language: in the borrower's own regional variant of it when the
  // browser has one (en-GB, es-MX...), else the US one.
  var LOCALES;
  try {
    LOCALES = Intl.getCanonicalLocales((navigator.languages || [navigator.language]).filter(function (l) {
      return typeof l === 'string' && l.toLowerCase().split('-')[0] === LANG;
    }).concat([LANG + '-US', LANG]));
  } catch (e) { LOCALES = undefined; /* an odd lang attribute: the browser's own */ }

  // The catalog's text for `key` with its {name} placeholders filled from `params`.
  function T(key, params) {
    var s = Object.prototype.hasOwnProperty.call(STRINGS, key) && typeof STRINGS[key] === 'string'
      ? STRINGS[key] : key;
    if (!params) return s;
    return s.replace(/\{(\w+)\}/g, function (m, name) {
      return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m;
    });
  }

  var MAX_PARALLEL = 3;
  var POLL_MS = 2000;
  var DEFAULT_TYPES = ['application/pdf', 'image/jpeg', 'image/png', 'image/tiff', 'image/heic'];
  var EXT_TYPES = { pdf: 'application/pdf', jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png',
    tif: 'image/tiff', tiff: 'image/tiff', heic: 'image/heic' };
  var TYPE_MSG = T('type_unsupported');
  var DOC_LABELS = { bank_statement: T('doc_bank_statement'), tax_return: T('doc_tax_return'),
    w2: T('doc_w2'), pay_stub: T('doc_pay_stub'), photo_id: T('doc_photo_id'),
    gift_letter: T('doc_gift_letter'), other: T('doc_other') };
  var BADGES = { outstanding: T('badge_outstanding'), received: T('badge_received'),
    accepted: T('badge_accepted'), rejected: T('badge_rejected'),
    not_applicable: T('badge_not_applicable') };
  var REASONS = {
    infected: T('reason_infected'),
    type_mismatch: T('reason_type_mismatch'),
    too_large: T('reason_too_large'),
    size_mismatch: T('reason_size_mismatch'),
    empty: T('reason_empty'),
    encrypted_pdf: T('reason_encrypted_pdf')
  };
  var LINK_CODES = { link_not_found: 1, link_expired: 1, link_revoked: 1, link_exhausted: 1 };

  var $ = function (id) { return document.getElementById(id); };

  // The token is the last path segment of /u/{token}.
  var segment = location.pathname.split('/').filter(Boolean).pop() || '';
  var token = segment;
  try { token = decodeURIComponent(segment); } catch (e) { /* keep it as is */ }
  var base = '/v1/public/upload-links/' + encodeURIComponent(token);

  var link = null;          // last GET answer
  var dead = false;         // link unusable: stop everything
  var loadSeq = 0;          // ignore answers to superseded GETs
  var pollTimer = 0;
  var pollWhenVisible = false;
  var lastStates = new Map();   // document id -> state, to announce changes
  var reqEls = new Map();       // request id -> { sig, el }, to keep open forms across polls
  var focusRequest = null;
  var queue = [];
  var active = 0;
  var batch = { ok: 0, failed: 0 };
  var pickFor = null;           // the request the request file picker is for
  var uid = 0;

  // ---- helpers -------------------------------------------------------------------------

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = String(text);
    return n;
  }

  function button(text, cls) {
    var b = el('button', 'button ' + (cls || ''), text);
    b.type = 'button';
    return b;
  }

  function announce(msg) {
    var r = $('status');
    r.textContent = '';
    // Clearing first and setting later makes a repeated message get announced again.
    setTimeout(function () { r.textContent = msg; }, 80);
  }

  function fmtTime(s) {
    var d = new Date(s);
    if (isNaN(d.getTime())) return String(s || '');
    return d.toLocaleString(LOCALES, { dateStyle: 'long', timeStyle: 'short' });
  }

  function fmtDay(s) {
    // A date without time: build it in local time so it does not shift by a day.
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(s));
    if (!m) return String(s);
    return new Date(+m[1], +m[2] - 1, +m[3])
      .toLocaleDateString(LOCALES, { year: 'numeric', month: 'long', day: 'numeric' });
  }

  function maxBytes() { return (link && Number(link.max_file_bytes)) || 52428800; }
  function sizeMsg() {
    var mb = Math.round(maxBytes() / 1048576 * 10) / 10;
    return T('file_too_large', { mb: mb });
  }
  function agentName() { return (link && link.agent) || T('agent_fallback'); }
  function docLabel(t) { return DOC_LABELS[t] || T('doc_unknown'); }

  function apiError(status, code, detail, extra) {
    var e = new Error(code);
    e.status = status; e.code = code; e.detail = detail || '';
    e.errors = (extra && extra.errors) || null;
    e.retryAfter = (extra && extra.retryAfter) || 0;
    return e;
  }

  function api(method, path, body) {
    var opts = { method: method, cache: 'no-store', credentials: 'same-origin',
      referrerPolicy: 'no-referrer', headers: { Accept: 'application/json, application/problem+json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(base + path, opts).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (data) {
        if (res.ok) return data;
        var p = data && typeof data === 'object' ? data : {};
        throw apiError(res.status, typeof p.code === 'string' ? p.code : 'http_' + res.status,
          typeof p.detail === 'string' ? p.detail : '',
          { errors: Array.isArray(p.errors) ? p.errors : null,
            retryAfter: parseInt(res.headers.get('Retry-After'), 10) || 0 });
      });
    }, function () {
      throw apiError(0, 'network', T('err_network'));
    });
  }

  function problemText(err, fallback) {
    var plain = { file_too_large: sizeMsg(), unsupported_file_type: TYPE_MSG,
      rate_limited: T('err_rate_limited'),
      link_expired: T('err_link_expired'), link_revoked: T('err_link_revoked'),
      link_exhausted: T('err_link_exhausted'),
      link_not_found: T('err_link_not_found') };
    // The API's own words are English: on a page in another language, a known code's
    // message in the page's language comes first.
    if (LANG !== 'en' && plain[err.code]) return plain[err.code];
    if (err.detail) return err.detail;
    if (err.errors && err.errors[0] && err.errors[0].message) return String(err.errors[0].message);
    return plain[err.code] || fallback || T('err_generic');
  }

  // ---- link state ----------------------------------------------------------------------

  function showLinkMessage(code) {
    var who = agentName();
    var texts = {
      link_expired: [T('link_expired_title'), T('link_expired_text', { agent: who })],
      link_not_found: [T('link_not_found_title'), T('link_not_found_text')],
      link_revoked: [T('link_revoked_title'), T('link_revoked_text', { agent: who })],
      link_exhausted: [T('link_exhausted_title'), T('link_exhausted_text', { agent: who })],
      unavailable: [T('unavailable_title'), T('unavailable_text')]
    };
    var t = texts[code] || texts.unavailable;
    dead = true;
    clearTimeout(pollTimer);
    queue.length = 0;
    var box = $('link-message');
    box.setAttribute('data-code', code);
    $('link-message-title').textContent = t[0];
    $('link-message-text').textContent = t[1];
    $('retry-load').hidden = !!LINK_CODES[code];
    $('loading').hidden = true;
    $('app').hidden = true;
    $('link-info').hidden = true;
    box.hidden = false;
    box.focus();
  }

  function schedulePoll() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(function () {
      // Don't poll from a background tab; resume when the borrower comes back.
      if (document.hidden) pollWhenVisible = true; else load();
    }, POLL_MS);
  }

  function load() {
    clearTimeout(pollTimer);
    if (dead) return Promise.resolve();
    var seq = ++loadSeq;
    return api('GET', '').then(function (data) {
      if (seq !== loadSeq || dead) return;
      link = data || {};
      render();
      var busy = (link.files || []).some(function (f) {
        return f.state === 'awaiting_upload' || f.state === 'uploaded' || f.state === 'scanning';
      });
      if (busy) schedulePoll();
    }, function (err) {
      if (seq !== loadSeq) return;
      if (LINK_CODES[err.code]) showLinkMessage(err.code);
      else if (!link) showLinkMessage(err.code === 'network' ? 'unavailable' : err.code);
      else schedulePoll(); // transient failure: keep the last view and try again
    });
  }

  function render() {
    $('loading').hidden = true;
    $('link-info').hidden = false;
    $('app').hidden = false;
    $('agent').textContent = T('requested_by', { agent: agentName() });
    $('expires').textContent = T('link_valid_until', { date: fmtTime(link.expires_at) });
    $('count').textContent = T('files_count',
      { done: Number(link.files_accepted || 0), max: Number(link.max_files || 0) });
    $('max-size').textContent = String(Math.round(maxBytes() / 1048576 * 10) / 10);
    var full = link.state === 'full';
    $('upload-area').hidden = full;
    $('full-notice').hidden = !full;
    $('full-notice').textContent = full ? T('full_notice', { agent: agentName() }) : '';
    renderRequests(Array.isArray(link.requests) ? link.requests : []);
    renderFiles(Array.isArray(link.files) ? link.files : []);
  }

  // Requests are reconciled by id so a poll does not wipe a half-typed comment or focus.
  function renderRequests(reqs) {
    var list = $('requests');
    var seen = new Set();
    $('requests-section').hidden = reqs.length === 0;
    reqs.forEach(function (r, i) {
      var sig = JSON.stringify(r) + '|' + link.state;
      var entry = reqEls.get(r.id);
      if (!entry || entry.sig !== sig) {
        var fresh = buildRequest(r);
        if (entry && entry.el.parentNode) entry.el.replaceWith(fresh);
        entry = { sig: sig, el: fresh };
        reqEls.set(r.id, entry);
      }
      if (list.children[i] !== entry.el) list.insertBefore(entry.el, list.children[i] || null);
      seen.add(r.id);
    });
    reqEls.forEach(function (entry, id) {
      if (!seen.has(id)) { entry.el.remove(); reqEls.delete(id); }
    });
    if (focusRequest && reqEls.has(focusRequest)) reqEls.get(focusRequest).el.querySelector('h3').focus();
    focusRequest = null;
  }

  function buildRequest(r) {
    var li = el('li', 'request');
    li.setAttribute('data-request-id', String(r.id));
    li.setAttribute('data-state', String(r.state));
    var head = el('div', 'request-head');
    var h = el('h3', null, docLabel(r.doc_type));
    h.tabIndex = -1;
    head.append(h, el('span', 'badge badge-' + (BADGES[r.state] ? r.state : 'unknown'), BADGES[r.state] || T('badge_pending')));
    li.append(head);
    if (r.note) li.append(el('p', 'request-note', r.note));
    if (r.due_date) li.append(el('p', 'request-due', T('due_by', { date: fmtDay(r.due_date) })));
    if (r.state === 'rejected') {
      var box = el('p', 'request-reason');
      box.append(el('strong', null, T('request_send_new') + ' '),
        document.createTextNode(r.reason ? T('request_reason', { reason: r.reason }) : ''));
      li.append(box);
    } else if (r.state === 'not_applicable' && r.reason) {
      li.append(el('p', 'request-comment', T('request_comment', { comment: r.reason })));
    }
    if (r.state !== 'outstanding' && r.state !== 'rejected') return li;

    var actions = el('div', 'request-actions');
    if (link.state !== 'full') {
      var up = button(T('upload_for_this'), 'primary');
      up.append(el('span', 'visually-hidden', ' (' + docLabel(r.doc_type) + ')'));
      up.addEventListener('click', function () { pickFor = r; $('request-file-input').click(); });
      actions.append(up);
    }
    var naBtn = button(T('not_applicable_button'), 'secondary');
    var form = buildNaForm(r, naBtn);
    naBtn.setAttribute('aria-expanded', 'false');
    naBtn.setAttribute('aria-controls', form.id);
    naBtn.addEventListener('click', function () {
      var open = form.hidden;
      form.hidden = !open;
      naBtn.setAttribute('aria-expanded', String(open));
      if (open) form.querySelector('textarea').focus();
    });
    actions.append(naBtn);
    li.append(actions, form);
    return li;
  }

  function buildNaForm(r, naBtn) {
    var n = ++uid;
    var form = el('form', 'na-form');
    form.id = 'na-form-' + n;
    form.hidden = true;
    form.noValidate = true; // validated below, with a message in words
    var label = el('label', null, T('na_label'));
    label.htmlFor = 'na-comment-' + n;
    var ta = el('textarea');
    ta.id = label.htmlFor;
    ta.required = true;
    ta.maxLength = 1000;
    ta.setAttribute('aria-describedby', 'na-hint-' + n + ' na-error-' + n);
    var hint = el('p', 'hint', T('na_hint', { max: 1000 }));
    hint.id = 'na-hint-' + n;
    var err = el('p', 'form-error');
    err.id = 'na-error-' + n;
    var submit = button(T('send'), 'primary');
    submit.type = 'submit';
    var cancel = button(T('cancel'), 'link');
    cancel.addEventListener('click', function () {
      form.hidden = true;
      naBtn.setAttribute('aria-expanded', 'false');
      naBtn.focus();
    });
    var row = el('div', 'form-actions');
    row.append(submit, cancel);
    form.append(label, ta, hint, err, row);
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var comment = ta.value.trim();
      if (!comment) { err.textContent = T('na_empty'); ta.focus(); return; }
      if (comment.length > 1000) { err.textContent = T('na_too_long', { max: 1000 }); ta.focus(); return; }
      err.textContent = '';
      submit.disabled = true;
      api('POST', '/requests/' + encodeURIComponent(r.id) + '/not-applicable', { comment: comment }).then(function () {
        announce(T('na_done', { doc: docLabel(r.doc_type) }));
        focusRequest = r.id;
        return load();
      }, function (x) {
        if (LINK_CODES[x.code]) { showLinkMessage(x.code); return; }
        err.textContent = problemText(x, T('na_failed'));
        submit.disabled = false;
        ta.focus();
      });
    });
    return form;
  }

  function fileStateText(f) {
    switch (f.state) {
      case 'awaiting_upload': return T('file_uploading');
      case 'uploaded': case 'scanning': return T('file_checking');
      case 'available': return T('file_received');
      case 'rejected':
        if (f.reason === 'rejected_by_agent' || (!f.reason && f.review_reason)) {
          return T('file_not_accepted', { reason: f.review_reason || T('reason_agent_default') });
        }
        return T('file_not_accepted', { reason: REASONS[f.reason] || T('reason_unknown') });
      case 'failed': return T('file_failed');
      case 'expired': return T('file_expired');
      default: return T('file_processing');
    }
  }

  function renderFiles(files) {
    var list = $('files');
    var changes = [];
    list.replaceChildren();
    $('files-empty').hidden = files.length > 0;
    files.forEach(function (f) {
      var li = el('li', 'file-item');
      li.setAttribute('data-document-id', String(f.id));
      li.setAttribute('data-state', String(f.state));
      var name = el('span', 'file-name', f.filename || T('unnamed_file'));
      if (f.doc_type) name.append(el('span', 'file-type', docLabel(f.doc_type)));
      var text = fileStateText(f);
      li.append(name, el('span', 'file-status', text));
      list.append(li);
      var prev = lastStates.get(f.id);
      if (prev && prev !== f.state && /^(available|rejected|failed)$/.test(f.state)) {
        changes.push(T('file_change', { name: f.filename || T('a_file'), status: text }));
      }
      lastStates.set(f.id, f.state);
    });
    if (changes.length) announce(changes.join('. '));
  }

  // ---- uploads -------------------------------------------------------------------------

  function contentTypeOf(file) {
    var t = (file.type || '').toLowerCase();
    if (t === 'image/jpg' || t === 'image/pjpeg') t = 'image/jpeg';
    // HEIC (and some other files) often arrive with no type at all: use the extension.
    if (!t || t === 'application/octet-stream') {
      var m = /\.([a-z0-9]+)$/i.exec(file.name || '');
      t = (m && EXT_TYPES[m[1].toLowerCase()]) || '';
    }
    return t;
  }

  function checkFile(file, type) {
    var accepted = (link && Array.isArray(link.accepted_types) && link.accepted_types.length) ? link.accepted_types : DEFAULT_TYPES;
    if (!type || accepted.indexOf(type) < 0) return TYPE_MSG;
    if (file.size > maxBytes()) return sizeMsg();
    if (file.size === 0) return T('file_empty');
    return null;
  }

  function addFiles(fileList, request, docType) {
    var files = Array.prototype.slice.call(fileList || []);
    if (!files.length || !link || dead) return;
    $('uploads-section').hidden = false;
    var queued = 0;
    files.forEach(function (file) {
      var job = { file: file, request: request, docType: docType, type: contentTypeOf(file) };
      job.row = buildRow(job);
      var bad = checkFile(file, job.type); // checked here so the server is never asked in vain
      if (bad) fail(job, bad, false); else { queue.push(job); queued++; }
    });
    if (queued) announce(queued === 1 ? T('uploading_one') : T('uploading_many', { count: queued }));
    pump();
  }

  function buildRow(job) {
    var li = el('li', 'upload-row');
    li.setAttribute('data-filename', job.file.name);
    li.setAttribute('data-state', 'queued');
    var name = el('span', 'upload-name', job.file.name);
    if (job.request) name.append(el('span', 'upload-for', ' — ' + T('upload_for', { doc: docLabel(job.request.doc_type) })));
    var progress = el('progress', 'upload-progress');
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute('aria-label', T('upload_progress', { name: job.file.name }));
    var status = el('span', 'upload-status', T('waiting'));
    li.append(name, progress, status);
    $('uploads').append(li);
    return { li: li, progress: progress, status: status };
  }

  function setRow(job, state, text) {
    job.row.li.setAttribute('data-state', state);
    job.row.status.textContent = text;
  }

  function fail(job, message, retryable) {
    batch.failed++;
    setRow(job, 'error', message);
    if (!retryable) return;
    var retry = button(T('retry'), 'secondary');
    retry.addEventListener('click', function () {
      retry.remove();
      job.row.progress.value = 0;
      setRow(job, 'queued', T('waiting'));
      queue.push(job);
      pump();
    });
    job.row.li.append(retry);
  }

  function pump() {
    while (!dead && active < MAX_PARALLEL && queue.length) {
      var job = queue.shift();
      active++;
      run(job).then(function () { active--; pump(); });
    }
    if (!active && !queue.length && (batch.ok || batch.failed)) {
      announce(batch.failed
        ? T('batch_mixed', { ok: batch.ok, failed: batch.failed })
        : (batch.ok === 1 ? T('batch_one') : T('batch_many', { count: batch.ok })));
      batch = { ok: 0, failed: 0 };
    }
  }

  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  // Create the document, retrying a couple of times when rate limited (honouring Retry-After).
  function create(job, body, attempt) {
    return api('POST', '/files', body).catch(function (err) {
      if (err.status !== 429 || attempt >= 2) throw err;
      var secs = Math.min(Math.max(err.retryAfter || 5, 1), 60);
      setRow(job, 'uploading', T('busy_retry', { secs: secs }));
      return sleep(secs * 1000).then(function () { return create(job, body, attempt + 1); });
    });
  }

  function put(job, up) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open('PUT', up.url);
      var headers = up.headers || {};
      Object.keys(headers).forEach(function (k) { xhr.setRequestHeader(k, String(headers[k])); });
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable || !e.total) return;
        // Stay below 100 until the server has confirmed the upload.
        var pct = Math.min(99, Math.floor(e.loaded * 100 / e.total));
        job.row.progress.value = pct;
        job.row.status.textContent = T('uploading_pct', { pct: pct });
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) resolve();
        else reject(apiError(xhr.status, 'storage_error', T('upload_failed')));
      };
      xhr.onerror = xhr.onabort = xhr.ontimeout = function () {
        reject(apiError(0, 'network', T('upload_interrupted')));
      };
      xhr.send(job.file);
    });
  }

  function run(job) {
    setRow(job, 'uploading', T('preparing'));
    var body = { filename: job.file.name, content_type: job.type, size_bytes: job.file.size };
    if (job.request) {
      body.doc_type = job.request.doc_type;
      body.document_request_id = job.request.id;
    } else if (job.docType) {
      body.doc_type = job.docType;
    }
    // A retry resumes after the last step that succeeded (see the catch below).
    var step = job.created ? Promise.resolve(job.created) : create(job, body, 0);
    return step.then(function (created) {
      if (!created || !created.document || !created.upload || !created.upload.url) {
        throw apiError(0, 'bad_response', T('upload_not_started'));
      }
      job.created = created;
      setRow(job, 'uploading', T('file_uploading'));
      return job.putDone ? null : put(job, created.upload);
    }).then(function () {
      job.putDone = true;
      setRow(job, 'uploading', T('finishing'));
      return api('POST', '/files/' + encodeURIComponent(job.created.document.id) + '/complete');
    }).then(function () {
      batch.ok++;
      job.row.progress.value = 100;
      setRow(job, 'done', T('uploaded_checking'));
      load();
    }, function (err) {
      // Network hiccups resume where they stopped; anything else starts over with a new
      // document (the abandoned one expires on its own).
      if (err.status !== 0) { job.created = null; job.putDone = false; }
      var final = err.status === 422 || LINK_CODES[err.code];
      fail(job, problemText(err, T('upload_failed')), !final);
      if (LINK_CODES[err.code]) load(); // the GET decides whether the whole link is gone
    });
  }

  // ---- wiring --------------------------------------------------------------------------

  function init() {
    var fileInput = $('file-input');
    var cameraInput = $('camera-input');
    var requestInput = $('request-file-input');
    var zone = $('drop-zone');
    var docType = $('doc-type');

    // Reset each input after reading it so choosing the same file again still fires change.
    fileInput.addEventListener('change', function () { addFiles(fileInput.files, null, docType.value); fileInput.value = ''; });
    cameraInput.addEventListener('change', function () { addFiles(cameraInput.files, null, docType.value); cameraInput.value = ''; });
    requestInput.addEventListener('change', function () {
      addFiles(requestInput.files, pickFor, null);
      requestInput.value = '';
    });
    // The drop zone is a real button, so Enter/Space open the picker with no extra code.
    zone.addEventListener('click', function () { fileInput.click(); });
    $('camera-button').addEventListener('click', function () { cameraInput.click(); });

    var hasFiles = function (e) {
      return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types || [], 'Files') >= 0;
    };
    ['dragenter', 'dragover'].forEach(function (type) {
      zone.addEventListener(type, function (e) {
        if (!hasFiles(e)) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
        zone.classList.add('is-dragover');
      });
    });
    zone.addEventListener('dragleave', function () { zone.classList.remove('is-dragover'); });
    zone.addEventListener('drop', function (e) {
      e.preventDefault();
      zone.classList.remove('is-dragover');
      if (e.dataTransfer) addFiles(e.dataTransfer.files, null, docType.value);
    });
    // A file dropped beside the zone must not make the browser navigate away to open it.
    ['dragover', 'drop'].forEach(function (type) {
      document.addEventListener(type, function (e) { if (hasFiles(e) && !zone.contains(e.target)) e.preventDefault(); });
    });

    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && pollWhenVisible) { pollWhenVisible = false; load(); }
    });
    $('retry-load').addEventListener('click', function () {
      dead = false;
      $('link-message').hidden = true;
      $('loading').hidden = false;
      load();
    });

    if (!segment) showLinkMessage('link_not_found'); else load();
  }

  init();
}());
