// What on a hospital CD is not an image: the DICOMDIR index, the viewer program and its
// files. Left out in the browser (with a note) so a phone does not send a viewer's hundreds
// of megabytes; every other file is sent and the server decides what is DICOM.
const NAMES = new Set(["dicomdir", "autorun.inf", "desktop.ini", "thumbs.db", ".ds_store"]);
const EXTENSIONS = new Set([
  "exe", "dll", "msi", "com", "bat", "cmd", "sys", "ocx", "cab", "inf", "ini", "jar",
  "app", "dylib", "so", "js", "css", "htm", "html", "xml", "xsl", "chm", "hlp", "ico",
  "url", "lnk", "txt", "rtf", "pdf", "doc", "docx", "sh", "plist", "manifest", "cfg", "log",
]);
const FOLDERS = /(^|\/)(viewer|dicomviewer|[^/]*viewer[^/]*|program files|bin|lib|help|jre|jvm|autorun|__macosx)(\/|$)/i;

export function skipReason(name, relativePath) {
  const base = String(name || "").toLowerCase();
  if (base === "dicomdir") { return "the index of the CD (DICOMDIR)"; }
  if (NAMES.has(base) || base.startsWith("._")) { return "a system file"; }
  const dot = base.lastIndexOf(".");
  if (dot > 0 && EXTENSIONS.has(base.slice(dot + 1))) { return "not an image (a program or document)"; }
  const folder = relativePath ? String(relativePath).split("/").slice(0, -1).join("/") : "";
  if (folder && FOLDERS.test(folder)) { return "part of a viewer program"; }
  return null;
}
