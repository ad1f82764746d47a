// Security keys (WebAuthn) for the forms marked data-security-key="create" (register a key)
// or "get" (sign in with one). On submit: fetch the ceremony's options (JSON, a fresh
// challenge) from data-options-url, ask the browser's key, put its answer (JSON, binary
// fields as base64url) into the form's "credential" field, and submit the form as usual.
(function () {
  "use strict";

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = window.atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) { binary += String.fromCharCode(bytes[i]); }
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      return { type: item.type, id: toBytes(item.id), transports: item.transports };
    });
  }

  function creationOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = descriptors(options.excludeCredentials);
    return { publicKey: options };
  }

  function requestOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = descriptors(options.allowCredentials);
    return { publicKey: options };
  }

  function answer(credential) {
    var response = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) }
    };
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      if (response.getTransports) { json.response.transports = response.getTransports(); }
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      if (response.userHandle) { json.response.userHandle = toText(response.userHandle); }
    }
    return JSON.stringify(json);
  }

  function start(form, status) {
    var creating = form.getAttribute("data-security-key") === "create";
    fetch(form.getAttribute("data-options-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": form.elements.csrf_token.value }
    })
      .then(function (reply) {
        var stepUp = form.getAttribute("data-step-up-url");
        if (reply.status === 401 && stepUp) {
          window.location.assign(stepUp);
          return null;
        }
        return reply.json().then(function (body) {
          if (!reply.ok) { throw new Error(body.detail || "The portal refused."); }
          return creating
            ? navigator.credentials.create(creationOptions(body))
            : navigator.credentials.get(requestOptions(body));
        });
      })
      .then(function (credential) {
        if (!credential) { return; }
        form.elements.credential.value = answer(credential);
        form.submit();
      })
      .catch(function (error) {
        status.textContent = error && error.name === "NotAllowedError"
          ? "The security key was not used (cancelled, or it took too long). Please try again."
          : (error && error.message) || "The security key could not be used.";
      });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-security-key]"), function (form) {
    var status = form.querySelector(".key-status");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!window.PublicKeyCredential || !navigator.credentials) {
        status.textContent = "This browser cannot use security keys.";
        return;
      }
      status.textContent = "Waiting for your security key…";
      start(form, status);
    });
  });
})();
