"""The health snapshot in Prometheus' text format (``/metrics``), every name prefixed ``chatsync_``."""

from __future__ import annotations


def prometheus_text(snap: dict) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    f = snap["figures"]

    class Snapshot:
        def collect(self):
            def gauge(name, doc, value=None, labels=None, samples=()):
                g = GaugeMetricFamily(f"chatsync_{name}", doc, labels=list(labels or []))
                if value is not None:
                    g.add_metric([], float(value))
                for label_values, v in samples:
                    if v is not None:
                        g.add_metric(list(label_values), float(v))
                return g

            window = f"over the last {snap['window_minutes']} minutes"
            yield gauge("events_synced", f"Events synced {window}", f["events_synced"])
            yield gauge("dead_letters", f"Events dead-lettered {window}", f["dead_letters"])
            if f["sync_success_rate"] is not None:
                yield gauge("sync_success_rate", f"Synced / (synced + dead letters) {window}", f["sync_success_rate"])
            yield gauge("sync_delay_seconds", f"Sync delay (processed - occurred) {window}", labels=["stat"],
                        samples=[(("p50",), f["sync_delay_p50_s"]), (("p95",), f["sync_delay_p95_s"]),
                                 (("max",), f["sync_delay_max_s"])])
            yield gauge("open_inconsistencies", "Inconsistencies unresolved now, by kind", labels=["kind"],
                        samples=[((k,), v) for k, v in f["open_inconsistencies"].items()])
            yield gauge("inconsistencies_detected", f"Inconsistencies detected {window}, by kind", labels=["kind"],
                        samples=[((k,), v) for k, v in f["inconsistencies_detected"].items()])
            yield gauge("rows_repaired", f"Chat rows repaired {window}, by action", labels=["action"],
                        samples=[((a,), v) for a, v in f["rows_repaired"].items()])
            yield gauge("time_to_resolution_seconds", f"Detection to resolution of what was resolved {window}",
                        labels=["stat"], samples=[(("p50",), f["time_to_resolution_p50_s"]),
                                                  (("max",), f["time_to_resolution_max_s"])])
            yield gauge("runs_abandoned", f"Runs closed as abandoned (their process died) {window}",
                        f["runs_abandoned"])
            yield gauge("runs_open", "Consistency runs open now (detecting, repairing or validating)", f["runs_open"])
            b = f.get("backlog") or {}
            yield gauge("event_backlog", "Event stream: length, consumer-group lag, pending entries",
                        labels=["measure"], samples=[((k,), b.get(k)) for k in ("length", "lag", "pending")
                                                     if isinstance(b.get(k), int)])
            yield gauge("alert_firing", "1 while the alert condition is breached", labels=["condition"],
                        samples=[((s["condition"],), 1 if s["firing"] else 0) for s in snap["alerts"]])
            yield gauge("step_seconds", f"Mean duration of the consistency runs' steps {window}", labels=["step"],
                        samples=[((k,), v["mean"]) for k, v in f["step_seconds"].items()])

    registry = CollectorRegistry()
    registry.register(Snapshot())
    return generate_latest(registry)
