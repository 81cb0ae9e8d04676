"""Source strings -> SourceSpec, validation errors, and password redaction."""

import pytest

from edged.errors import ConfigError
from edged.sources import parse_source, redact
from edged.sources.uri import CSI, FILE, GSTREAMER, IMAGES, NETWORK, V4L2

GST = "videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink"


@pytest.mark.parametrize(
    "source, kind, location",
    [
        ("/videos/demo.mp4", FILE, "/videos/demo.mp4"),
        ("relative/clip.avi", FILE, "relative/clip.avi"),
        ("file:///videos/my%20clip.mp4", FILE, "/videos/my clip.mp4"),
        ("file://localhost/videos/a.mp4", FILE, "/videos/a.mp4"),
        ("/images/", IMAGES, "/images/"),
        ("/dev/video0", V4L2, "/dev/video0"),
        (
            "/dev/v4l/by-id/usb-Logitech_C920-video-index0",
            V4L2,
            "/dev/v4l/by-id/usb-Logitech_C920-video-index0",
        ),
        ("v4l2:///dev/video2", V4L2, "/dev/video2"),
        ("v4l2://1", V4L2, "/dev/video1"),
        ("0", V4L2, "/dev/video0"),
        ("rtsp://cam.local:554/stream1", NETWORK, "rtsp://cam.local:554/stream1"),
        ("rtsp://admin:pw@10.0.0.5/h264", NETWORK, "rtsp://admin:pw@10.0.0.5/h264"),
        ("RTSPS://cam/x", NETWORK, "RTSPS://cam/x"),
        ("http://cam/mjpg/video.mjpg", NETWORK, "http://cam/mjpg/video.mjpg"),
        ("https://cam/live.m3u8", NETWORK, "https://cam/live.m3u8"),
        ("rtmp://server/live/key", NETWORK, "rtmp://server/live/key"),
        ("rtp://239.0.0.1:5004", NETWORK, "rtp://239.0.0.1:5004"),
        ("csi://0", CSI, "csi://0"),
        ("csi://3", CSI, "csi://3"),
        ("gst:" + GST, GSTREAMER, GST),
        ("gstreamer: " + GST, GSTREAMER, GST),
    ],
)
def test_source_strings_map_to_a_kind_and_what_is_opened(source, kind, location):
    spec = parse_source(source)
    assert spec.kind == kind
    assert spec.location == location


def test_an_existing_directory_is_an_image_source(tmp_path):
    assert parse_source(str(tmp_path)).kind == IMAGES
    assert parse_source("file://" + str(tmp_path)).kind == IMAGES


def test_csi_defaults_to_1080p30_and_keeps_given_options():
    spec = parse_source("csi://1")
    assert (spec.sensor_id, spec.width, spec.height, spec.fps) == (1, 1920, 1080, 30.0)
    spec = parse_source("csi://0", width=1280, height=720, fps=60, flip_method=2)
    assert (spec.width, spec.height, spec.fps, spec.flip_method) == (1280, 720, 60, 2)


def test_options_are_carried_into_the_spec():
    spec = parse_source(
        "rtsp://cam/x", transport="udp", open_timeout_s=3, read_timeout_s=4.5, loop=False
    )
    assert (spec.transport, spec.open_timeout_s, spec.read_timeout_s, spec.loop) == (
        "udp",
        3.0,
        4.5,
        False,
    )
    assert parse_source("/dev/video0", fourcc="mjpg").fourcc == "MJPG"


def test_live_sources_are_told_apart_from_files():
    assert parse_source("rtsp://cam/x").is_live
    assert parse_source("csi://0").is_live
    assert not parse_source("/videos/a.mp4").is_live


@pytest.mark.parametrize(
    "source, options, message",
    [
        ("", {}, "expected a non-empty source string"),
        ("   ", {}, "expected a non-empty source string"),
        ("ftp://host/file", {}, "unsupported source scheme 'ftp'"),
        ("csi://x", {}, "csi://N with sensor id"),
        ("csi://99", {}, "csi://N with sensor id"),
        ("gst:", {}, "needs a GStreamer pipeline"),
        ("gst:videotestsrc ! autovideosink", {}, "must end in an appsink"),
        ("rtsp://", {}, "URL has no host"),
        ("rtsp://cam:99999/x", {}, "port out of range"),
        ("rtsp://cam:abc/x", {}, "port is not a number"),
        ("v4l2://camera", {}, "v4l2:///dev/video0"),
        ("file://otherhost/a.mp4", {}, "file:///absolute/path"),
        ("/dev/video0", {"width": 640}, "give both width and height"),
        ("/dev/video0", {"width": 0, "height": 480}, "width must be an integer"),
        ("/dev/video0", {"width": 640.5, "height": 480}, "width must be an integer"),
        ("/dev/video0", {"fps": 0}, "fps must be in"),
        ("/dev/video0", {"fps": "30"}, "fps must be a number"),
        ("/dev/video0", {"fourcc": "MJPEG"}, "fourcc must be 4 characters"),
        ("rtsp://cam/x", {"transport": "http"}, "transport must be one of tcp, udp"),
        ("rtsp://cam/x", {"read_timeout_s": 0}, "read_timeout_s must be in"),
        ("csi://0", {"flip_method": 9}, "flip_method must be 0..7"),
        # URL typos would otherwise be taken for file names and fail only when opened
        ("rtsp//admin:pw@cam/x", {}, "is not a valid URL: write rtsp://"),
        ("rtsp:/cam/x", {}, "is not a valid URL: write rtsp://"),
        ("HTTP:cam/x", {}, "is not a valid URL: write http://"),
        ("csi:0", {}, "write csi:// (e.g. csi://0)"),
        ("admin:pw@cam:554/stream1", {}, "looks like a URL without its scheme"),
        ("rtsp://cam/x\ny", {}, "control character (code 10) at position 13"),
        ("/videos/a\x00.mp4", {}, "control character (code 0)"),
    ],
)
def test_malformed_sources_are_one_line_config_errors_naming_the_key(source, options, message):
    with pytest.raises(ConfigError) as raised:
        parse_source(source, key="streams.front.source", **options)
    text = str(raised.value)
    assert text.startswith("streams.front.source: ")
    assert message.lower() in text.lower()
    assert "\n" not in text


def test_errors_never_echo_a_password():
    with pytest.raises(ConfigError) as raised:
        parse_source("rtsp://admin:hunter2@cam:99999/x")
    assert "hunter2" not in str(raised.value)
    assert "admin:***@" in str(raised.value)
    for typo in ("ftp://admin:hunter2@cam/x", "rtsp//admin:hunter2@cam/x",
                 "rtsp:/admin:hunter2@cam", "admin:hunter2@cam:554/x"):  # fmt: skip
        with pytest.raises(ConfigError) as raised:
            parse_source(typo)
        assert "hunter2" not in str(raised.value), typo


@pytest.mark.parametrize(
    "source",
    [
        "rtsp://cam:Pa55/w0rd@host/x",  # urlsplit: host "cam", port "Pa55"
        "rtsp://cam:Pa55#w0rd@host/x",
        "rtsp://cam:Pa55?w0rd@host/x",
        "rtsp://cam:Pa55 w0rd@host/x",
        "rtsp://cam:Pa55\uff0fw0rd@host/x",  # fullwidth "/": NFKC check quotes the netloc
        "rtsp://cam:Pa55[w0rd@host/x",  # "Invalid IPv6 URL"
        "rtsp://cam:Pa55",
    ],
)
def test_a_url_parser_message_is_never_repeated(source):
    with pytest.raises(ConfigError) as raised:
        parse_source(source, key="streams.front.source")
    text = str(raised.value)
    assert "Pa55" not in text and "w0rd" not in text and "\uff0f" not in text, text
    assert "cam:***" in text


@pytest.mark.parametrize("source", ["\u00b2", "csi://\u00b2", "v4l2://\u00b2", "9" * 5000])
def test_digits_that_int_refuses_are_no_index_and_no_crash(source):
    """ "²".isdigit() is true but int("²") raises, and so does int() of 5000 digits on 3.11:
    both used to escape as a ValueError (a traceback from check-config)."""
    try:
        spec = parse_source(source)
    except ConfigError:
        return
    assert spec.kind == FILE and spec.location == source


@pytest.mark.parametrize(
    "path",
    ["rtsp.mp4", "https_cam.mp4", "videos/a:b.mp4", "/dev/v4l/by-id/usb-046d:0825-video-index0"],
)
def test_file_names_that_start_like_a_scheme_are_still_files(path):
    assert parse_source(path).location == path


def test_a_gstreamer_pipeline_may_span_lines():
    spec = parse_source("gst:videotestsrc\n  ! videoconvert\n  ! appsink")
    assert spec.location == "videotestsrc ! videoconvert ! appsink"


def test_spec_repr_and_display_are_redacted():
    spec = parse_source("rtsp://admin:hunter2@cam/stream?channel=1")
    assert spec.display == "rtsp://admin:***@cam/stream?channel=1"
    assert "hunter2" not in repr(spec)
    assert spec.location == "rtsp://admin:hunter2@cam/stream?channel=1"  # still opens


@pytest.mark.parametrize(
    "text, expected",
    [
        ("rtsp://user:pass@host/path", "rtsp://user:***@host/path"),
        ("rtsp://user:p@ss@host:554/path", "rtsp://user:***@host:554/path"),
        ("rtsp://user@host/path", "rtsp://***@host/path"),  # maybe a token: masked whole
        ("admin://pw@cam:554/x", "admin://***@cam:554/x"),  # "admin:" + a password "//pw"
        ("rtsp://host:554/path", "rtsp://host:554/path"),
        (
            "http://cam/video.cgi?user=admin&password=hunter2&ch=1",
            "http://cam/video.cgi?user=admin&password=***&ch=1",
        ),
        ("http://cam/x?token=abc123", "http://cam/x?token=***"),
        (
            "rtspsrc location=rtsp://u:pw@cam/s user-pw=pw2 ! decodebin",
            "rtspsrc location=rtsp://u:***@cam/s user-pw=*** ! decodebin",
        ),
        ("cannot open rtsp://a:b@c/d (refused)", "cannot open rtsp://a:***@c/d (refused)"),
        ("/dev/video0", "/dev/video0"),
        ("rtsp//user:pw@cam/x", "rtsp//user:***@cam/x"),
        ("user:pw@cam:554/x", "user:***@cam:554/x"),
        # unencoded "/", "#", "?", spaces, "@" and "://" in a password (any of them used to leak)
        ("rtsp://cam:Pa55/w0rd@host/x", "rtsp://cam:***@host/x"),
        ("rtsp://cam:Pa55#w0rd@host/x", "rtsp://cam:***@host/x"),
        ("rtsp://cam:P a?5@5@host:554/x", "rtsp://cam:***@host:554/x"),
        ("rtsp://cam:a://b@host", "rtsp://cam:***@host"),
        (
            "cannot open rtsp://cam:Pa 55/x@host/x (refused)",
            "cannot open rtsp://cam:***@host/x (refused)",
        ),
        ("rtsp:/user:p w/d@h/x", "rtsp:/user:***@h/x"),
        ("rtsp:user:pw@h/x", "rtsp:user:***@h/x"),
        ("user: pw@cam/x", "user:***@cam/x"),
        ("/dev/v4l/by-id/admin:pw@cam", "/dev/v4l/by-id/admin:***@cam"),
        # "#" cut the URL short (an unquoted YAML comment): the "port" is no number
        ("rtsp://cam:Pa 55", "rtsp://cam:***"),
        ("rtsp://cam:554 (refused)", "rtsp://cam:554 (refused)"),
        ("rtsp://[fe80::1]:554/x", "rtsp://[fe80::1]:554/x"),
    ],
)
def test_redact_masks_passwords_wherever_they_appear(text, expected):
    assert redact(text) == expected
