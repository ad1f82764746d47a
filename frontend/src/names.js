// The donor's own file names, kept in this browser only: the server never receives them.
// A map from the tus upload id (the last segment of the upload URL) to the name and the
// relative path the donor chose. static/donation-status.js reads the same key (keep in step).
export const NAMES_KEY = "donation-portal.file-names.v1";
const LIMIT = 20000; // the oldest entries go first beyond this many

function load() {
  try {
    return JSON.parse(window.localStorage.getItem(NAMES_KEY) || "{}") || {};
  } catch (error) {
    return {};
  }
}

export function uploadIdOf(url) {
  if (!url) { return null; }
  const path = new URL(url, window.location.href).pathname.replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)) || null;
}

export function remember(uploadUrl, file) {
  const id = uploadIdOf(uploadUrl);
  if (!id) { return; }
  const names = load();
  const relative = file.meta && file.meta.relativePath;
  names[id] = { name: file.name, path: relative && relative !== "null" ? relative : null, at: Date.now() };
  const ids = Object.keys(names);
  if (ids.length > LIMIT) {
    ids.sort((a, b) => (names[a].at || 0) - (names[b].at || 0));
    ids.slice(0, ids.length - LIMIT).forEach((old) => { delete names[old]; });
  }
  try {
    window.localStorage.setItem(NAMES_KEY, JSON.stringify(names));
  } catch (error) {
    // storage full or disabled: the donation page shows "File N" instead
  }
}
