"""``GET /metrics``: the node's counters in Prometheus text format (prometheus_client).

One registry per node (tests run several nodes in one process). Histograms are observed as
tasks finish; everything else is read from the node's live state at scrape time by a
collector, so a scrape never sees a value older than the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mesh.cluster.face import NodeFace

# seconds: 10 ms (null tasks, small images on a GPU) .. 2 min (a 2048^2 photo on a slow CPU)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class NodeCollector(Collector):
    def __init__(self, node: NodeFace) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        c = self.node.counters()
        if c is None:
            return
        ran = CounterMetricFamily("lamamesh_tasks", "Tasks this node's slots finished, by outcome", labels=["outcome"])
        for outcome, n in sorted(c.tasks.items()):
            ran.add_metric([outcome], n)
        yield ran
        answered = CounterMetricFamily(
            "lamamesh_leader_tasks", "Tasks this node answered while it led, by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(c.answered.items()):
            answered.add_metric([outcome], n)
        yield answered
        nodes = GaugeMetricFamily("lamamesh_nodes", "Members of the mesh this node knows, by state", labels=["state"])
        nodes.add_metric(["alive"], c.alive)
        nodes.add_metric(["dead"], c.dead)
        yield nodes
        yield GaugeMetricFamily("lamamesh_leader_term", "Term of the leader this node follows", value=c.term)
        yield GaugeMetricFamily("lamamesh_is_leader", "1 while this node leads", value=1 if c.leading else 0)
        yield GaugeMetricFamily("lamamesh_queue_depth", "Tasks waiting in the leader's queue", value=c.queue_depth)
        yield GaugeMetricFamily("lamamesh_slots", "Slot processes on this node", value=c.slots)
        yield GaugeMetricFamily("lamamesh_slots_busy", "Tasks this node's slots hold", value=c.slots_busy)
        yield GaugeMetricFamily("lamamesh_mesh_slots", "Slots of every live member", value=c.mesh_slots)
        dropped = CounterMetricFamily(
            "lamamesh_dropped_messages", "Messages this node dropped undecoded, by reason", labels=["reason"]
        )
        for kind, n in c.dropped.items():
            dropped.add_metric([kind], n)
        yield dropped
        yield GaugeMetricFamily("lamamesh_task_rate", "Tasks/s this node finished over the last minute", value=c.rate)


class Metrics:
    def __init__(self, node: NodeFace) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self.slot_seconds = Histogram(
            "lamamesh_task_seconds",
            "Seconds a task took in this node's slot (decode, model, encode)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "lamamesh_http_inpaint_seconds",
            "Seconds from an HTTP inpaint request to its answer, by status code",
            ["code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_task(self, model: str, ok: bool, ms: float) -> None:
        if ok:
            self.slot_seconds.labels(model).observe(ms / 1000)

    def text(self) -> bytes:
        return generate_latest(self.registry)
