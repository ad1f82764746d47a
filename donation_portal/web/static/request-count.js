// "Count matching data" on the request form, without sending the page: a browser cannot put
// a chosen file back into a reloaded form, so counting by reload lost the ethics document.
// Without this script the count still works by reload, and the page says to choose it again.
(function () {
  "use strict";
  var form = document.querySelector("form.request-form");
  var status = document.getElementById("matched");
  if (!form || !status || !window.fetch || !window.FormData) {
    return;
  }
  function show(text, failed) {
    status.textContent = text;
    status.className = failed ? "errors" : "notice";
    status.hidden = false;
  }
  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (!button || button.value !== "count") {
      return;
    }
    event.preventDefault();
    var data = new FormData(form);
    data.delete("ethics"); // counting needs no document: it stays chosen in the form
    data.set("action", "count");
    show("Counting…", false);
    fetch(window.location.pathname, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().then(function (body) {
          if (body.matched) {
            show(body.matched, false);
          } else {
            show("Please check: " + (body.errors || ["the form could not be counted."]).join(" "), true);
          }
        });
      })
      .catch(function () {
        show("The data could not be counted just now; please try again.", true);
      });
  });
})();
