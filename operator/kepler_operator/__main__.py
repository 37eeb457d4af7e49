"""`kepler-model-operator`: run the operator (standalone, with a liveness endpoint)."""

from __future__ import annotations

import logging

import kopf

from .settings import get_settings


def main() -> None:
    """Run the operator until it is stopped; watch the configured namespaces, or all of them."""
    from . import handlers  # noqa: F401  (registers the handlers)

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kopf.run(standalone=True, clusterwide=not settings.namespaces, namespaces=settings.namespaces,
             liveness_endpoint=settings.liveness_endpoint)


if __name__ == "__main__":
    main()
