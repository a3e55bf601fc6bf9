"""Parsers of device tools' text output (benchmark_model, trtexec), tested on captured output."""
