// Builds the upload page's bundle into donation_portal/web/static/build/ (not committed;
// `make assets` runs this after `npm ci`). Deterministic: same lock, same sources, same bytes.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = fileURLToPath(new URL("../donation_portal/web/static/build/", import.meta.url));
rmSync(out, { recursive: true, force: true });

await build({
  absWorkingDir: here,
  entryPoints: { upload: "src/upload.js" },
  outdir: out,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2022"], // what Uppy 6 itself supports: browsers of the last few years
  legalComments: "linked", // the licences of the bundled packages, in upload.js.LEGAL.txt
  logLevel: "info",
});

// The pages' CSP allows images from the portal only (img-src falls back to 'self'): Uppy's
// CSS carries its icons as data: URLs, so they become files beside it, named by content.
const css = `${out}upload.css`;
const DATA_SVG = /url\("data:image\/svg\+xml;charset=utf-8,([^"]*)"\)/g;
mkdirSync(`${out}img`, { recursive: true });
const rewritten = readFileSync(css, "utf8").replace(DATA_SVG, (_, encoded) => {
  const svg = decodeURIComponent(encoded);
  const name = `${createHash("sha256").update(svg).digest("hex").slice(0, 16)}.svg`;
  writeFileSync(`${out}img/${name}`, svg);
  return `url("img/${name}")`;
});
if (/url\(["']?data:/.test(rewritten)) {
  throw new Error("upload.css still holds a data: URL, which the CSP blocks");
}
writeFileSync(css, rewritten);
