#!/usr/bin/env python3
"""Re-measures issue 8's table of real stream shapes: GStreamer RTSP server streams (B-frames
through qtdemux, open GOP, AAC, G.711, shared media re-based by a second client) and camsim
--fast, recorded together by `understudy run` for SECS seconds (default 75), each channel
analysed with ffprobe and `ffmpeg -xerror`. Needs a release build and the test packages.
Usage: python3 benches/real_streams.py   (SECS=75 BIN=target/release/understudy)"""
import json, os, subprocess, sys, tempfile, time, re
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target/release/understudy"))
SECS = int(os.environ.get("SECS", "75"))
FIX = os.path.join(ROOT, "fixtures")
GST = os.path.join(ROOT, "recorder/tests/gst_rtsp_server.py")
d = tempfile.mkdtemp(prefix="table-")
procs = []

def gst(*args):
    p = subprocess.Popen(["/usr/bin/python3", GST, "0", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    return int(p.stdout.readline().split()[1])

def concat(clip, n):
    lst = os.path.join(d, clip + ".txt")
    open(lst, "w").write(f"file '{FIX}/{clip}'\n" * n)
    out = os.path.join(d, "long-" + clip)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", lst, "-c", "copy", out], check=True)
    return out

n = SECS // 4 + 2
rows = [
    ("H.264 with B-frames (x264 bframes=2, qtdemux)", gst("--codec", "h264", "--file", concat("h264-bframes-360p25.mp4", n))),
    ("H.265 with B-frames, open GOP (qtdemux)", gst("--codec", "h265", "--file", concat("h265-bframes-360p25.mp4", n))),
    ("H.264 + AAC audio", gst("--codec", "h264", "--size", "640x360", "--audio", "aac")),
    ("H.264 + G.711 µ-law audio", gst("--codec", "h264", "--size", "640x360", "--audio", "pcmu")),
    ("H.264, shared media re-based by a second client", gst("--codec", "h264", "--size", "640x360", "--shared")),
]
cam = subprocess.Popen([BIN, "camsim", "--listen", "127.0.0.1:0", "--cameras", "1", "--fast", "--clip", f"{FIX}/h264-360p25-small.mp4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
procs.append(cam)
camurl = None
for _ in range(50):
    line = cam.stdout.readline()
    m = re.search(r"addr=(127\.0\.0\.1:\d+)", line)
    if m:
        camurl = f"rtsp://{m.group(1)}/cam/1"
        break
urls = [f"rtsp://127.0.0.1:{p}/cam" for _, p in rows] + [camurl]
rows.append(("camsim --fast (RTP clock far faster than wall time)", None))
os.makedirs(f"{d}/disk", exist_ok=True)
cfg = f"{d}/u.toml"
cams = "".join(f'[[camera]]\nchannel = {i+1}\nurl = "{u}"\n\n' for i, u in enumerate(urls))
open(cfg, "w").write(f'[server]\nname = "t"\nchannels = {len(urls)}\nstate_dir = "{d}/state"\nlisten = "127.0.0.1:0"\nsegment_duration = "10s"\n\n[[volume]]\npath = "{d}/disk"\n\n{cams}')
log = open(f"{d}/run.log", "w")
run = subprocess.Popen([BIN, "run", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
started = time.time()
time.sleep(SECS / 3)
shared = rows[4][1]
subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-rtsp_transport", "tcp", "-i", f"rtsp://127.0.0.1:{shared}/cam", "-t", "4", "-f", "null", "-"])
time.sleep(max(0, SECS - (time.time() - started)))
run.terminate(); run.wait(60)
stopped = time.time()
for p in procs:
    p.kill()

def probe(f, entries):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", f], capture_output=True, text=True).stdout
    return json.loads(out)

print(f"| stream ({SECS} s) | segments | video frames | dts strictly increasing | pts < dts | 1-tick steps | sample durations (ms) | audio − video per segment (s) | ends after stop (s) | `ffmpeg -xerror` |")
print("|---|---|---|---|---|---|---|---|---|---|")
for i, (name, _) in enumerate(rows):
    ch = f"{d}/disk/ch{i+1:03d}"
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(ch) for f in fs if f.endswith(".mp4"))
    frames = nonmono = ptsbad = onetick = 0
    durs = []
    adiff = []
    errs = 0
    latest = 0.0
    for f in files:
        j = probe(f, "stream=index,codec_type,start_time,duration:packet=stream_index,pts,dts,duration_time,pts_time")
        vid = [s["index"] for s in j["streams"] if s["codec_type"] == "video"][0]
        aud = [s["index"] for s in j["streams"] if s["codec_type"] == "audio"]
        pk = [p for p in j["packets"] if p["stream_index"] == vid]
        frames += len(pk)
        dts = [int(p["dts"]) for p in pk]
        for a, b in zip(dts, dts[1:]):
            if b <= a: nonmono += 1
            if b - a == 1: onetick += 1
            durs.append((b - a) / 90.0)
        ptsbad += sum(1 for p in pk if int(p["pts"]) < int(p["dts"]))
        if aud:
            ap = [p for p in j["packets"] if p["stream_index"] == aud[0]]
            if ap and len(pk) > 25:
                at = sorted(float(p["pts_time"]) for p in ap)
                step = at[-1] - at[-2] if len(at) > 1 else 0
                a_span = at[-1] + step - at[0]
                v_pts = sorted(float(p["pts_time"]) for p in pk)
                v_span = v_pts[-1] + 0.04 - v_pts[0]
                adiff.append(a_span - v_span)
        e = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", f, "-f", "null", "-"], capture_output=True, text=True).stderr
        errs += len([l for l in e.splitlines() if l.strip()])
    # Wall-clock end of the latest segment, from the file name (start) + its span.
    for f in files[-1:]:
        base = os.path.basename(f)[:-4]
        t0 = time.mktime(time.strptime(base[:15], "%Y%m%dT%H%M%S")) - time.timezone + float("0." + base[16:19])
        j = probe(f, "packet=stream_index,pts_time,duration_time")
        ends = [float(p["pts_time"]) + float(p.get("duration_time", 0) or 0) for p in j["packets"] if p["stream_index"] == 0]
        latest = t0 + max(ends)
    dur_txt = f"{min(durs):.2f} – {max(durs):.2f}" if durs else "–"
    ad = f"{min(adiff):+.3f} … {max(adiff):+.3f}" if adiff else "no audio"
    print(f"| {name} | {len(files)} | {frames} | {'yes' if nonmono == 0 else f'no ({nonmono})'} | {ptsbad} | {onetick} | {dur_txt} | {ad} | {latest - stopped:+.2f} | {errs} lines |")
print(f"\n(data in {d}; re-anchor events: {open(f'{d}/run.log').read().count('re-anchoring')} log lines)")
