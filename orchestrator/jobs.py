"""From a validated inventory node to what the remote layer and the workflow need."""

from __future__ import annotations

from orchestrator.actions.apppool import AppPoolRecycle
from orchestrator.actions.base import Action
from orchestrator.actions.services import http_restart, iis_restart, services_restart
from orchestrator.credentials import Credentials
from orchestrator.health import HealthSpec
from orchestrator.inventory import NodeSpec
from orchestrator.lb.base import DrainPolicy
from orchestrator.remote.session import Target
from orchestrator.workflow import NodeJob, Timeouts


def make_target(node: NodeSpec, creds: Credentials) -> Target:
    t = node.transport
    validation: bool | str = t.tls_verify
    if t.tls_verify and t.ca_file:
        validation = t.ca_file
    return Target(
        host=node.host,
        port=t.port,
        scheme=t.scheme,
        auth=t.auth,
        username=creds.username,
        password=creds.password.get_secret_value() if creds.password is not None else None,
        cert_validation=validation,
        configuration_name=t.configuration_name,
        connect_timeout=t.connect_timeout,
        operation_timeout=t.operation_timeout,
        cert_file=str(creds.cert_file) if creds.cert_file else None,
        key_file=str(creds.key_file) if creds.key_file else None,
    )


def make_action(node: NodeSpec) -> Action:
    a = node.action
    stop_timeout = node.timeouts.stop
    if a.type == "iis-restart":
        return iis_restart(stop_timeout=stop_timeout)
    if a.type == "services":
        return services_restart(a.services, stop_timeout=stop_timeout, detached=a.detached)
    if a.type == "apppool-recycle":
        return AppPoolRecycle(a.app_pools)
    return http_restart()


def make_job(node: NodeSpec, drain: DrainPolicy | None = None) -> NodeJob:
    h = node.health
    t = node.timeouts
    return NodeJob(
        name=node.name,
        host=node.host,
        group=node.group,
        lb_name=node.lb_name,
        action=make_action(node),
        health=HealthSpec(
            url=h.url,
            expect_status=h.expect_status,
            body_contains=h.body_contains,
            timeout=h.timeout,
            retries=h.retries,
            interval=h.interval,
            warmup_urls=tuple(h.warmup_urls),
            soak_seconds=h.soak_seconds,
            ca_file=h.ca_file,
            tls_verify=h.tls_verify,
        ),
        timeouts=Timeouts(
            preflight=t.preflight,
            drain=t.drain,
            # The action enforces the stop timeout per service (and again after an escalation, with
            # a clearer error than a phase timeout could give), so the phase has only the deadline.
            stop=None,
            start=t.start,
            verify=t.verify,
            undrain=t.undrain,
            node=t.node,
        ),
        escalation=node.action.escalation,
        call_timeout=node.transport.operation_timeout,
        drain=drain or DrainPolicy(),
    )
