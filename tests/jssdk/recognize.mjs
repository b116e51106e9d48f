// An unmodified Speech SDK for JavaScript app, driven by tests/jssdk: one recognition, reported as JSON on stdout.
//
// Usage: node recognize.mjs '<scenario JSON>'. The scenario:
//   url       ws://host:port (fromHost) or the full recognition URL (fromEndpoint, with endpoint: true)
//   endpoint  use SpeechConfig.fromEndpoint(url, key) instead of fromHost(url[, key])
//   key       the subscription key (none: fromHost without one)
//   token     an authorization token instead of a key (fromAuthorizationToken's form: Authorization: Bearer)
//   language  speechRecognitionLanguage
//   detailed  OutputFormat.Detailed (and word-level timestamps)
//   properties  {PropertyId name: value} set on the SpeechConfig (setProperty)
//   wav       a 16-bit PCM WAV file, pushed through a PushAudioInputStream in 100 ms chunks
//   speed     push the chunks at this many times real time (none: all at once)
//   holdAt    push no audio past this many seconds until a phrase is recognized or a cancel comes (a speaker still
//             talking when the first result comes back, however long the service takes)
//   holdUntil "canceled": hold (holdAt) until a cancel comes, whatever is recognized before (a stream the service
//             must end mid-stream, however long it takes); "recognized" (the default): as holdAt says
//   keepOpen  leave the push stream open after the audio (a microphone that stays on)
//   mode      "once" (recognizeOnceAsync) or "continuous" (startContinuousRecognitionAsync until the session stops)
//   cuts      the audio cut at these seconds into parts, one recognition a part on the one recognizer and push
//             stream: once, push the part and recognizeOnceAsync (each result in "onces"); continuous, start, push the
//             part, wait for a new recognized phrase or a cancel (at most partTimeoutMs), stop
//   stopAfterRecognizing  continuous: stop (stopContinuousRecognitionAsync) after this many recognizing events
//   timeoutMs give up (and say so) after this long
//   lingerMs  keep the recognizer this long after its recognition ended before closing it (a page keeps its recognizer)
//             The report's "connected" lists when (ms) the SDK's connection reported each connection to the service
//             (Connection.fromRecognizer's connected event), lingering included.
//   browser   connect as the SDK does in a browser: where a global WebSocket exists, the SDK opens it with the URL alone
//             (a browser's WebSocket takes no headers), so the key, a token and the connection id travel only in the
//             URL's query. The global given here is the ws package's WebSocket (the one the SDK uses in Node), called
//             with the URL alone; Node's own (undici 6, Node 20-22) fires no close event after a refused upgrade, so
//             the SDK would wait forever where a browser reports the failure. The URLs it opened are reported.
//   unstarved the test that runs this app writes a line on its stdin at each moment: the milliseconds since it started
//             the app in which neither it (the server) nor the app waited for a CPU (tests/support.Unstarved). Then
//             timeoutMs and partTimeoutMs are that time (on a machine shared by many, a clock's bound failed apps that
//             were only slow), each event's "work" is that time at the event (beside "ms", the clock's since the
//             app's start), and the app reports what it saw and exits should its stdin end (the test is gone).
//             Without it, "work" is "ms" and the bounds are the clock's.
// On SIGTERM (the test's bound passed) the app reports what it saw so far, with "killed": "SIGTERM", and exits 143.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const sdk = require("microsoft-cognitiveservices-speech-sdk");

const scenario = JSON.parse(process.argv[2]);
if (![undefined, "recognized", "canceled"].includes(scenario.holdUntil)) {
  throw new Error(`holdUntil is "recognized" or "canceled", not ${JSON.stringify(scenario.holdUntil)}`);
}
const opened = [];
if (scenario.browser) {
  const { WebSocket: NodeWebSocket } = require("ws");
  globalThis.WebSocket = class extends NodeWebSocket {
    constructor(...args) {
      if (args.length !== 1) throw new Error(`a browser's WebSocket takes a URL (and protocols) only, got ${args.length} arguments`);
      super(args[0]);
      opened.push(args[0]);
    }
  };
}
const started = Date.now();
const out = {
  websocket: scenario.browser ? "browser" : "node", opened,
  recognizing: [], recognized: [], canceled: [], connected: [], sessionStarted: 0, sessionStopped: 0, once: null, onces: [], error: null,
  audioDoneMs: null, stoppingMs: null, stoppedMs: null, timedOut: false, killed: null, startedAt: started,
};
const now = () => Date.now() - started;
let unstarvedMs = 0;
/** Milliseconds of the app's bounds: the test's unstarved time (scenario.unstarved), else the clock's. */
const work = () => (scenario.unstarved ? unstarvedMs : now());
const stamp = () => ({ ms: now(), work: work() });

function report(code) {
  process.stdout.write(JSON.stringify(out));
  process.exit(code);
}

process.on("SIGTERM", () => { out.killed = "SIGTERM"; report(143); });
if (scenario.unstarved) {
  let buffered = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (data) => {
    const lines = (buffered + data).split("\n");
    buffered = lines.pop();
    if (lines.length) unstarvedMs = Number(lines[lines.length - 1]);
  });
  process.stdin.on("end", () => { out.error ??= "the test that ran the app is gone (its stdin ended)"; report(1); });
}

function result(r) {
  return {
    reason: sdk.ResultReason[r.reason], text: r.text, offset: r.offset, duration: r.duration,
    json: r.json ? JSON.parse(r.json) : null,
    noMatch: r.reason === sdk.ResultReason.NoMatch ? sdk.NoMatchReason[sdk.NoMatchDetails.fromResult(r).reason] : undefined,
    ...(r.reason === sdk.ResultReason.Canceled ? cancellation(sdk.CancellationDetails.fromResult(r)) : {}),
  };
}

function cancellation(d) {
  return { cancelReason: sdk.CancellationReason[d.reason], errorCode: sdk.CancellationErrorCode[d.errorCode ?? d.ErrorCode], errorDetails: d.errorDetails };
}

function config() {
  const url = new URL(scenario.url);
  let cfg;
  if (scenario.token) {
    cfg = scenario.endpoint ? sdk.SpeechConfig.fromEndpoint(url) : sdk.SpeechConfig.fromHost(url);
    cfg.authorizationToken = scenario.token;
  } else if (scenario.endpoint) {
    cfg = sdk.SpeechConfig.fromEndpoint(url, scenario.key ?? undefined);
  } else {
    cfg = scenario.key ? sdk.SpeechConfig.fromHost(url, scenario.key) : sdk.SpeechConfig.fromHost(url);
  }
  cfg.speechRecognitionLanguage = scenario.language ?? "ko-KR";
  if (scenario.detailed) {
    cfg.outputFormat = sdk.OutputFormat.Detailed;
    cfg.requestWordLevelTimestamps();
  }
  for (const [name, value] of Object.entries(scenario.properties ?? {})) {
    if (sdk.PropertyId[name] === undefined) throw new Error(`no PropertyId ${name}`);
    cfg.setProperty(sdk.PropertyId[name], value);
  }
  return cfg;
}

function wavPcm(path) {
  const data = fs.readFileSync(path);
  let at = 12;
  let rate = 16000;
  while (at + 8 <= data.length) {
    const id = data.toString("ascii", at, at + 4);
    const size = data.readUInt32LE(at + 4);
    if (id === "fmt ") rate = data.readUInt32LE(at + 12);
    if (id === "data") return { pcm: data.subarray(at + 8, at + 8 + size), rate };
    at += 8 + size + (size % 2);
  }
  throw new Error(`${path}: no data chunk`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function feed(push, pcm, rate, last = true) {
  const chunk = rate / 10 * 2; // 100 ms
  let t0 = Date.now();
  for (let i = 0, n = 0; i < pcm.length; i += chunk, n++) {
    const piece = pcm.subarray(i, i + chunk);
    if (scenario.holdAt !== undefined && i >= scenario.holdAt * rate * 2) {
      while (!(scenario.holdUntil !== "canceled" && out.recognized.length) && !out.canceled.length && !out.timedOut) await sleep(10);
      t0 = Math.max(t0, Date.now() - n * 100 / (scenario.speed ?? Infinity)); // paced on from here, no burst
    }
    push.write(piece.buffer.slice(piece.byteOffset, piece.byteOffset + piece.length));
    if (scenario.speed) await sleep(Math.max(0, t0 + (n + 1) * 100 / scenario.speed - Date.now()));
  }
  out.audioDoneMs = now();
  if (last && !scenario.keepOpen) push.close();
}

async function main() {
  const { pcm, rate } = wavPcm(scenario.wav);
  const push = sdk.AudioInputStream.createPushStream(sdk.AudioStreamFormat.getWaveFormatPCM(rate, 16, 1));
  const rec = new sdk.SpeechRecognizer(config(), sdk.AudioConfig.fromStreamInput(push));
  let stopped;
  const sessionStopped = new Promise((resolve) => { stopped = resolve; });
  sdk.Connection.fromRecognizer(rec).connected = () => { out.connected.push(now()); };
  rec.sessionStarted = () => { out.sessionStarted++; };
  rec.sessionStopped = () => { out.sessionStopped++; stopped(); };
  rec.recognizing = (_, e) => { out.recognizing.push({ ...stamp(), text: e.result.text, offset: e.result.offset }); };
  rec.recognized = (_, e) => { out.recognized.push({ ...stamp(), ...result(e.result) }); };
  rec.canceled = (_, e) => { out.canceled.push({ ...stamp(), ...cancellation(e) }); if (scenario.mode === "continuous") stopped(); };
  const timeout = (async () => {
    while (work() < (scenario.timeoutMs ?? 30000)) await sleep(20);
    out.timedOut = true;
  })();
  if (scenario.cuts) {
    const bounds = [0, ...scenario.cuts.map((s) => Math.round(s * rate) * 2), pcm.length];
    for (let k = 0; k + 1 < bounds.length; k++) {
      const part = pcm.subarray(bounds[k], bounds[k + 1]);
      const last = k + 2 === bounds.length;
      if (scenario.mode === "once") {
        await feed(push, part, rate, last);
        const r = await Promise.race([new Promise((resolve) => rec.recognizeOnceAsync(resolve, (e) => { out.error = String(e); resolve(null); })), timeout]);
        if (!r) break;
        out.onces.push({ ...stamp(), ...result(r) });
        continue;
      }
      const before = out.recognized.length;
      const canceledBefore = out.canceled.length;
      await new Promise((resolve, reject) => rec.startContinuousRecognitionAsync(resolve, reject));
      await feed(push, part, rate, last);
      const until = work() + (scenario.partTimeoutMs ?? 20000);
      while (out.recognized.length === before && out.canceled.length === canceledBefore && work() < until && !out.timedOut) await sleep(10);
      await new Promise((resolve, reject) => rec.stopContinuousRecognitionAsync(resolve, reject));
    }
    rec.close();
    report(0);
  }
  const feeding = feed(push, pcm, rate);
  if (scenario.mode === "once") {
    const once = new Promise((resolve) => rec.recognizeOnceAsync(resolve, (e) => { out.error = String(e); resolve(null); }));
    const r = await Promise.race([once, timeout]);
    if (r) out.once = { ...stamp(), ...result(r) };
  } else {
    await new Promise((resolve, reject) => rec.startContinuousRecognitionAsync(resolve, reject));
    if (scenario.stopAfterRecognizing) {
      while (out.recognizing.length < scenario.stopAfterRecognizing && !out.timedOut && !out.sessionStopped) await sleep(10);
    } else {
      await Promise.race([sessionStopped, timeout]);
    }
    out.stoppingMs = now();
    await new Promise((resolve, reject) => rec.stopContinuousRecognitionAsync(resolve, reject));
    out.stoppedMs = now();
  }
  if (!scenario.keepOpen) await feeding;
  if (scenario.lingerMs) await sleep(scenario.lingerMs);
  rec.close();
  report(0);
}

main().catch((e) => { out.error = String(e?.stack ?? e); report(1); });
