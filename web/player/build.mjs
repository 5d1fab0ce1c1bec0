// Builds the player into ONE self-contained HTML file (script and style inline, no CDN) and the
// browser test's host script. `node build.mjs --check` fails when the committed files are stale.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const PLAYER_OUT = join(root, "src", "stillmotion", "apps", "player.html");
const HOST_OUT = join(root, "tests", "browser", "host.js");
// Files whose content decides the output; tests/test_player_app.py hashes the same list.
export const SOURCES = ["package.json", "package-lock.json", "build.mjs", "src/index.html", "src/style.css", "src/main.ts", "src/test-host.ts"];

function sourceHash() {
  const h = createHash("sha256");
  for (const name of SOURCES) {
    h.update(name + "\n");
    h.update(readFileSync(join(here, name), "utf8").replace(/\r\n/g, "\n"));
  }
  return h.digest("hex");
}

// zod re-exports every locale (about 250 kB); the player and host only ever need English messages.
const englishOnly = {
  name: "zod-english-only",
  setup(b) {
    b.onResolve({ filter: /locales\/index\.js$/ }, (args) =>
      args.resolveDir.includes(join("node_modules", "zod"))
        ? { path: join(args.resolveDir, dirname(args.path), "en.js"), namespace: "zod-en" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "zod-en" }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(args.path)};`,
      resolveDir: dirname(args.path),
    }));
  },
};

async function bundle(entry) {
  const out = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2020",
    write: false,
    legalComments: "none",
    logLevel: "warning",
    plugins: [englishOnly],
  });
  return out.outputFiles[0].text;
}

async function main() {
  const js = (await bundle("src/main.ts")).replace(/<\/script/gi, "<\\/script").replace(/<!--/g, "<\\!--");
  const css = readFileSync(join(here, "src", "style.css"), "utf8");
  const template = readFileSync(join(here, "src", "index.html"), "utf8");
  const html =
    `<!-- stillmotion player (MCP App). Built by web/player/build.mjs; do not edit. source-sha256: ${sourceHash()} -->\n` +
    template.replace("/*STYLE*/", () => css.trim()).replace("/*SCRIPT*/", () => js.trim());
  const host = `// Built by web/player/build.mjs from src/test-host.ts; do not edit. source-sha256: ${sourceHash()}\n` +
    (await bundle("src/test-host.ts"));
  const check = process.argv.includes("--check");
  for (const [path, text] of [[PLAYER_OUT, html], [HOST_OUT, host]]) {
    if (check) {
      let old = "";
      try { old = readFileSync(path, "utf8"); } catch {}
      if (old !== text) {
        console.error(`${path} is stale: run npm run build in web/player`);
        process.exitCode = 1;
      }
    } else {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
      console.log(`${path}: ${text.length} bytes`);
    }
  }
}

await main();
