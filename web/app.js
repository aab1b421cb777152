// The upload page: every file is its own PUT /upload/<name>, a few at a time,
// so one failure does not void the others. Files over RESUMABLE_FROM go up
// resumably (tus 1.0.0 at /tus/, docs/resumable.md) in chunks: a lost
// connection is retried with back-off from where the server says, and after a
// reload the same file (name, size, date) continues where it stopped. No
// framework, no other origin.
'use strict';

(function () {
  const PARALLEL = 3;
  const TOKEN_KEY = 'upload-token';  // sessionStorage: this tab only
  const RESUMABLE_FROM = 8 * 1024 * 1024;
  const CHUNK = 32 * 1024 * 1024;
  const RESUME_PREFIX = 'upload-tus:';  // localStorage: name, size, date -> the upload's path
  const BACKOFF = [1000, 2000, 4000, 8000, 15000, 30000];
  let resumable = true;  // false once /tus/ answered 404 (turned off): PUT for all

  const app = document.getElementById('app');
  const limitText = document.getElementById('limit-text').textContent;
  let tokenRequired = app.dataset.tokenRequired === 'true';
  const tokenForm = document.getElementById('token-form');
  const tokenInput = document.getElementById('token-input');
  const tokenMessage = document.getElementById('token-message');
  const tokenSet = document.getElementById('token-set');
  const fileInput = document.getElementById('file-input');
  const dropZone = document.getElementById('drop-zone');
  const list = document.getElementById('files');
  const announce = document.getElementById('announce');

  const queue = [];          // items waiting for a free slot
  const needToken = [];      // items waiting for a (new) token
  let running = 0;

  function formatBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(value < 10 ? 1 : 0)) + ' ' + units[unit];
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showTokenState(message) {
    const asking = tokenRequired && !token();
    tokenForm.hidden = !asking;
    tokenSet.hidden = !tokenRequired || asking;
    tokenMessage.textContent = message || '';
    if (asking) tokenInput.focus();
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // `refusal`: why the file is not sent at all (a folder dropped on the page).
  function addFile(file, refusal) {
    const li = element('li', 'file');
    li.tabIndex = -1;  // takes focus when its cancel button goes away
    const head = element('div', 'file-head');
    const name = element('span', 'file-name', file.name);
    const cancel = element('button', 'cancel', 'Cancel');
    cancel.type = 'button';
    cancel.setAttribute('aria-label', 'Cancel ' + file.name);
    head.append(name, cancel);
    const progress = element('progress');
    progress.max = Math.max(file.size, 1);
    progress.value = 0;
    progress.setAttribute('aria-label', 'Progress of ' + file.name);
    const status = element('p', 'file-status');
    li.append(head, progress, status);
    list.append(li);

    const item = { file, li, progress, status, cancel, xhr: null, tus: null };
    cancel.addEventListener('click', () => cancelItem(item));

    const limit = Number(app.dataset.maxUploadSize) || 0;
    if (refusal) {
      fail(item, refusal);
    } else if (limit > 0 && file.size > limit) {
      fail(item, tooLarge());
    } else if (tokenRequired && !token()) {
      wait(item);
    } else {
      setState(item, 'queued', 'Waiting, ' + formatBytes(file.size));
      queue.push(item);
    }
  }

  function setState(item, state, text) {
    item.li.dataset.state = state;
    item.status.textContent = text;
  }

  function wait(item) {
    setState(item, 'token', 'Waiting for the upload token (above).');
    needToken.push(item);
  }

  function settle(item, state, text) {
    setState(item, state, text);
    if (document.activeElement === item.cancel) item.li.focus();
    item.cancel.remove();
    announce.textContent = item.file.name + ': ' + text;
  }

  function fail(item, text) {
    item.progress.value = 0;
    settle(item, 'error', text);
  }

  function cancelled(item) {
    item.progress.value = 0;
    settle(item, 'cancelled', 'Cancelled.');
  }

  function tooLarge() {
    // Without a limit of our own, a proxy in front of the server refused it.
    return limitText === 'unlimited' ? 'Too large for the server.' : 'Too large: the limit is ' + limitText + '.';
  }

  function cancelItem(item) {
    if (item.tus) {
      item.tus.cancelled = true;  // the resumable loop settles it and sends DELETE
      if (item.xhr) item.xhr.abort();
      if (item.tus.wake) item.tus.wake();
      return;
    }
    if (item.xhr) {
      item.xhr.abort();  // its abort event settles it
      return;
    }
    for (const waiting of [queue, needToken]) {
      const index = waiting.indexOf(item);
      if (index >= 0) waiting.splice(index, 1);
    }
    cancelled(item);
  }

  function showProgress(item, loaded) {
    const total = item.file.size;
    const percent = total > 0 ? Math.floor(loaded * 100 / total) : 100;
    item.progress.value = loaded;
    item.status.textContent = formatBytes(loaded) + ' of ' + formatBytes(total) + ' (' + percent + ' %)';
  }

  function errorText(xhr) {
    let message = '';
    try {
      message = JSON.parse(xhr.responseText).error || '';
    } catch (error) {
      // not JSON (a proxy's page, for example): the status says enough
    }
    switch (xhr.status) {
      case 413: return tooLarge();
      case 409: return 'A file with this name already exists.';
      case 507: return 'The server\'s disk is full.';
      default: return 'Refused by the server: ' + (message || 'HTTP status ' + xhr.status) + '.';
    }
  }

  function finish(item, xhr) {
    if (xhr.status === 200 || xhr.status === 201) {
      let stored;
      try {
        stored = JSON.parse(xhr.responseText).files[0];
      } catch (error) {
        fail(item, 'The server\'s answer was not understood.');
        return;
      }
      item.progress.value = item.progress.max;
      item.li.dataset.storedName = stored.name;
      item.li.dataset.storedSize = String(stored.size);
      settle(item, 'done', 'Stored as ' + stored.name + ', ' + formatBytes(stored.size) + '.');
    } else if (xhr.status === 401) {
      needsToken(item);
    } else {
      fail(item, errorText(xhr));
    }
  }

  function start(item) {
    if (resumable && item.file.size > RESUMABLE_FROM) {
      startResumable(item);
      return;
    }
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    running += 1;
    setState(item, 'uploading', '');
    showProgress(item, 0);
    xhr.open('PUT', '/upload/' + encodeURIComponent(item.file.name));
    if (token()) xhr.setRequestHeader('Authorization', 'Bearer ' + token());
    xhr.upload.addEventListener('progress', (event) => showProgress(item, event.loaded));
    xhr.addEventListener('load', () => finish(item, xhr));
    xhr.addEventListener('error', () => fail(item, 'Server unreachable.'));
    xhr.addEventListener('abort', () => cancelled(item));
    xhr.addEventListener('loadend', () => {
      item.xhr = null;
      running -= 1;
      pump();
    });
    xhr.send(item.file);
  }

  // ---------------------------------------------------------------- resumable (tus)

  function resumeKey(file) {
    return RESUME_PREFIX + JSON.stringify([file.name, file.size, file.lastModified]);
  }

  function base64(text) {
    let binary = '';
    for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  // One request of a resumable upload; resolves with the finished XHR, or
  // rejects with 'network' or 'abort'.
  function tusRequest(item, method, path, headers, body, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      item.xhr = xhr;
      xhr.open(method, path);
      xhr.setRequestHeader('Tus-Resumable', '1.0.0');
      if (token()) xhr.setRequestHeader('Authorization', 'Bearer ' + token());
      for (const name of Object.keys(headers)) xhr.setRequestHeader(name, headers[name]);
      if (onProgress) xhr.upload.addEventListener('progress', (event) => onProgress(event.loaded));
      xhr.addEventListener('load', () => resolve(xhr));
      xhr.addEventListener('error', () => reject(new Error('network')));
      xhr.addEventListener('timeout', () => reject(new Error('network')));
      xhr.addEventListener('abort', () => reject(new Error('abort')));
      // The next request may have started already (from the promise's continuation).
      xhr.addEventListener('loadend', () => { if (item.xhr === xhr) item.xhr = null; });
      xhr.send(body === undefined ? null : body);
    });
  }

  // Cancel ends the upload on the server too (termination). The aborted PATCH may
  // still hold the upload's lock for a moment: a 409 is tried again after its
  // Retry-After, a few times.
  async function terminate(path) {
    for (let attempt = 0; attempt < 5; attempt++) {
      let xhr;
      try {
        xhr = await tusRequest({ xhr: null }, 'DELETE', path, {});
      } catch (error) {
        return;
      }
      if (xhr.status !== 409) return;
      const seconds = Number(xhr.getResponseHeader('Retry-After')) || 1;
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    }
  }

  // Waits `ms`, or less if Cancel is pressed.
  function pause(item, ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      item.tus.wake = () => { clearTimeout(timer); resolve(); };
    }).then(() => { item.tus.wake = null; });
  }

  // Where the upload at `path` stands: its offset, or `gone` when the server no
  // longer has it (expired, terminated, or completed with the answer lost).
  async function tusStatus(item, path) {
    const xhr = await tusRequest(item, 'HEAD', path, {});
    if (xhr.status !== 200) return { gone: xhr.status === 404 || xhr.status === 410, xhr };
    return {
      offset: Number(xhr.getResponseHeader('Upload-Offset')),
      length: Number(xhr.getResponseHeader('Upload-Length')),
      xhr,
    };
  }

  function storedAs(item, encodedName) {
    let name = encodedName;
    try { name = decodeURIComponent(encodedName); } catch (error) { /* as sent */ }
    localStorage.removeItem(resumeKey(item.file));
    item.progress.value = item.progress.max;
    item.li.dataset.storedName = name;
    item.li.dataset.storedSize = String(item.file.size);
    settle(item, 'done', 'Stored as ' + name + ', ' + formatBytes(item.file.size) + '.');
  }

  function needsToken(item) {
    const message = token() ? 'The token was not accepted. Enter it again.' : 'An upload token is needed.';
    sessionStorage.removeItem(TOKEN_KEY);
    tokenRequired = true;
    item.progress.value = 0;
    wait(item);
    showTokenState(message);
  }

  function startResumable(item) {
    running += 1;
    item.tus = { cancelled: false, wake: null, path: null };
    setState(item, 'uploading', '');
    showProgress(item, 0);
    runResumable(item).catch((error) => {
      if (item.tus.cancelled || (error && error.message === 'abort')) {
        if (item.tus.path) terminate(item.tus.path);
        localStorage.removeItem(resumeKey(item.file));
        cancelled(item);
      } else {
        fail(item, 'Server unreachable.');
      }
    }).finally(() => {
      item.tus = null;
      running -= 1;
      pump();
    });
  }

  async function runResumable(item) {
    const file = item.file;
    const key = resumeKey(file);
    let offset = 0;
    let path = localStorage.getItem(key);
    if (path) {
      const known = await tusStatus(item, path);
      if (known.offset !== undefined && known.length === file.size) {
        offset = known.offset;
        showProgress(item, offset);
      } else {
        localStorage.removeItem(key);
        path = null;
      }
    }
    if (!path) {
      const created = await tusRequest(item, 'POST', '/tus/', {
        'Upload-Length': String(file.size),
        'Upload-Metadata': 'filename ' + base64(file.name),
      });
      if (created.status === 404) {
        // Resumable uploads are turned off on this server: one PUT instead.
        resumable = false;
        queue.unshift(item);  // started again by the pump below, as a PUT
        return;
      }
      if (created.status === 401) {
        needsToken(item);
        return;
      }
      if (created.status !== 201 || !created.getResponseHeader('Location')) {
        fail(item, errorText(created));
        return;
      }
      // Only the path: the page talks to its own origin (CSP connect-src 'self').
      path = new URL(created.getResponseHeader('Location'), window.location.href).pathname;
      localStorage.setItem(key, path);
    }
    item.tus.path = path;

    let attempt = 0;
    while (!item.tus.cancelled) {
      try {
        const end = Math.min(offset + CHUNK, file.size);
        const start = offset;
        const xhr = await tusRequest(item, 'PATCH', path, {
          'Upload-Offset': String(offset),
          'Content-Type': 'application/offset+octet-stream',
        }, file.slice(offset, end), (loaded) => showProgress(item, start + loaded));
        if (xhr.status === 204) {
          attempt = 0;
          offset = Number(xhr.getResponseHeader('Upload-Offset'));
          showProgress(item, offset);
          const name = xhr.getResponseHeader('Upload-Name');
          if (name) {
            storedAs(item, name);
            return;
          }
          continue;
        }
        if (xhr.status === 401) {
          needsToken(item);
          return;
        }
        if (xhr.status === 409 || xhr.status === 460 || xhr.status >= 500) {
          // Out of step, busy or damaged on the way: ask where it stands.
          const known = await tusStatus(item, path);
          if (known.gone) {
            localStorage.removeItem(key);
            fail(item, xhr.status === 409 ? errorText(xhr) : 'The upload expired on the server; choose the file again.');
            return;
          }
          if (known.offset === undefined) {
            fail(item, errorText(known.xhr));
            return;
          }
          offset = known.offset;
          if (xhr.status === 409 && attempt === 0) {
            attempt += 1;
            continue;
          }
        } else if (xhr.status === 404 || xhr.status === 410) {
          localStorage.removeItem(key);
          fail(item, 'The upload expired on the server; choose the file again.');
          return;
        } else {
          fail(item, errorText(xhr));
          return;
        }
      } catch (error) {
        if (item.tus.cancelled || error.message === 'abort') throw error;
        // The connection dropped: wait, then continue from the server's offset.
      }
      const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
      attempt += 1;
      setState(item, 'retrying', 'Connection lost, resuming\u2026');
      await pause(item, delay);
      if (item.tus.cancelled) break;
      try {
        const known = await tusStatus(item, path);
        if (known.gone) {
          localStorage.removeItem(key);
          fail(item, 'The upload expired on the server; choose the file again.');
          return;
        }
        if (known.offset !== undefined) {
          offset = known.offset;
          setState(item, 'uploading', '');
          showProgress(item, offset);
        }
      } catch (error) {
        if (error.message === 'abort') throw error;
        // still unreachable: the next round waits longer
      }
    }
    throw new Error('abort');
  }

  function pump() {
    while (running < PARALLEL && queue.length > 0) start(queue.shift());
  }

  function addFiles(files, folders) {
    Array.from(files).forEach((file, index) => {
      addFile(file, folders && folders[index] ? 'A folder: drop or choose the files in it instead.' : '');
    });
    pump();
  }

  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = tokenInput.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    tokenInput.value = '';
    showTokenState();
    for (const item of needToken.splice(0)) {
      setState(item, 'queued', 'Waiting, ' + formatBytes(item.file.size));
      queue.push(item);
    }
    pump();
  });

  document.getElementById('token-change').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });

  document.getElementById('upload-form').addEventListener('submit', (event) => event.preventDefault());
  document.getElementById('upload-button').hidden = true;  // choosing files starts the uploads
  document.getElementById('drop-hint').hidden = false;

  fileInput.addEventListener('change', () => {
    addFiles(fileInput.files);
    fileInput.value = '';  // the same file can be chosen again
  });

  // The whole page takes drops, so a near miss does not open the file in the tab.
  let dragDepth = 0;
  document.addEventListener('dragenter', (event) => {
    event.preventDefault();
    dragDepth += 1;
    dropZone.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => {
    dragDepth = Math.max(dragDepth - 1, 0);
    if (dragDepth === 0) dropZone.classList.remove('dragging');
  });
  document.addEventListener('dragover', (event) => event.preventDefault());
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropZone.classList.remove('dragging');
    if (!event.dataTransfer) return;
    // A dropped folder arrives as a File that cannot be read.
    const folders = Array.from(event.dataTransfer.items).filter((entry) => entry.kind === 'file').map((entry) => {
      const item = entry.webkitGetAsEntry && entry.webkitGetAsEntry();
      return Boolean(item && item.isDirectory);
    });
    addFiles(event.dataTransfer.files, folders);
  });

  showTokenState();
})();
