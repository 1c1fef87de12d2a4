"""A real RTSP server for the tests: GStreamer's gst-rtsp-server (Debian: gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-good), run by the system Python that has PyGObject, not by the project's venv.

    /usr/bin/python3 rtsp_server.py CLIP.avi MOUNT [PORT]

serves CLIP (Motion JPEG in AVI, as many IP cameras send) at rtsp://127.0.0.1:PORT/MOUNT over RTP on
TCP only (interleaved in the RTSP connection): a client asking for UDP is refused with 461 Unsupported
transport. Each client gets the clip from its start, paced in real time. PORT 0 (the default) binds
any free port; the port bound is printed on the first line of stdout ("port N"), clients after it.
`rtsp_server.py --check` exits 0 when everything the server needs is installed."""

import sys

try:
    import gi
except ImportError:
    sys.exit("error: no PyGObject (Debian: apt-get install python3-gi)")

try:
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
except ValueError as exc:
    sys.exit(f"error: {exc} (Debian: apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> int:
    Gst.init(None)
    if sys.argv[1:] == ["--check"]:
        missing = [name for name in ("filesrc", "avidemux", "rtpjpegpay") if Gst.ElementFactory.find(name) is None]
        print(f"missing GStreamer elements: {', '.join(missing)}" if missing else "ok")
        return 1 if missing else 0
    clip, mount = sys.argv[1], sys.argv[2]
    port = sys.argv[3] if len(sys.argv) > 3 else "0"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! avidemux ! rtpjpegpay name=pay0 pt=26 )')
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    factory.set_shared(False)
    server.get_mount_points().add_factory("/" + mount.strip("/"), factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print(f"port {server.get_bound_port()}", flush=True)
    server.connect("client-connected", lambda _server, _client: print("client", flush=True))
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
