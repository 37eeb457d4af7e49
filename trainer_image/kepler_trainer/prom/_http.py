"""The HTTP client: one session, its TLS, token, retries and timeouts, and the one place where
transport and HTTP failures become the trainer's errors (`errors.py`).

Where prometheus-api-client is and is not used:
* session, retries, TLS: a plain `requests.Session` with urllib3's `Retry`, configured the way
  `PrometheusConnect` configures its own, and handed to it, so both share one connection pool, one
  bearer token and one CA bundle.
* metric discovery: `PrometheusConnect.get_label_values("__name__")`, with `match[]` selectors so
  that label filters and the window narrow the answer on the server.
* range queries: not `custom_query_range`, which decodes the whole answer into Python lists (three
  objects per sample: several seconds and about 1 GB for a day of 200 series at 3 s). The same
  endpoint is requested through the same session and the body goes to `promjson.read_answer`.

Answers are read whole (`response.content`): one chunk is at most 11,000 points per series, and
Prometheus answers only once it has evaluated the whole query anyway. Error texts are cut to 300
characters: a proxy's HTML page must not become a 40 kB message in the termination log.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import promjson
from ..data import Series
from ..errors import InputError, PrometheusQueryError, PrometheusUnreachableError
from ._settings import PrometheusSettings

_RETRY_STATUS = (429, 500, 502, 503, 504)


class QueryRejected(PrometheusQueryError):
    """A 4xx answer; `status` tells a window too big for one request from a bad query."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Client:
    """One requests session (retries, TLS, token) shared by discovery and the range queries."""

    def __init__(self, settings: PrometheusSettings):
        self.settings = settings
        self.session = requests.Session()
        self.session.verify = (str(settings.ca_file) if settings.ca_file else not settings.insecure_skip_tls_verify)
        if settings.ca_file and not settings.ca_file.is_file():
            raise InputError(f"CA file {settings.ca_file} not found")
        if settings.insecure_skip_tls_verify and not settings.ca_file:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # asked for explicitly
        if settings.bearer_token_file:
            self.session.headers["Authorization"] = f"Bearer {_read_token(settings.bearer_token_file)}"
        # Prometheus gzips when asked: worth it over a network, pure CPU on the loopback.
        self.session.headers["Accept-Encoding"] = "gzip" if remote(settings.server) else "identity"
        self.retry = Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                           status=settings.retries, backoff_factor=0.5, backoff_max=10,
                           status_forcelist=_RETRY_STATUS, allowed_methods=frozenset({"GET", "POST"}),
                           raise_on_status=False, respect_retry_after_header=True)
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, self._adapter())
        self.timeout = (min(10.0, settings.timeout), settings.timeout)

    def _adapter(self) -> HTTPAdapter:
        return HTTPAdapter(max_retries=self.retry, pool_maxsize=max(10, self.settings.concurrency))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def label_values(self, label: str, matchers: list[str], start: float, end: float) -> list[str]:
        """Values of `label` among the series that `matchers` select over [start, end]."""
        from prometheus_api_client import PrometheusConnect
        from prometheus_api_client.exceptions import PrometheusApiClientException

        server = self.settings.server
        connect = PrometheusConnect(url=server, session=self.session, retry=self.retry, timeout=self.timeout)
        self.session.mount(server, self._adapter())  # PrometheusConnect mounted its own adapter: ours wins
        params = {"match[]": matchers, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        try:
            return list(connect.get_label_values(label, params=params))
        except PrometheusApiClientException as exc:
            raise self._status_error(str(exc), "listing metric names") from None
        except requests.JSONDecodeError:  # 200 but not JSON: a login page, an exporter, another app
            raise PrometheusQueryError(f"{server} did not answer like Prometheus (not JSON)") from None
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        except (ValueError, KeyError, TypeError) as exc:  # 200 but not the Prometheus API
            raise PrometheusQueryError(f"{server} did not answer like Prometheus: {exc}") from None

    def range_query(self, params: dict[str, str]) -> list[Series]:
        """One query_range request (`_promql.range_params`), its answer as Series."""
        try:
            # verify= on every call: requests lets $REQUESTS_CA_BUNDLE override session.verify.
            response = self.session.get(f"{self.settings.server}/api/v1/query_range", params=params,
                                        timeout=self.timeout, verify=self.session.verify)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._status_error(_error_text(response), f"query {params['query']}", response.status_code)
        return promjson.read_answer(response.content, params["query"])

    def _status_error(self, text: str, what: str, status: int | None = None) -> Exception:
        if status is None:
            found = re.search(r"HTTP Status Code (\d+)", text)
            status = int(found.group(1)) if found else 0
            text = _error_text_from_bytes(text)
        if status >= 500 or status in _RETRY_STATUS:
            return PrometheusUnreachableError(
                f"Prometheus at {self.settings.server} kept failing ({what}, up to {self.settings.retries} "
                f"retries): HTTP {status}: {text}")
        return QueryRejected(status, f"Prometheus rejected {what}: HTTP {status}: {text}")

    def _unreachable(self, exc: Exception) -> PrometheusUnreachableError:
        return PrometheusUnreachableError(f"Prometheus at {self.settings.server} is unreachable: {_short_reason(exc)}")


def remote(url: str) -> bool:
    """Whether the server is across a network (not the loopback): then gzip is worth its CPU."""
    host = re.sub(r"^https?://(?:[^@/]*@)?", "", url).split("/")[0].rsplit(":", 1)[0].strip("[]")
    return host not in {"localhost", "127.0.0.1", "::1"}


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read bearer token file {path}: {exc.strerror}") from None
    if not token or "\n" in token:
        raise InputError(f"bearer token file {path} must hold one non-empty line")
    return token


def _error_text(response: requests.Response) -> str:
    try:
        body = orjson.loads(response.content)
        return str(body.get("error") or body)[:300]
    except (ValueError, AttributeError):  # orjson.JSONDecodeError is a ValueError
        return (response.text.strip().splitlines() or [response.reason or ""])[0][:300]


def _error_text_from_bytes(text: str) -> str:
    """The `error` field out of prometheus-api-client's "HTTP Status Code N (b'...')" message."""
    found = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    return (found.group(1) if found else text)[:300]


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^'\")]+", r"Read timed out[^'\")]*", r"timed out",
                    r"certificate verify failed[^'\")]*", r"Name or service not known",
                    r"too many \d+ error responses"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip().rstrip(".")
    return f"{type(exc).__name__}: {text[:200]}"
