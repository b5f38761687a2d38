"""Prometheus remote-write 1.0 messages (``prometheus.WriteRequest``) and
``google.rpc.Status``, built at import time from descriptors written here.

Why descriptors and not generated ``_pb2`` code: the messages are small and frozen
(remote-write 1.0 is a published spec), generated code pins the protobuf runtime to
the generator's version (protobuf 5 and 6 gencode refuse older runtimes, and the
project accepts protobuf 4 to 6), and Prometheus's ``.proto`` files import gogoproto
options that would have to be stripped before generating. The fields below are those
of Prometheus's ``prompb/remote.proto`` and ``prompb/types.proto`` (same numbers and
types, so the wire format is identical); ``TimeSeries.histograms`` and ``exemplars``
are kept as raw bytes: the receiver counts them and does not decode them. They live in
a private descriptor pool, so they cannot clash with another library's registration.

>>> req = WriteRequest()
>>> s = req.timeseries.add()
>>> _ = s.labels.add(name="__name__", value="up")
>>> _ = s.samples.add(value=1.0, timestamp=1700000000000)
>>> WriteRequest.FromString(req.SerializeToString()) == req
True
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    label: int = _F.LABEL_OPTIONAL,
    type_name: str = "",
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name


def _remote_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name="monitoring/prometheus_remote.proto", package="prometheus", syntax="proto3"
    )
    rep = _F.LABEL_REPEATED

    m = fd.message_type.add(name="WriteRequest")
    _field(m, "timeseries", 1, _F.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")
    _field(m, "metadata", 3, _F.TYPE_MESSAGE, rep, ".prometheus.MetricMetadata")

    # the same message with each series left as its bytes (the receiver's fast path)
    m = fd.message_type.add(name="WriteRequestRaw")
    _field(m, "timeseries", 1, _F.TYPE_BYTES, rep)
    _field(m, "metadata", 3, _F.TYPE_MESSAGE, rep, ".prometheus.MetricMetadata")

    m = fd.message_type.add(name="MetricMetadata")
    e = m.enum_type.add(name="MetricType")
    for i, n in enumerate(
        (
            "UNKNOWN",
            "COUNTER",
            "GAUGE",
            "HISTOGRAM",
            "GAUGEHISTOGRAM",
            "SUMMARY",
            "INFO",
            "STATESET",
        )
    ):
        e.value.add(name=n, number=i)
    _field(m, "type", 1, _F.TYPE_ENUM, type_name=".prometheus.MetricMetadata.MetricType")
    _field(m, "metric_family_name", 2, _F.TYPE_STRING)
    _field(m, "help", 4, _F.TYPE_STRING)
    _field(m, "unit", 5, _F.TYPE_STRING)

    m = fd.message_type.add(name="Sample")
    _field(m, "value", 1, _F.TYPE_DOUBLE)
    _field(m, "timestamp", 2, _F.TYPE_INT64)

    m = fd.message_type.add(name="TimeSeries")
    _field(m, "labels", 1, _F.TYPE_MESSAGE, rep, ".prometheus.Label")
    _field(m, "samples", 2, _F.TYPE_MESSAGE, rep, ".prometheus.Sample")
    _field(m, "exemplars", 3, _F.TYPE_BYTES, rep)  # prometheus.Exemplar, not decoded
    _field(m, "histograms", 4, _F.TYPE_BYTES, rep)  # prometheus.Histogram (native), not decoded

    m = fd.message_type.add(name="Label")
    _field(m, "name", 1, _F.TYPE_STRING)
    _field(m, "value", 2, _F.TYPE_STRING)
    return fd


def _v2_file() -> descriptor_pb2.FileDescriptorProto:
    """Remote-write 2.0's ``io.prometheus.write.v2.Request`` (prompb/io/prometheus/write/
    v2/types.proto): native histograms and exemplars kept as raw bytes."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="monitoring/prometheus_write_v2.proto", package="io.prometheus.write.v2",
        syntax="proto3",
    )  # fmt: skip
    rep = _F.LABEL_REPEATED
    m = fd.message_type.add(name="Request")
    _field(m, "symbols", 4, _F.TYPE_STRING, rep)
    _field(m, "timeseries", 5, _F.TYPE_MESSAGE, rep, ".io.prometheus.write.v2.TimeSeries")
    m = fd.message_type.add(name="TimeSeries")
    _field(m, "labels_refs", 1, _F.TYPE_UINT32, rep)
    _field(m, "samples", 2, _F.TYPE_MESSAGE, rep, ".io.prometheus.write.v2.Sample")
    _field(m, "histograms", 3, _F.TYPE_BYTES, rep)
    _field(m, "exemplars", 4, _F.TYPE_BYTES, rep)
    _field(m, "metadata", 5, _F.TYPE_MESSAGE, type_name=".io.prometheus.write.v2.Metadata")
    _field(m, "created_timestamp", 6, _F.TYPE_INT64)
    m = fd.message_type.add(name="Sample")
    _field(m, "value", 1, _F.TYPE_DOUBLE)
    _field(m, "timestamp", 2, _F.TYPE_INT64)
    m = fd.message_type.add(name="Metadata")
    _field(m, "type", 1, _F.TYPE_INT32)  # MetricType: the numbers of 1.0's MetricMetadata
    _field(m, "help_ref", 3, _F.TYPE_UINT32)
    _field(m, "unit_ref", 4, _F.TYPE_UINT32)
    return fd


def _status_file() -> descriptor_pb2.FileDescriptorProto:
    """``google.rpc.Status`` (googleapis' status.proto), the OTLP/HTTP error body;
    ``details`` (repeated ``google.protobuf.Any``) kept as raw bytes, never filled."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="monitoring/google_rpc_status.proto", package="google.rpc", syntax="proto3"
    )
    m = fd.message_type.add(name="Status")
    _field(m, "code", 1, _F.TYPE_INT32)
    _field(m, "message", 2, _F.TYPE_STRING)
    _field(m, "details", 3, _F.TYPE_BYTES, _F.LABEL_REPEATED)
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_remote_file())
_POOL.Add(_v2_file())
_POOL.Add(_status_file())


def _message(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


WriteRequest: Any = _message("prometheus.WriteRequest")
WriteRequestRaw: Any = _message("prometheus.WriteRequestRaw")
TimeSeries: Any = _message("prometheus.TimeSeries")
MetricMetadata: Any = _message("prometheus.MetricMetadata")
RequestV2: Any = _message("io.prometheus.write.v2.Request")
Status: Any = _message("google.rpc.Status")
