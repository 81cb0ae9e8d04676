"""A tiny RTSP server for edged's source tests: serves one H.264 MP4, looping.

Run with Debian's SYSTEM interpreter, not a virtualenv, because GStreamer's RTSP
server comes through GObject introspection packages:

    apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 \
        gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
    /usr/bin/python3 tests/rtsp_server.py --file clip.mp4 --port 8554 --path /cam

It binds 127.0.0.1 only, prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout
once it listens, and serves until killed. Every client gets its own pipeline
(not shared), so a reconnecting client starts cleanly. Looping: when the demuxer
reaches the end of the file, the EOS is dropped and a flushing seek to 0 is
issued on the demuxer. (A non-flushing seek after EOS leaves qtdemux idle on
GStreamer 1.22; a SEGMENT seek loops in a storm.) The client sees the stream
restart at the key frame at 0; OpenCV's FFmpeg backend reads on across it.
Pass ``--port 0`` to let the kernel choose a free port (the READY line says which).
Exit codes: 0 on SIGTERM/SIGINT, 2 when the GStreamer packages are missing or the
port cannot be bound.
"""

import argparse
import os
import signal
import sys

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as e:
    sys.stderr.write(
        "rtsp_server.py needs python3-gi and gir1.2-gst-rtsp-server-1.0 for THIS interpreter "
        f"({sys.executable}): {e}\n"
    )
    sys.exit(2)

REQUIRED_ELEMENTS = ("filesrc", "qtdemux", "rtph264pay")


class LoopingFileFactory(GstRtspServer.RTSPMediaFactory):
    """Builds ``filesrc ! qtdemux ! rtph264pay`` per client and loops it at EOS."""

    def __init__(self, path: str, loop: bool) -> None:
        GstRtspServer.RTSPMediaFactory.__init__(self)
        self._path = path
        self._loop = loop
        self.set_shared(False)

    def do_create_element(self, url):  # noqa: ANN001 - GI virtual method
        element = Gst.parse_launch(
            "( filesrc name=src ! qtdemux name=demux "
            "demux.video_0 ! queue ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        # A property, not the launch string: no quoting rules for odd paths.
        element.get_by_name("src").set_property("location", self._path)
        if self._loop:
            demux = element.get_by_name("demux")
            demux.connect("pad-added", self._on_pad_added)
        return element

    def _on_pad_added(self, demux, pad) -> None:  # noqa: ANN001
        pad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self._on_event, demux)

    @staticmethod
    def _on_event(pad, info, demux):  # noqa: ANN001
        event = info.get_event()
        if event is None or event.type != Gst.EventType.EOS:
            return Gst.PadProbeReturn.OK
        # Seek from the main loop, not from the streaming thread that carries the EOS.
        GLib.idle_add(_rewind, demux)
        return Gst.PadProbeReturn.DROP


def _rewind(demux) -> bool:  # noqa: ANN001
    demux.seek(
        1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1
    )
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="H.264 MP4 to serve")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = any free port")
    parser.add_argument("--path", default="/cam", help="mount path, e.g. /cam")
    parser.add_argument("--no-loop", action="store_true", help="play the file once per client")
    args = parser.parse_args()

    Gst.init(None)
    missing = [name for name in REQUIRED_ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        sys.stderr.write(
            "rtsp_server.py: GStreamer elements missing: {} "
            "(install gstreamer1.0-plugins-good)\n".format(", ".join(missing))
        )
        return 2
    if not os.path.isfile(args.file):
        sys.stderr.write(f"rtsp_server.py: no such file: {args.file}\n")
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(
        args.path, LoopingFileFactory(os.path.abspath(args.file), not args.no_loop)
    )
    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server.py: cannot listen on 127.0.0.1:{args.port}\n")
        return 2

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
