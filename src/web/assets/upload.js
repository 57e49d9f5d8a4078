// Borrower upload page. Everything the server returns is untrusted: it reaches the DOM only
// through textContent / setAttribute. The link token lives only in `base` below: never
// logged, never stored, never sent anywhere but this service's own API.
(function () {
  'use strict';

  var MAX_PARALLEL = 3;
  var POLL_MS = 2000;
  var DEFAULT_TYPES = ['application/pdf', 'image/jpeg', 'image/png', 'image/tiff', 'image/heic'];
  var EXT_TYPES = { pdf: 'application/pdf', jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png',
    tif: 'image/tiff', tiff: 'image/tiff', heic: 'image/heic' };
  var TYPE_MSG = 'Only PDF, JPEG, PNG, TIFF or HEIC files can be uploaded';
  var DOC_LABELS = { bank_statement: 'Bank statement', tax_return: 'Tax return', w2: 'W-2',
    pay_stub: 'Pay stub', photo_id: 'Photo ID', gift_letter: 'Gift letter', other: 'Other' };
  var BADGES = { outstanding: 'Outstanding', received: 'Received', accepted: 'Accepted',
    rejected: 'Needs a new file', not_applicable: 'Not applicable' };
  var REASONS = {
    infected: 'the file failed the virus check',
    type_mismatch: "the file's contents do not match its type",
    too_large: 'the file is larger than allowed',
    size_mismatch: 'the upload was incomplete',
    empty: 'the file is empty',
    encrypted_pdf: 'password-protected PDFs cannot be read; please upload an unprotected copy'
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
    return d.toLocaleString(undefined, { dateStyle: 'long', timeStyle: 'short' });
  }

  function fmtDay(s) {
    // A date without time: build it in local time so it does not shift by a day.
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(s));
    if (!m) return String(s);
    return new Date(+m[1], +m[2] - 1, +m[3])
      .toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric' });
  }

  function maxBytes() { return (link && Number(link.max_file_bytes)) || 52428800; }
  function sizeMsg() {
    var mb = Math.round(maxBytes() / 1048576 * 10) / 10;
    return 'This file is larger than ' + mb + ' MB';
  }
  function agentName() { return (link && link.agent) || 'your loan officer'; }
  function docLabel(t) { return DOC_LABELS[t] || 'Document'; }

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
      throw apiError(0, 'network', 'We could not reach the server. Please check your connection and try again.');
    });
  }

  function problemText(err, fallback) {
    if (err.detail) return err.detail;
    if (err.errors && err.errors[0] && err.errors[0].message) return String(err.errors[0].message);
    var plain = { file_too_large: sizeMsg(), unsupported_file_type: TYPE_MSG,
      rate_limited: 'Too many uploads right now. Please wait a minute and try again.',
      link_expired: 'This upload link has expired.', link_revoked: 'This upload link was withdrawn.',
      link_exhausted: 'This upload link has received all the files it accepts.',
      link_not_found: 'This upload link is not valid.' };
    return plain[err.code] || fallback || 'Something went wrong. Please try again.';
  }

  // ---- link state ----------------------------------------------------------------------

  function showLinkMessage(code) {
    var who = agentName();
    var texts = {
      link_expired: ['This link has expired', 'This upload link has expired. Please ask ' + who + ' for a new link.'],
      link_not_found: ['This link is not valid', 'This upload link is not valid. Please check that you opened the whole link from your message, or ask your loan officer for a new one.'],
      link_revoked: ['This link was withdrawn', 'This upload link has been withdrawn. If you still need to send documents, please ask ' + who + ' for a new link.'],
      link_exhausted: ['This link is complete', 'This upload link has received all the files it accepts. If you need to send more, please ask ' + who + ' for a new link.'],
      unavailable: ['We could not load this page', 'Something went wrong while loading your upload link. Please check your connection and try again in a moment.']
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
    $('agent').textContent = 'Requested by ' + agentName();
    $('expires').textContent = 'Link valid until ' + fmtTime(link.expires_at);
    $('count').textContent = Number(link.files_accepted || 0) + ' of ' + Number(link.max_files || 0) + ' files received';
    $('max-size').textContent = String(Math.round(maxBytes() / 1048576 * 10) / 10);
    var full = link.state === 'full';
    $('upload-area').hidden = full;
    $('full-notice').hidden = !full;
    $('full-notice').textContent = full ? 'This link has received all the files it accepts. ' +
      'You can still tell us which requests do not apply to you. To send more files, please contact ' + agentName() + '.' : '';
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
    head.append(h, el('span', 'badge badge-' + (BADGES[r.state] ? r.state : 'unknown'), BADGES[r.state] || 'Pending'));
    li.append(head);
    if (r.note) li.append(el('p', 'request-note', r.note));
    if (r.due_date) li.append(el('p', 'request-due', 'Due by ' + fmtDay(r.due_date)));
    if (r.state === 'rejected') {
      var box = el('p', 'request-reason');
      box.append(el('strong', null, 'Please send a new file. '),
        document.createTextNode(r.reason ? 'Reason: ' + r.reason : ''));
      li.append(box);
    } else if (r.state === 'not_applicable' && r.reason) {
      li.append(el('p', 'request-comment', 'Your comment: ' + r.reason));
    }
    if (r.state !== 'outstanding' && r.state !== 'rejected') return li;

    var actions = el('div', 'request-actions');
    if (link.state !== 'full') {
      var up = button('Upload for this', 'primary');
      up.append(el('span', 'visually-hidden', ' (' + docLabel(r.doc_type) + ')'));
      up.addEventListener('click', function () { pickFor = r; $('request-file-input').click(); });
      actions.append(up);
    }
    var naBtn = button('Not applicable to me', 'secondary');
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
    var label = el('label', null, 'Why does this not apply to you?');
    label.htmlFor = 'na-comment-' + n;
    var ta = el('textarea');
    ta.id = label.htmlFor;
    ta.required = true;
    ta.maxLength = 1000;
    ta.setAttribute('aria-describedby', 'na-hint-' + n + ' na-error-' + n);
    var hint = el('p', 'hint', 'Your loan officer will see this comment. Up to 1000 characters.');
    hint.id = 'na-hint-' + n;
    var err = el('p', 'form-error');
    err.id = 'na-error-' + n;
    var submit = button('Send', 'primary');
    submit.type = 'submit';
    var cancel = button('Cancel', 'link');
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
      if (!comment) { err.textContent = 'Please write a short explanation.'; ta.focus(); return; }
      if (comment.length > 1000) { err.textContent = 'Please keep it under 1000 characters.'; ta.focus(); return; }
      err.textContent = '';
      submit.disabled = true;
      api('POST', '/requests/' + encodeURIComponent(r.id) + '/not-applicable', { comment: comment }).then(function () {
        announce(docLabel(r.doc_type) + ' marked as not applicable. Thank you.');
        focusRequest = r.id;
        return load();
      }, function (x) {
        if (LINK_CODES[x.code]) { showLinkMessage(x.code); return; }
        err.textContent = problemText(x, 'That did not go through. Please try again.');
        submit.disabled = false;
        ta.focus();
      });
    });
    return form;
  }

  function fileStateText(f) {
    switch (f.state) {
      case 'awaiting_upload': return 'Uploading…';
      case 'uploaded': case 'scanning': return 'Checking…';
      case 'available': return 'Received';
      case 'rejected':
        if (f.reason === 'rejected_by_agent' || (!f.reason && f.review_reason)) {
          return 'Not accepted: ' + (f.review_reason || 'your loan officer asked for a different file');
        }
        return 'Not accepted: ' + (REASONS[f.reason] || 'the file could not be accepted');
      case 'failed': return 'Could not be processed; please try again';
      case 'expired': return 'The upload was not finished; please try again';
      default: return 'Processing';
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
      var name = el('span', 'file-name', f.filename || 'Unnamed file');
      if (f.doc_type) name.append(el('span', 'file-type', docLabel(f.doc_type)));
      var text = fileStateText(f);
      li.append(name, el('span', 'file-status', text));
      list.append(li);
      var prev = lastStates.get(f.id);
      if (prev && prev !== f.state && /^(available|rejected|failed)$/.test(f.state)) {
        changes.push((f.filename || 'A file') + ': ' + text);
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
    if (file.size === 0) return 'This file is empty';
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
    if (queued) announce(queued === 1 ? 'Uploading 1 file.' : 'Uploading ' + queued + ' files.');
    pump();
  }

  function buildRow(job) {
    var li = el('li', 'upload-row');
    li.setAttribute('data-filename', job.file.name);
    li.setAttribute('data-state', 'queued');
    var name = el('span', 'upload-name', job.file.name);
    if (job.request) name.append(el('span', 'upload-for', ' — for ' + docLabel(job.request.doc_type)));
    var progress = el('progress', 'upload-progress');
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute('aria-label', 'Upload progress for ' + job.file.name);
    var status = el('span', 'upload-status', 'Waiting…');
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
    var retry = button('Try again', 'secondary');
    retry.addEventListener('click', function () {
      retry.remove();
      job.row.progress.value = 0;
      setRow(job, 'queued', 'Waiting…');
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
        ? batch.ok + ' uploaded, ' + batch.failed + ' not uploaded. See the list of uploads for details.'
        : (batch.ok === 1 ? 'Your file was uploaded. We are checking it now.' : batch.ok + ' files were uploaded. We are checking them now.'));
      batch = { ok: 0, failed: 0 };
    }
  }

  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  // Create the document, retrying a couple of times when rate limited (honouring Retry-After).
  function create(job, body, attempt) {
    return api('POST', '/files', body).catch(function (err) {
      if (err.status !== 429 || attempt >= 2) throw err;
      var secs = Math.min(Math.max(err.retryAfter || 5, 1), 60);
      setRow(job, 'uploading', 'Busy, trying again in ' + secs + ' seconds…');
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
        job.row.status.textContent = 'Uploading… ' + pct + '%';
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) resolve();
        else reject(apiError(xhr.status, 'storage_error', 'The upload did not go through. Please try again.'));
      };
      xhr.onerror = xhr.onabort = xhr.ontimeout = function () {
        reject(apiError(0, 'network', 'The upload was interrupted. Please check your connection and try again.'));
      };
      xhr.send(job.file);
    });
  }

  function run(job) {
    setRow(job, 'uploading', 'Preparing…');
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
        throw apiError(0, 'bad_response', 'The upload could not be started. Please try again.');
      }
      job.created = created;
      setRow(job, 'uploading', 'Uploading…');
      return job.putDone ? null : put(job, created.upload);
    }).then(function () {
      job.putDone = true;
      setRow(job, 'uploading', 'Finishing…');
      return api('POST', '/files/' + encodeURIComponent(job.created.document.id) + '/complete');
    }).then(function () {
      batch.ok++;
      job.row.progress.value = 100;
      setRow(job, 'done', 'Uploaded. We are checking it now.');
      load();
    }, function (err) {
      // Network hiccups resume where they stopped; anything else starts over with a new
      // document (the abandoned one expires on its own).
      if (err.status !== 0) { job.created = null; job.putDone = false; }
      var final = err.status === 422 || LINK_CODES[err.code];
      fail(job, problemText(err, 'The upload did not go through. Please try again.'), !final);
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
