// Keeps the file states of a donation page current without reloading: polls the page's
// status URL while any file is waiting or being processed, then stops.
// Beside each file, the donor's own file name when this browser sent it: the upload page
// (frontend/src/names.js) keeps upload id -> name in localStorage; the server never has it.
(function () {
  "use strict";
  var table = document.getElementById("donation-files");
  if (!table) { return; }
  var url = table.getAttribute("data-status-url");
  var delay = 1000;
  var NAMES_KEY = "donation-portal.file-names.v1"; // as in frontend/src/names.js

  function knownNames() {
    try {
      return JSON.parse(window.localStorage.getItem(NAMES_KEY) || "{}") || {};
    } catch (error) {
      return {};
    }
  }

  function showNames() {
    var names = knownNames();
    var shown = 0;
    var images = {}; // per archive upload: the how-manieth image of it this row is
    Array.prototype.forEach.call(table.querySelectorAll("tr[data-upload]"), function (row) {
      var known = names[row.getAttribute("data-upload")];
      if (!known) { return; }
      var label = known.path || known.name;
      if (!label) { return; }
      if (row.hasAttribute("data-member")) {
        var upload = row.getAttribute("data-upload");
        images[upload] = (images[upload] || 0) + 1;
        label += " › image " + images[upload];
      }
      var cell = row.querySelector(".file-name");
      cell.textContent = label;
      cell.title = "File " + row.getAttribute("data-position");
      shown += 1;
    });
    var note = document.getElementById("donation-names-note");
    if (note) { note.hidden = shown === 0; }
  }

  function update(files) {
    files.forEach(function (file) {
      var row = table.querySelector('tr[data-position="' + file.position + '"]');
      if (!row) { return; }
      row.className = "status-" + file.status;
      row.querySelector(".file-status").textContent = file.label;
      if (file.status !== "accepted") {
        row.querySelector(".file-details").textContent = file.reason || "";
      }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        update(body.files);
        if (body.pending) {
          delay = Math.min(delay * 1.5, 10000);
          window.setTimeout(poll, delay);
        } else if (document.querySelector(".status-waiting, .status-processing") === null) {
          table.setAttribute("data-done", "true");
        }
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }

  showNames();
  if (table.querySelector(".status-waiting, .status-processing")) {
    window.setTimeout(poll, delay);
  }
})();
