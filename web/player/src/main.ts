// The stillmotion player: an MCP App (io.modelcontextprotocol/ui) that shows a job from a
// generation tool or check_job. It gets the tool result from the host, follows a running job
// through check_job, and plays the finished MP4 read through the server (resources/read) or,
// over HTTP, from a signed file URL the resource's CSP declares.
import {
  App,
  applyDocumentTheme,
  applyHostFonts,
  applyHostStyleVariables,
  type McpUiHostContext,
} from "@modelcontextprotocol/ext-apps";

type Video = {
  uri: string;
  path: string;
  mime_type?: string;
  bytes: number;
  duration_s: number;
  width: number;
  height: number;
  fps: number;
  http_url?: string | null;
};
type Job = {
  job_id: string;
  tool: string;
  model: string;
  route: string;
  status: "queued" | "running" | "downloading" | "succeeded" | "failed" | "cancelled";
  progress: number | null;
  error?: { kind: string; message: string } | null;
  next_step: string;
  video?: Video | null;
};
type Block = { type: string; text?: string; data?: string; mimeType?: string };
type ToolResult = { content?: Block[]; structuredContent?: Record<string, unknown>; isError?: boolean };

/** Largest clip read inline through resources/read (base64 in one message); bigger clips need a file URL. */
const INLINE_MAX_BYTES = 32 * 1024 * 1024; // the server's default STILLMOTION_MAX_RESOURCE_BYTES
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUS_TEXT: Record<string, string> = {
  queued: "Queued: waiting for a free worker for",
  running: "Generating the clip on",
  downloading: "Fetching the finished clip from",
};

const el = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const video = el<HTMLVideoElement>("video");
const play = el<HTMLButtonElement>("play");
const seek = el<HTMLInputElement>("seek");
const time = el<HTMLOutputElement>("time");

const app = new App({ name: "stillmotion-player", version: "0.1.0" }, {}, { autoResize: true });
let shownJob: string | undefined;
let shownVideo: string | undefined;
let following: string | undefined;
let closed = false;

function clock(s: number): string {
  if (!Number.isFinite(s) || s < 0) s = 0;
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return `${m}:${rest.toFixed(1).padStart(4, "0")}`;
}

function setStatus(status: string, label: string): void {
  const badge = el("status");
  badge.dataset.status = status;
  badge.textContent = label;
}

function only(section: "running" | "done" | "failed" | null): void {
  for (const id of ["running", "done", "failed"]) el(id).hidden = id !== section;
}

function sheetFrom(result: ToolResult): string | undefined {
  const img = (result.content ?? []).find((b) => b.type === "image" && b.data);
  return img ? `data:${img.mimeType ?? "image/png"};base64,${img.data}` : undefined;
}

function textOf(result: ToolResult): string {
  return (result.content ?? []).filter((b) => b.type === "text").map((b) => b.text ?? "").join("\n");
}

function showFacts(job: Job): void {
  el("facts").hidden = false;
  el("fact-model").textContent = `${job.model} (${job.route})`;
  el("fact-job").textContent = job.job_id;
  const v = job.video;
  el("fact-size").textContent = v ? `${v.width}×${v.height}` : "—";
  el("fact-duration").textContent = v ? `${v.duration_s.toFixed(2)} s at ${v.fps} fps` : "—";
}

function showSheet(src: string | undefined): void {
  const sheet = el<HTMLImageElement>("sheet");
  if (src) sheet.src = src;
  sheet.hidden = !src;
}

function showError(message: string, next: string): void {
  only("failed");
  el("error").textContent = message;
  el("next-step").textContent = next;
}

function render(result: ToolResult): Job | undefined {
  const job = result.structuredContent as Job | undefined;
  if (result.isError || !job || typeof job.job_id !== "string") {
    setStatus("failed", "error");
    showSheet(undefined);
    showError(textOf(result) || "The tool call failed.", "");
    return undefined;
  }
  shownJob = job.job_id;
  el("title").textContent = `${job.tool.replace(/_/g, " ")}`;
  showFacts(job);
  if (job.status === "succeeded" && job.video) {
    setStatus("succeeded", "done");
    only("done");
    showSheet(undefined);
    void loadVideo(job.video, sheetFrom(result));
  } else if (job.status === "failed" || job.status === "cancelled") {
    setStatus(job.status, job.status);
    showSheet(undefined);
    const err = job.error;
    showError(err ? `${err.kind}: ${err.message}` : `The job was ${job.status}.`, job.next_step);
  } else {
    const pct = job.progress == null ? "" : ` ${Math.round(job.progress * 100)}%`;
    setStatus(job.status, job.status + pct);
    only("running");
    const bar = el<HTMLProgressElement>("progress");
    if (job.progress == null) bar.removeAttribute("value");
    else bar.value = job.progress;
    bar.setAttribute("aria-valuetext", job.progress == null ? job.status : `${job.status}, ${pct.trim()} done`);
    el("progress-text").textContent = pct.trim();
    el("running-text").textContent = `${STATUS_TEXT[job.status] ?? job.status} ${job.model}.`;
    showSheet(sheetFrom(result));
  }
  return job;
}

let urlVideo: Video | undefined; // playing from the signed file URL: fall back to resources/read on error

async function loadVideo(v: Video, sheet: string | undefined, inline = false): Promise<void> {
  if (shownVideo === v.uri && !inline) return;
  shownVideo = v.uri;
  const note = el("load-note");
  note.hidden = true;
  let src: string | undefined = inline ? undefined : (v.http_url ?? undefined);
  urlVideo = src ? v : undefined;
  try {
    if (!src && v.bytes <= INLINE_MAX_BYTES) {
      const res = await app.readServerResource({ uri: v.uri });
      const item = res.contents[0] as { blob?: string; mimeType?: string } | undefined;
      if (item?.blob) src = `data:${item.mimeType ?? v.mime_type ?? "video/mp4"};base64,${item.blob}`;
    }
  } catch (err) {
    note.textContent = `Could not read the clip through the server (${String(err)}). The file is at ${v.path}.`;
    note.hidden = false;
  }
  if (!src) {
    if (note.hidden) {
      note.textContent = `This clip (${(v.bytes / 1048576).toFixed(1)} MiB) is too large to play here; the file is at ${v.path}.`;
      note.hidden = false;
    }
    showSheet(sheet);
    return;
  }
  video.src = src;
  video.load();
}

async function follow(jobId: string): Promise<void> {
  // The host proxies check_job; each call waits up to 20 s server-side, so this is a long poll.
  if (following === jobId) return;
  following = jobId;
  try {
    while (!closed && shownJob === jobId && app.getHostCapabilities()?.serverTools) {
      let result: ToolResult;
      try {
        result = (await app.callServerTool({ name: "check_job", arguments: { job_id: jobId, wait_seconds: 20 } })) as ToolResult;
      } catch {
        await new Promise((r) => setTimeout(r, 3000));
        continue;
      }
      const job = render(result);
      if (!job || TERMINAL.has(job.status)) break;
    }
  } finally {
    if (following === jobId) following = undefined;
  }
}

function syncControls(): void {
  const d = Number.isFinite(video.duration) ? video.duration : 0;
  const t = video.currentTime;
  time.value = `${clock(t)} / ${clock(d)}`;
  seek.value = d > 0 ? String(Math.round((t / d) * 1000)) : "0";
  seek.setAttribute("aria-valuetext", `${clock(t)} of ${clock(d)}`);
  const playing = !video.paused && !video.ended;
  play.innerHTML = playing ? "&#10074;&#10074;" : "&#9654;";
  play.setAttribute("aria-label", playing ? "Pause" : "Play");
}

function toggle(): void {
  if (video.paused || video.ended) void video.play().catch(() => undefined);
  else video.pause();
}

function nudge(seconds: number): void {
  if (!Number.isFinite(video.duration)) return;
  video.currentTime = Math.min(video.duration, Math.max(0, video.currentTime + seconds));
}

video.addEventListener("loadedmetadata", () => {
  play.disabled = false;
  seek.disabled = false;
  syncControls();
});
for (const ev of ["timeupdate", "play", "pause", "ended", "seeked", "durationchange"]) video.addEventListener(ev, syncControls);
video.addEventListener("error", () => {
  if (urlVideo) {
    const v = urlVideo;
    urlVideo = undefined;
    void loadVideo(v, undefined, true);
    return;
  }
  const note = el("load-note");
  note.textContent = `This browser could not play the clip (${video.error?.message || "unsupported format"}).`;
  note.hidden = false;
});
video.addEventListener("click", toggle);
play.addEventListener("click", toggle);
seek.addEventListener("input", () => {
  if (Number.isFinite(video.duration)) video.currentTime = (Number(seek.value) / 1000) * video.duration;
});
video.addEventListener("keydown", (e) => {
  const keys: Record<string, () => void> = {
    " ": toggle,
    k: toggle,
    ArrowLeft: () => nudge(-0.5),
    ArrowRight: () => nudge(0.5),
    Home: () => { video.currentTime = 0; },
    End: () => { if (Number.isFinite(video.duration)) video.currentTime = video.duration; },
  };
  const action = keys[e.key];
  if (action) {
    e.preventDefault();
    action();
  }
});

function applyContext(ctx: McpUiHostContext | undefined): void {
  if (!ctx) return;
  if (ctx.theme) applyDocumentTheme(ctx.theme);
  if (ctx.styles?.variables) applyHostStyleVariables(ctx.styles.variables);
  if (ctx.styles?.css?.fonts) applyHostFonts(ctx.styles.css.fonts);
}

app.ontoolinput = () => {
  if (!shownJob) setStatus("queued", "starting");
};
app.ontoolresult = (params) => {
  const job = render(params as ToolResult);
  if (job && !TERMINAL.has(job.status)) void follow(job.job_id);
};
app.ontoolcancelled = (params) => {
  if (!shownJob) {
    setStatus("cancelled", "cancelled");
    showError(`The tool call was cancelled${params.reason ? `: ${params.reason}` : ""}.`, "");
  }
};
app.onhostcontextchanged = (ctx) => applyContext(ctx as McpUiHostContext);
app.onteardown = async () => {
  closed = true;
  video.pause();
  return {};
};

app.connect().then(
  () => applyContext(app.getHostContext()),
  (err: unknown) => setStatus("failed", `not connected to a host (${String(err)})`),
);
