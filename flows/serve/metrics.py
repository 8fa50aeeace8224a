"""The server's Prometheus metrics (``GET /metrics``); nothing when ``prometheus_client`` is missing (it comes with Prefect)."""

from __future__ import annotations


class Metrics:
    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover
            self.registry = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("pxflow_serve_requests_total", "requests by endpoint and HTTP status",
                                     ["endpoint", "status"], registry=self.registry)
        self.latency = prom.Histogram("pxflow_serve_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = prom.Histogram("pxflow_serve_batch_size", "images per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queued = prom.Gauge("pxflow_serve_queued", "requests waiting for the model", registry=self.registry)
        self.pixels = prom.Gauge("pxflow_serve_pixels_in_flight", "pixel units (decoded BGR pixels) held now by "
                                 "requests and predict() calls", registry=self.registry)
        self.pixels_limit = prom.Gauge("pxflow_serve_pixels_in_flight_limit", "the pixel budget (--max-pixels-in-flight)",
                                       registry=self.registry)
        self.bound = prom.Gauge("pxflow_serve_memory_bound_bytes", "resident memory the server keeps under: "
                                "warm-up peak RSS + 3 bytes x the pixel budget + request bodies", registry=self.registry)
        self.rss = prom.Gauge("pxflow_serve_peak_rss_bytes", "peak resident memory of the process so far",
                              registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        if self.registry is not None:
            self.requests.labels(endpoint, str(status)).inc()
            self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST
