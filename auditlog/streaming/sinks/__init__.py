"""Sinks: one thin module per wire format, built from a destination's configuration."""

from __future__ import annotations

from auditlog.streaming.config import (
    DatadogConfig,
    DestinationConfig,
    S3Config,
    SplunkHecConfig,
    WebhookConfig,
)
from auditlog.streaming.netguard import GuardedClient, NetworkPolicy
from auditlog.streaming.sinks.base import Sink, SinkTarget
from auditlog.streaming.sinks.datadog import DatadogSink, intake_url
from auditlog.streaming.sinks.s3 import S3Sink
from auditlog.streaming.sinks.splunk import IndexerAck, SplunkHecSink, channel_of
from auditlog.streaming.sinks.webhook import WebhookSink

SEND_TIMEOUT = 10.0
ACK_TIMEOUT = 60.0


def build_sink(
    target: SinkTarget,
    config: DestinationConfig,
    policy: NetworkPolicy,
    timeout: float = SEND_TIMEOUT,
    ack_timeout: float = ACK_TIMEOUT,
) -> Sink:
    if isinstance(config, S3Config):
        return S3Sink(target, config, policy, timeout)
    client = GuardedClient(policy, timeout)
    if isinstance(config, WebhookConfig):
        assert config.secret is not None
        return WebhookSink(target, client, config.url, config.secret)
    if isinstance(config, SplunkHecConfig):
        ack = IndexerAck(channel_of(target.destination_id), ack_timeout) if config.use_ack else None
        return SplunkHecSink(
            target, client, config.url, config.token, config.index, config.sourcetype, ack
        )
    assert isinstance(config, DatadogConfig)
    return DatadogSink(
        target,
        client,
        url=config.endpoint_url or intake_url(config.site),
        api_key=config.api_key,
        service=config.service,
        tags=config.tags,
    )
