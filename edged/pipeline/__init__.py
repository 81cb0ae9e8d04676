"""The stream pipeline: capture slots -> inference workers -> result sinks."""
