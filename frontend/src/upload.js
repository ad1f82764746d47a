// The upload page: Uppy's Dashboard on the portal's tus 1.0 endpoint (/uploads/).
// Only the type (for a ZIP archive) and the batch's submission key go to the server, never a
// file name; the names stay in this browser (names.js). Golden Retriever keeps the selection
// in this browser's IndexedDB so that an upload resumes after the tab was closed.
// Without JavaScript the page's plain form posts the files instead.
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import GoldenRetriever from "@uppy/golden-retriever";
import Tus from "@uppy/tus";
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";
import { remember } from "./names.js";
import { skipReason } from "./skip.js";

const ZIP_TYPES = new Set(["application/zip", "application/x-zip-compressed"]);
const CHUNK = 8 * 1024 * 1024; // 8 MiB pieces, as the README says

function problemOf(response) {
  // the server answers application/problem+json with a sentence a donor can read
  const xhr = response && response.body && response.body.xhr;
  try {
    return JSON.parse(xhr.responseText).detail || null;
  } catch (error) {
    return null;
  }
}

async function isZip(file) {
  if (ZIP_TYPES.has(String(file.type || "").toLowerCase())) { return true; }
  try {
    const head = new Uint8Array(await file.data.slice(0, 4).arrayBuffer());
    return head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  } catch (error) {
    return false;
  }
}

function start() {
  const form = document.getElementById("upload-form");
  const target = document.getElementById("uploader");
  if (!form || !target || !window.fetch || !window.Blob) { return; }
  const endpoint = form.getAttribute("data-tus-endpoint");
  const doneUrl = form.getAttribute("data-done-url");
  const csrf = form.querySelector('input[name="csrf_token"]').value;
  const submission = form.querySelector('input[name="submission_key"]').value;
  const maxBytes = Number(form.getAttribute("data-max-bytes")) || null;
  const note = document.getElementById("uploader-skipped");
  const skipped = [];

  function showSkipped() {
    if (!note) { return; }
    note.hidden = skipped.length === 0;
    note.textContent = skipped.length === 1
      ? "1 file was left out: " + skipped[0] + "."
      : skipped.length + " files were left out because they are not images (the CD's index " +
        "DICOMDIR, a viewer program or documents). Nothing else is needed from them.";
  }

  const uppy = new Uppy({
    id: "donation-upload",
    autoProceed: false,
    restrictions: { maxFileSize: maxBytes },
    meta: { submission },
    onBeforeFileAdded(file) {
      const reason = skipReason(file.name, file.meta && file.meta.relativePath);
      if (reason) {
        skipped.push(file.name + " (" + reason + ")");
        showSkipped();
        return false;
      }
      return true;
    },
  });

  uppy.use(Dashboard, {
    inline: true,
    target,
    width: "100%",
    height: 460,
    fileManagerSelectionType: "both", // files, or a whole folder (a hospital CD)
    showProgressDetails: true, // bytes and time left
    proudlyDisplayPoweredByUppy: false,
    disableThumbnailGenerator: true, // DICOM has no browser preview; blob: images are not allowed
    showRemoveButtonAfterComplete: false,
    doneButtonHandler: null,
    note: "DICOM files, a whole folder or a CD, or a ZIP archive of it.",
    locale: { strings: { dropPasteBoth: "Drop files or a folder here, %{browseFiles} or %{browseFolders}" } },
  });

  uppy.use(Tus, {
    endpoint,
    headers: { "X-CSRFToken": csrf },
    chunkSize: CHUNK,
    limit: 3,
    retryDelays: [0, 1000, 3000, 5000, 10000, 20000, 30000, 60000, 60000, 60000],
    removeFingerprintOnSuccess: true,
    // the file name must never reach the server: only these two fields are sent
    allowedMetaFields: ["submission", "filetype"],
  });

  uppy.use(GoldenRetriever, { serviceWorker: false });

  // before sending: the type the server needs (a ZIP may be larger), checked by the bytes
  uppy.addPreProcessor(async (fileIDs) => {
    await Promise.all(fileIDs.map(async (id) => {
      const file = uppy.getFile(id);
      if (!file || !file.data) { return; }
      const zip = await isZip(file);
      uppy.setFileMeta(id, {
        filetype: zip ? "application/zip" : "application/octet-stream",
        submission: file.meta.submission || submission,
      });
    }));
  });

  uppy.on("upload-success", (file, response) => {
    if (file && response && response.uploadURL) { remember(response.uploadURL, file); }
  });

  // the server's own sentence, beside the file and in plain sight under the Dashboard
  const problem = document.getElementById("uploader-problem");
  uppy.on("upload-error", (file, error, response) => {
    const detail = problemOf(response);
    if (file && detail) { uppy.setFileState(file.id, { error: detail }); }
    if (problem) {
      problem.hidden = false;
      problem.textContent = detail ||
        "A file could not be sent. Check the connection, then press Retry: it goes on where it stopped.";
    }
  });
  uppy.on("upload", () => { if (problem) { problem.hidden = true; } });
  uppy.on("retry-all", () => { if (problem) { problem.hidden = true; } });

  uppy.on("complete", (result) => {
    if (result.failed && result.failed.length === 0 && result.successful && result.successful.length) {
      window.setTimeout(() => { window.location.assign(doneUrl); }, 1500);
    }
  });

  form.hidden = true;
  target.hidden = false;
  document.querySelectorAll(".js-only").forEach((el) => { el.hidden = false; });
  document.documentElement.classList.add("uploader-ready");
  window.donationUppy = uppy; // for the browser tests
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
