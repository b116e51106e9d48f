// AudioWorklet: the microphone's samples as 16-bit little-endian mono PCM, posted in chunks of
// `processorOptions.chunk` samples (100 ms). Channels are averaged; a float becomes 16-bit as Chromium made
// the float of a 16-bit device (x * 32768 below 0, x * 32767 above), so a 16-bit microphone's samples reach
// the server unchanged. "flush" posts what is left, then "flushed".
class Pcm16Processor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.chunk;
    this.buffer = new Int16Array(this.size);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        if (this.filled) this.port.postMessage(this.buffer.slice(0, this.filled).buffer);
        this.filled = 0;
        this.port.postMessage("flushed");
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      const x = sum / channels.length;
      const sample = Math.round(x < 0 ? x * 32768 : x * 32767);
      this.buffer[this.filled++] = Math.max(-32768, Math.min(32767, sample));
      if (this.filled === this.size) {
        this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
        this.buffer = new Int16Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16", Pcm16Processor);
