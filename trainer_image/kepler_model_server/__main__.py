"""`kepler-model-server` (and `python -m kepler_model_server`): the model server without the trainer's CLI.

The same options as `kepler-model serve`, which delegates here; this entry point imports neither the
trainer nor its scientific stack, so the slim server image (Dockerfile.server) needs only the `server` extra.
"""

from __future__ import annotations

import argparse
import sys

from . import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kepler-model-server",
                                     description="serve published models to Kepler over HTTP")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
