"""edged's benchmark suite (issue 7): ``python -m benchmarks``; see benchmarks/README.md."""
