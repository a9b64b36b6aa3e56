#!/usr/bin/python3
"""A third-party RTSP server for understudy-recorder's tests: GStreamer's RTSP server serving a
live test pattern encoded with x264/x265 at /cam.

usage: gst_rtsp_server.py PORT [--codec h264|h265|mjpeg] [--size WxH] [--fps N] [--auth USER:PASS] [--digest]
                          [--audio none|aac|pcmu|pcma|g726] [--file MP4] [--shared]
                          [--drop-audio N] [--bframes N] [--open-gop]

--auth requires Basic authentication; with --digest, Digest (RFC 2617) only.

--audio adds a second stream (a live 440 Hz tone): AAC (mpeg4-generic, 16 kHz), G.711 µ-law or
A-law (8 kHz) or G.726 (to test a codec Understudy skips).
--codec mjpeg sends Motion JPEG (RTP/JPEG, RFC 2435), a codec Understudy does not record.
--file serves the H.264/H.265 video of an MP4 instead of the test pattern, demuxed with qtdemux
(which keeps each frame's PTS and DTS, so B-frames go out with their presentation times), once
per client, paced at its frame rate; --codec names its codec.
--shared serves one media to every client (GStreamer re-bases RTP time when a client joins).
--drop-audio N drops every Nth audio RTP packet (to test loss counting).
--bframes N lets the live x264/x265 encoder use up to N B-frames (default 0); --open-gop makes
x265's GOPs open (CRA key frames).

PORT 0 picks a free port. Prints "ready PORT" on stdout once listening.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


AUDIO = {
    "aac": "audio/x-raw,rate=16000,channels=1 ! avenc_aac ! aacparse ! rtpmp4gpay name=pay1 pt=97",
    "pcmu": "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1",
    "pcma": "audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1",
    "g726": "audio/x-raw,rate=8000,channels=1 ! avenc_g726 bitrate=32000 ! rtpg726pay name=pay1 pt=98",
}


def launch_line(codec, width, height, fps, audio="none", file=None, bframes=0, open_gop=False):
    src = (
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={width},height={height},framerate={fps}/1"
    )
    if file is not None:
        parse = "h264parse" if codec == "h264" else "h265parse"
        pay = "rtph264pay" if codec == "h264" else "rtph265pay"
        enc = f"filesrc location={file} ! qtdemux ! {parse} ! {pay} name=pay0 pt=96 config-interval=-1"
        return f"( {enc} )"
    if codec == "mjpeg":
        # RTP/JPEG carries 4:2:0 or 4:2:2 only.
        enc = "videoconvert ! video/x-raw,format=I420 ! jpegenc quality=50 ! rtpjpegpay name=pay0 pt=26"
    elif codec == "h264":
        enc = (
            # tune=zerolatency would disable B-frames.
            f"x264enc {'' if bframes else 'tune=zerolatency '}speed-preset=ultrafast "
            f"key-int-max=25 bframes={bframes} ! "
            "rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        enc = (
            # Closed GOPs: IDR key frames (retina does not treat CRA pictures as key frames).
            f"x265enc {'' if bframes else 'tune=zerolatency '}speed-preset=ultrafast "
            f"key-int-max=25 option-string=open-gop={int(open_gop)}:bframes={bframes} ! "
            "video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    if audio != "none":
        enc += f" audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! {AUDIO[audio]}"
    return f"( {src} ! {enc} )"


def drop_every(_factory, media, n):
    """Drops every nth RTP packet the audio payloader sends."""
    pay = media.get_element().get_by_name("pay1")
    if pay is None:
        return
    seen = [0]

    def probe(_pad, _info):
        seen[0] += 1
        return Gst.PadProbeReturn.DROP if seen[0] % n == 0 else Gst.PadProbeReturn.OK

    pay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--codec", choices=["h264", "h265", "mjpeg"], default="h264")
    p.add_argument("--size", default="320x240")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--auth")
    p.add_argument("--digest", action="store_true")
    p.add_argument("--audio", choices=["none", *AUDIO], default="none")
    p.add_argument("--file")
    p.add_argument("--shared", action="store_true")
    p.add_argument("--drop-audio", type=int, default=0)
    p.add_argument("--bframes", type=int, default=0)
    p.add_argument("--open-gop", action="store_true")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.codec, width, height, args.fps, args.audio, args.file,
                                  args.bframes, args.open_gop))
    factory.set_shared(args.shared)
    if args.drop_audio > 0:
        factory.connect("media-configure", drop_every, args.drop_audio)

    if args.auth:
        user, password = args.auth.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, user)
        if args.digest:
            auth.add_digest(user, password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        role, _ = Gst.Structure.from_string(
            f"{user}, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true"
        )
        factory.add_role_from_structure(role)

    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
