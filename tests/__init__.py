"""edged test suite."""
