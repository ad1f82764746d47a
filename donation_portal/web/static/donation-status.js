// Keeps the file states of a donation page current without reloading: polls the page's
// status URL while any file is waiting or being processed, then stops.
(function () {
  "use strict";
  var table = document.getElementById("donation-files");
  if (!table) { return; }
  var url = table.getAttribute("data-status-url");
  var delay = 1000;

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

  if (table.querySelector(".status-waiting, .status-processing")) {
    window.setTimeout(poll, delay);
  }
})();
