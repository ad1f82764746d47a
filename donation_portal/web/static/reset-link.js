// A password-reset link carries its token after "#", a part browsers never send to a server
// (so no access log keeps it). Copy it into the form, and out of the address bar and history.
(function () {
  "use strict";
  var field = document.getElementById("token");
  var token = window.location.hash.slice(1);
  if (field && token) {
    field.value = token;
    window.history.replaceState(null, "", window.location.pathname);
  }
})();
