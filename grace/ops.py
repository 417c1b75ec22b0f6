"""Wiring of the core's parts, called once from ``GraceConfig.ready()``: signal receivers
(grace/observers.py), the features and fault points the core owns, their system checks,
and the health entries of grace/ops_health.py."""

from __future__ import annotations

import logging

from django.core.checks import register

from grace.faults import (
    fault_point_register,
    faults_active,
    faults_check,
    faults_describe,
    faults_health,
)
from grace.features import feature_register, features_check, features_startup_log
from grace.health import health_register
from grace.metrics.selectors import dashboard_core_register
from grace.observers import observers_connect
from grace.ops_health import ops_health_register
from grace.story_sources import story_sources_register

logger = logging.getLogger(__name__)

FEATURES = {
    "audit": "nothing is appended to the audit log",
    "events": "nothing is published on the event bus; /ws/events/ is closed",
    "metrics": "no metric events are recorded; /api/metrics answers 503",
}
FAULT_POINTS = {
    "audit": "the audit writer fails to append",
    "events": "a publish on the event bus fails",
    "metrics": "the metrics flusher fails to write",
}


def ops_ready() -> None:
    for name, description in FEATURES.items():
        feature_register(name, description)
    for name, description in FAULT_POINTS.items():
        fault_point_register(name, description)
    observers_connect()
    story_sources_register()
    dashboard_core_register()
    register(features_check)
    register(faults_check)
    ops_health_register()
    features_startup_log()
    faults = faults_active()
    if faults:
        logger.warning(
            "GRACE_FAULTS is on (%s): these points fail on purpose. Never in production.",
            faults_describe(faults),
        )
        health_register("faults", faults_health)
