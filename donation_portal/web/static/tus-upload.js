// Resumable uploads for the donation form (tus 1.0.0): files go in pieces; a broken
// connection resumes from the offset the server has kept; several files at a time.
// Without JavaScript the form posts the files as before (the same pipeline on the server).
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.Blob) { return; }
  var endpoint = form.getAttribute("data-tus-endpoint");
  var doneUrl = form.getAttribute("data-done-url");
  var csrf = form.querySelector('input[name="csrf_token"]').value;
  var submission = form.querySelector('input[name="submission_key"]').value;
  var CHUNK = 8 * 1024 * 1024;
  var PARALLEL = 3;
  var RETRIES = 8;

  Array.prototype.forEach.call(form.querySelectorAll(".js-only"), function (el) { el.hidden = false; });

  function headers(extra) {
    var all = { "Tus-Resumable": "1.0.0", "X-CSRFToken": csrf };
    Object.keys(extra || {}).forEach(function (key) { all[key] = extra[key]; });
    return all;
  }

  function problemOf(response) {
    return response.json().then(function (body) { return body.detail; }, function () {
      return "The upload was refused (" + response.status + ").";
    });
  }

  function wait(ms) { return new Promise(function (resolve) { window.setTimeout(resolve, ms); }); }

  function create(file) {
    var meta = "submission " + btoa(submission);
    // only the type, never the name (a file name can name the patient)
    if (file.type) { meta += ",filetype " + btoa(file.type); }
    return fetch(endpoint, {
      method: "POST", credentials: "same-origin",
      headers: headers({ "Upload-Length": String(file.size), "Upload-Metadata": meta })
    }).then(function (response) {
      if (response.status !== 201) { return problemOf(response).then(function (m) { throw new Refused(m); }); }
      return response.headers.get("Location");
    });
  }

  function Refused(message) { this.message = message; }

  function offsetOf(url) {
    return fetch(url, { method: "HEAD", credentials: "same-origin", headers: headers() })
      .then(function (response) {
        if (!response.ok) { throw new Refused("This upload can no longer be resumed."); }
        return Number(response.headers.get("Upload-Offset"));
      });
  }

  function send(url, file, offset, progress) {
    if (offset >= file.size) { return Promise.resolve(); }
    var piece = file.slice(offset, Math.min(file.size, offset + CHUNK));
    return fetch(url, {
      method: "PATCH", credentials: "same-origin", body: piece,
      headers: headers({ "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" })
    }).then(function (response) {
      if (response.status === 204) {
        var next = Number(response.headers.get("Upload-Offset"));
        progress(next);
        return send(url, file, next, progress);
      }
      if (response.status === 409 || response.status >= 500 || response.status === 429) {
        throw new Error("retry");
      }
      return problemOf(response).then(function (m) { throw new Refused(m); });
    });
  }

  function upload(file, progress) {
    return create(file).then(function (url) {
      var attempt = 0;
      function go(offset) {
        return send(url, file, offset, progress).catch(function (error) {
          if (error instanceof Refused || attempt >= RETRIES) { throw error; }
          attempt += 1;
          return wait(Math.min(30000, 1000 * Math.pow(2, attempt)))
            .then(function () { return offsetOf(url); })
            .then(go);
        });
      }
      return go(0);
    });
  }

  form.addEventListener("submit", function (event) {
    var files = Array.prototype.slice.call(document.getElementById("files").files)
      .concat(Array.prototype.slice.call(document.getElementById("folder").files));
    if (!files.length) { return; }
    event.preventDefault();
    form.hidden = true;
    var panel = document.getElementById("upload-progress");
    var summary = document.getElementById("upload-summary");
    var bar = document.getElementById("upload-bar");
    var problem = document.getElementById("upload-problem");
    panel.hidden = false;
    var total = files.reduce(function (sum, f) { return sum + f.size; }, 0) || 1;
    var sent = files.map(function () { return 0; });
    var finished = 0, failed = 0, next = 0;
    function show() {
      bar.value = sent.reduce(function (a, b) { return a + b; }, 0) / total;
      summary.textContent = finished + " of " + files.length + " files sent" +
        (failed ? ", " + failed + " not sent" : "") + ".";
    }
    function worker() {
      if (next >= files.length) { return Promise.resolve(); }
      var index = next++;
      return upload(files[index], function (offset) { sent[index] = offset; show(); })
        .then(function () { finished += 1; }, function (error) {
          failed += 1;
          problem.hidden = false;
          problem.textContent = error.message || "A file could not be sent.";
        })
        .then(function () { show(); return worker(); });
    }
    show();
    var lanes = [];
    for (var i = 0; i < PARALLEL; i++) { lanes.push(worker()); }
    Promise.all(lanes).then(function () {
      if (!failed) { window.location.assign(doneUrl); }
    });
  });
})();
