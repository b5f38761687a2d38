"""OTLP's metrics messages with every data point's ``attributes`` left as bytes.

The receiver's hot loop keys its caches by a point's attributes; decoding them into
``KeyValue`` messages for every point costs more than the rest of the conversion.
These classes are opentelemetry-proto's own descriptors, copied into a private pool
with one change: the ``attributes`` field (``repeated KeyValue``, field 7 of
``NumberDataPoint`` and 9 of the histogram and summary points) is ``repeated bytes``,
which has the same wire format. A point's attributes are decoded into ``KeyValue``
once per distinct attribute set.

>>> from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as std
>>> req = std.ExportMetricsServiceRequest()
>>> p = req.resource_metrics.add().scope_metrics.add().metrics.add().gauge.data_points.add()
>>> p.attributes.add(key="k").value.string_value = "v"
>>> raw = RawExportRequest.FromString(req.SerializeToString())
>>> attrs = raw.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].attributes
>>> [KeyValue.FromString(a).key for a in attrs]
['k']
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

_POINTS = frozenset(
    {"NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint"}
)


def _copy(module: Any) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)
    return fd


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_copy(common_pb2))
    pool.Add(_copy(resource_pb2))
    metrics = _copy(metrics_pb2)
    changed = 0
    for msg in metrics.message_type:
        if msg.name in _POINTS:
            for f in msg.field:
                if f.name == "attributes":
                    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    f.ClearField("type_name")
                    changed += 1
    if changed != len(_POINTS):
        raise RuntimeError("opentelemetry-proto's data points changed shape")
    pool.Add(metrics)
    pool.Add(_copy(metrics_service_pb2))
    return pool


_POOL = _pool()
RawExportRequest: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(
        "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"
    )
)
KeyValue = common_pb2.KeyValue
