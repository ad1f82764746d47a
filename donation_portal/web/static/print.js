// The receipt's Print button: shown only where this script runs (the page's policy allows no
// inline script), and it opens the browser's own print dialog.
(function () {
  "use strict";
  var buttons = document.querySelectorAll("button[data-print]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      window.print();
    });
  });
})();
