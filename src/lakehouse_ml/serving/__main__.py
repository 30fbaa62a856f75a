"""Start the scoring service for a Kedro environment, from the project root:

    LAKEHOUSE_ML_SERVING_TOKEN=... python -m lakehouse_ml.serving --env local --port 8080

``--env`` is the Kedro environment (``local`` = catalog ``dev``, ``staging``, ``prod``): its
``serving`` parameters, model name, feature contracts, MLflow store and credentials. The token
comes from ``LAKEHOUSE_ML_SERVING_TOKEN`` or ``conf/<env>/credentials.yml`` (``serving.token``);
without one the service refuses to start unless ``serving.auth: disabled``. ``--host`` and
``--port`` override ``serving.host``/``serving.port``; ``--conf-source`` reads another configuration
folder, as ``kedro run --conf-source`` does. One process, one worker: the releases live
in its memory and are swapped in place (``POST /admin/reload`` or every ``poll_interval_s``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the settings and run uvicorn until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m lakehouse_ml.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="local", help="Kedro environment (default: local)")
    parser.add_argument(
        "--conf-source",
        default=None,
        help="configuration folder (default: the project's conf/), as kedro's --conf-source",
    )
    parser.add_argument("--host", default=None, help="bind address (default: serving.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: serving.port)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from lakehouse_ml.serving.app import create_app
    from lakehouse_ml.serving.config import SettingsError, load_settings

    try:
        settings = load_settings(args.env, conf_source=args.conf_source)
    except SettingsError as error:
        print(f"lakehouse_ml.serving: {error}", file=sys.stderr)
        return 2
    # MLflow's own variables, rather than mlflow.set_*_uri: importing MLflow here would delay listening
    # by its import time; the releases load it on their thread.
    if settings.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.registry_uri:
        os.environ["MLFLOW_REGISTRY_URI"] = settings.registry_uri
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=args.log_level,
        access_log=False,  # our request log carries the request id and versions
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
