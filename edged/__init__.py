"""edged: an inference daemon for NVIDIA Jetson (Nano, Xavier) and any Linux box.

Model artifacts (.onnx, TAO .etlt) in; person detection or classification on
camera streams out, over MQTT and Prometheus. See README.md.
"""

__version__ = "0.1.0"
