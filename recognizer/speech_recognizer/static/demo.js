// The live demo: the microphone through an AudioWorklet (16-bit PCM) to the /vosk WebSocket;
// partial text as it comes, a final line per utterance. Everything is served by the recognizer.
"use strict";

const $ = (id) => document.getElementById(id);
const page = document.body.dataset;
let running = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function showPartial(text) {
  $("partial").textContent = text;
}

function addFinal(text) {
  showPartial("");
  if (!text) return;
  const line = document.createElement("p");
  line.className = "final";
  line.textContent = text;
  $("finals").appendChild(line);
}

function socketUrl(locale, key) {
  const query = new URLSearchParams({ language: locale });
  // A browser cannot set headers on a WebSocket: the key goes in the query, where this server
  // accepts it on WebSocket upgrades (and never writes it to a log).
  if (key) query.set("Ocp-Apim-Subscription-Key", key);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${page.vosk}?${query}`;
}

async function start() {
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    status("The microphone needs a secure page: open this page over https, or as http://localhost " +
           "(kubectl port-forward gives you one).", true);
    return;
  }
  // Each language says whether its server needs a key (behind a gateway, some may and others not).
  const picked = $("locale").selectedOptions[0];
  const needsKey = picked ? picked.dataset.keyRequired === "true" : page.keyRequired === "true";
  const key = $("key") ? $("key").value.trim() : "";
  if (needsKey && !key) {
    status("This server needs its key: enter it above.", true);
    $("key").focus();
    return;
  }
  $("record").disabled = true;
  status("Asking for the microphone…");
  let media;
  try {
    // Raw audio: echo cancellation, noise suppression and gain control change what the recognizer hears.
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    status(`No microphone: ${error.message}`, true);
    $("record").disabled = false;
    return;
  }
  // At the microphone's own rate: the browser resamples nothing, and the server resamples as it does
  // for any client. A browser that does not say the rate runs at its output's.
  const rate = media.getAudioTracks()[0].getSettings().sampleRate;
  let context;
  try {
    context = rate ? new AudioContext({ sampleRate: rate }) : new AudioContext();
  } catch (error) {
    context = new AudioContext();
  }
  await context.audioWorklet.addModule(page.worklet);
  const source = context.createMediaStreamSource(media);
  const capture = new AudioWorkletNode(context, "pcm16", {
    numberOfOutputs: 1,
    processorOptions: { chunk: Math.round(context.sampleRate / 10) },
  });
  const mute = context.createGain();
  mute.gain.value = 0;
  capture.connect(mute).connect(context.destination); // keeps the worklet pulled; nothing is played

  const socket = new WebSocket(socketUrl($("locale").value, key));
  socket.binaryType = "arraybuffer";
  running = { media, context, source, capture, socket, stopping: false };
  // Audio from the first moment on: chunks wait here until the socket is open.
  const waiting = [];
  capture.port.onmessage = (event) => {
    if (socket.readyState !== WebSocket.OPEN) {
      if (event.data !== "flushed") waiting.push(event.data);
    } else if (event.data === "flushed") {
      socket.send('{"eof" : 1}');
    } else {
      socket.send(event.data);
    }
  };
  source.connect(capture);

  socket.onopen = () => {
    // written: the text as the server writes it for people (the model's [9] as 9), not as Vosk said it.
    socket.send(JSON.stringify({ config: { sample_rate: context.sampleRate, words: 0, written: 1 } }));
    waiting.splice(0).forEach((chunk) => socket.send(chunk));
    $("record").textContent = "Stop";
    $("record").disabled = false;
    $("record").classList.add("recording");
    status(`Listening (${$("locale").value}): speak.`);
  };
  socket.onmessage = (event) => {
    const reply = JSON.parse(event.data);
    if ("partial" in reply) showPartial(reply.partial);
    else if ("text" in reply) addFinal(reply.text);
  };
  socket.onclose = (event) => {
    const wasStopping = running && running.stopping;
    release();
    if (event.code === 1000 && wasStopping) status("Done. Press Record to go on.");
    else status(`The server closed the connection (${event.code})${event.reason ? ": " + event.reason : ""}`, true);
  };
}

function release() {
  if (!running) return;
  const { media, context } = running;
  media.getTracks().forEach((track) => track.stop());
  context.close();
  running = null;
  $("record").textContent = "Record";
  $("record").disabled = false;
  $("record").classList.remove("recording");
}

function stop() {
  if (!running || running.stopping) return;
  running.stopping = true;
  $("record").disabled = true;
  status("Finishing the last utterance…");
  running.source.disconnect();
  running.capture.port.postMessage("flush"); // then "flushed", then {"eof" : 1}: the final result and the close follow
}

$("record").addEventListener("click", () => (running ? stop() : start()));
