"""Choosing a deployment for a model alias: pure logic, no I/O.

Weighted random choice among the alias's deployments that are neither already tried for this
request nor cooling down; once those are exhausted, the fallback aliases in order (each with
its own deployments). A cycle of fallbacks is walked once. A Responses or Messages request
only a native deployment can serve (:mod:`switchyard.dialects.native_only`) passes ``allowed``
to rule out the deployments that would translate it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from switchyard.dialects.native_only import DIALECT_OF, serves
from switchyard.errors import ModelNotFound
from switchyard.schemas.routing import Deployment, Route, RouteTable


class Router:
    """An immutable view of one route table revision."""

    def __init__(self, table: RouteTable, revision: int = 0) -> None:
        self.table = table
        self.revision = revision
        self._aliases = sorted(table.routes)
        self._alias_of = {
            dep.id: alias for alias, route in table.routes.items() for dep in route.deployments
        }
        deployments = table.deployments()
        self._concurrency = {
            dep_id: deployment.concurrency or provider.concurrency
            for dep_id, (provider, deployment) in deployments.items()
        }
        self._kind = {dep_id: provider.kind for dep_id, (provider, _) in deployments.items()}
        self._mixed: dict[tuple[str, str], bool] = {}  # (alias, op): see mixed()

    def concurrency(self, deployment_id: str) -> int:
        """How many requests the deployment serves at once (every model-proxy together)."""
        return self._concurrency.get(deployment_id, 1)

    def translates(self, deployment_id: str, op: str) -> bool:
        """Whether ``deployment_id`` gets ``op`` translated (its provider does not speak the
        operation's dialect: :func:`~switchyard.dialects.native_only.serves`)."""
        kind = self._kind.get(deployment_id)
        return kind is not None and not serves(op, kind)

    def mixed(self, alias: str, op: str) -> bool:
        """Whether ``alias``'s chain (fallbacks too) has both a deployment that serves ``op``
        natively and one that translates it: only then does a request's content choose
        between them. Remembered per routed alias and operation (a table is immutable)."""
        if op not in DIALECT_OF or alias not in self.table.routes:
            return False
        known = self._mixed.get((alias, op))
        if known is None:
            ids = self.cooling_candidates(alias)
            translating = [self.translates(d, op) for d in ids]
            known = any(translating) and not all(translating)
            self._mixed[(alias, op)] = known
        return known

    def aliases(self) -> list[str]:
        return self._aliases

    def alias_of(self, deployment_id: str) -> str | None:
        """The alias whose route lists ``deployment_id`` (the first, if several do)."""
        return self._alias_of.get(deployment_id)

    def route(self, alias: str) -> Route:
        """The route for ``alias``.

        Raises:
            ModelNotFound: no such alias (the message lists none of the others: keys may not
                be allowed to see them).
        """
        route = self.table.routes.get(alias)
        if route is None:
            raise ModelNotFound(
                f"The model `{alias}` does not exist or you do not have access to it.",
                param="model",
            )
        return route

    def chain(self, alias: str) -> list[str]:
        """The alias followed by its fallbacks, depth-first, each alias once."""
        order: list[str] = []
        pending = [alias]
        while pending:
            current = pending.pop(0)
            if current in order or current not in self.table.routes:
                continue
            order.append(current)
            pending = list(self.table.routes[current].fallbacks) + pending
        return order

    def choose(
        self,
        alias: str,
        *,
        tried: Iterable[str] = (),
        cooling: Callable[[str], bool] = lambda _dep: False,
        allowed: Callable[[str], bool] | None = None,
    ) -> Deployment | None:
        """Pick a deployment for the next attempt, or None when every candidate is used up.

        Args:
            tried: deployment ids already attempted for this request.
            cooling: True for deployments in cooldown (skipped).
            allowed: when given, False for deployments that cannot serve this request
                (skipped, as if the route did not list them).

        Raises:
            ModelNotFound: ``alias`` is not routed.
        """
        self.route(alias)
        done = set(tried)
        for name in self.chain(alias):
            route = self.table.routes[name]
            options = [
                d
                for d in route.deployments
                if d.id not in done
                and d.weight > 0
                and not cooling(d.id)
                and (allowed is None or allowed(d.id))
            ]
            if not options:
                continue
            if len(options) == 1:
                return options[0]
            weights = [d.weight for d in options]
            return random.choices(options, weights=weights)[0]  # noqa: S311 - load spreading
        return None

    def sibling(
        self, chosen: Deployment, *, tried: Iterable[str], skip: Callable[[str], bool]
    ) -> Deployment | None:
        """Another deployment of the same route as ``chosen`` that ``skip`` does not rule out
        (weighted), or None: batch work goes where there is spare capacity."""
        alias = self._alias_of.get(chosen.id)
        if alias is None:
            return None
        done = set(tried)
        options = [
            d
            for d in self.table.routes[alias].deployments
            if d.id != chosen.id and d.id not in done and d.weight > 0 and not skip(d.id)
        ]
        if not options:
            return None
        return random.choices(options, weights=[d.weight for d in options])[0]  # noqa: S311

    def pinned(self, deployment_id: str) -> Deployment:
        """Exactly ``deployment_id`` (used by the admin API to test one deployment).

        Raises:
            ModelNotFound: no such deployment in the table.
        """
        for route in self.table.routes.values():
            for dep in route.deployments:
                if dep.id == deployment_id:
                    return dep
        raise ModelNotFound(f"no deployment `{deployment_id}` in the route table", param="model")

    def cooling_candidates(
        self, alias: str, allowed: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Deployment ids in the alias's chain that take traffic (cooling or not), those
        ``allowed`` only when it is given."""
        return [d.id for d in self.candidates(alias, allowed)]

    def candidates(
        self, alias: str, allowed: Callable[[str], bool] | None = None
    ) -> list[Deployment]:
        """:meth:`cooling_candidates`, as deployments (in chain order)."""
        return [
            d
            for name in self.chain(alias)
            for d in self.table.routes[name].deployments
            if d.weight > 0 and (allowed is None or allowed(d.id))
        ]
