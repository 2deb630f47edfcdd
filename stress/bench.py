#!/usr/bin/env python3
"""Old entry point of the benchmark: now `lsca bench` (src/lsca/bench.py); same options."""
import sys; from lsca.bench import main; sys.exit(main())  # noqa: E702
