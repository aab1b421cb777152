// The upload page: every file is its own PUT /upload/<name>, a few at a time,
// so one failure does not void the others. No framework, no other origin.
'use strict';

(function () {
  const PARALLEL = 3;
  const TOKEN_KEY = 'upload-token';  // sessionStorage: this tab only

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

    const item = { file, li, progress, status, cancel, xhr: null };
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
      const message = token() ? 'The token was not accepted. Enter it again.' : 'An upload token is needed.';
      sessionStorage.removeItem(TOKEN_KEY);
      tokenRequired = true;
      item.progress.value = 0;
      wait(item);
      showTokenState(message);
    } else {
      fail(item, errorText(xhr));
    }
  }

  function start(item) {
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
