"""What a model-proxy hands back to the heads on ``llm.v1.reroute``: the envelope of a request
that failed here (:func:`reroute_failed`) or whose deployment left every route while it was
queued (:func:`reroute_bounced`), and how a failed attempt is named (:func:`attempt_summary`).

A request this deployment's provider has no place for (``top_k`` to Anthropic through litellm:
:class:`~switchyard.errors.DeploymentCannotTake`) goes back too, so that a route mixing kinds
answers it by what it asks, not by which deployment the weights picked: marked ``unfit``, it
cools nothing and counts as no attempt, and the heads answer the client's 400 only when no
deployment of the route takes it. The answer is given here, as before, when the heads could
send it nowhere else (:func:`answered_here`), or when one more deployment in ``Sy-Tried`` would
pass what a head reads (:data:`~switchyard.bus.envelope.MAX_TRIED`): refusals count toward no
``routing.max_attempts``, so only the route's size bounds them (:func:`answer_of`)."""

from __future__ import annotations

from switchyard.bus.envelope import MAX_TRIED, Envelope
from switchyard.errors import ApiError, DeploymentCannotTake, InvalidRequest
from switchyard.schemas.routing import RouteTable
from switchyard.workers.modelproxy.handback import nowhere_else
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.midstream import provider_status
from switchyard.workers.modelproxy.providers import upstream_errors as ue

_MAX_ERRORS_HEADER = 900
_MAX_SUMMARY = 200


def reroute_failed(job: Job, exc: ApiError) -> Envelope:
    """The envelope of a request rerouted after a failed attempt: the deployment joins
    ``tried`` (not tried again for this request) and its failure the errors listed."""
    env = job.env
    summary = attempt_summary(job.deployment_id, exc)
    errors = f"{env.errors}; {summary}" if env.errors else summary
    if isinstance(exc, DeploymentCannotTake):
        # No attempt: the earlier attempts' status and wait stay the answer's (a 429's
        # Retry-After), and nothing cools (a head reads Sy-Unfit; one too old to read it
        # neither cools nor pauses for the 0 s sent when no earlier provider named a wait).
        return env.with_(
            tried=(*env.tried, job.deployment_id),
            unfit=(*env.unfit, job.deployment_id),
            unfit_code=exc.code or "",
            unfit_param=(exc.param or "")[:256],
            errors=errors[-_MAX_ERRORS_HEADER:],
            last_status=env.last_status or exc.status,
            retry_after=0.0 if env.retry_after is None else env.retry_after,
        )
    return env.with_(
        tried=(*env.tried, job.deployment_id),
        errors=errors[-_MAX_ERRORS_HEADER:],
        last_status=exc.status,
        upstream_status=provider_status(exc),  # what the head's cooldown records
        # Only this hop's Retry-After: an earlier one must not cool this deployment. A
        # missing key (0: no cooldown) answers the moment someone stores it.
        retry_after=0.0 if ue.no_cooldown(exc) else exc.retry_after,
    )


def answered_here(exc: ApiError, table: RouteTable, env: Envelope, deployment_id: str) -> bool:
    """Whether the failure ``exc`` is answered by this model-proxy though it could go back to
    the heads: a key nobody here could fetch (the heads' 503 would not carry its
    ``Retry-After``) or a field this deployment cannot take (its own 400 says it best), on a
    route the heads could send the request nowhere else; or any failure but a bounce once
    ``tried`` is full (:func:`tried_full`)."""
    if tried_full(exc, env):
        return True
    return (ue.key_unreachable(exc) or isinstance(exc, DeploymentCannotTake)) and nowhere_else(
        table, env, deployment_id
    )


def said_here(exc: ApiError, env: Envelope, deployment_id: str) -> ApiError:
    """``exc`` as this model-proxy answers it: an endpoint the route's one deployment does not
    serve is named with the route, as the heads' 400 names it (:func:`answered_here`)."""
    if isinstance(exc, ue.EndpointNotServed):
        return ue.EndpointNotServed(
            f"no deployment of `{env.alias}` can take this request: {deployment_id}: {exc.message}",
            param=exc.param,
        )
    return exc


def tried_full(exc: ApiError, env: Envelope) -> bool:
    """Whether rerouting ``exc`` would list one deployment more than a head reads in
    ``Sy-Tried`` (it would drop the reroute as malformed: the caller would wait for its
    deadline). A bounce adds nothing to ``tried``."""
    return exc.code != ue.DEPLOYMENT_REMOVED and len(env.tried) >= MAX_TRIED


def answer_of(job: Job, exc: ApiError) -> ApiError:
    """What the caller is told of ``exc`` answered here: a refusal after ``tried`` filled up
    is the heads' answer when no deployment takes the request, the 400 naming every refusal
    (and any earlier failure); anything else is told as it is."""
    if not (isinstance(exc, DeploymentCannotTake) and tried_full(exc, job.env)):
        return exc
    listed = reroute_failed(job, exc).errors
    return InvalidRequest(
        f"no deployment of `{job.env.alias}` can take this request: {listed} (tried no "
        f"further: a request tries at most {MAX_TRIED + 1} deployments)",
        code=exc.code or DeploymentCannotTake.code,
        param=exc.param,
    )


def attempt_summary(deployment_id: str, exc: ApiError) -> str:
    """A failed attempt as the errors listed name it, and the cooldown it starts: with the
    provider's own status when it answered one (its 500, not the 502 Switchyard answers)."""
    status = provider_status(exc) or exc.status
    return _clipped(f"{deployment_id}: {status} {exc.message}".replace(";", ","), _MAX_SUMMARY)


def _clipped(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut after a whole word and marked ``...``
    (a message cut mid-word, "[Connect call failed ('127.0.0.1", reads as garbled)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,.:(") + "..."


def reroute_bounced(job: Job) -> Envelope:
    """The envelope of a request bounced because its deployment left every route while it
    was queued. No attempt was made: nothing joins ``tried`` or the errors, so the deployment
    can take the request if it is routed again a moment later (a route swapped A->B->A), and
    ``routing.max_attempts`` still counts provider calls only. The bounce is counted apart
    (``bounces``, which the heads bound) and names the deployment (``removed``)."""
    env = job.env
    return env.with_(bounces=env.bounces + 1, removed=job.deployment_id)
