"""Developer tools kept out of the wheel: proto generation, the latency probe and the
server-process helper that tests and the benchmark start servers with."""
