"""Creating and deleting the pods a controller owns, as kube-controller-manager's PodControl does.

Every write goes into the shared pods informer at once (``assume``), so the next reconcile
never counts a new pod twice nor waits for one it already removed. A delete names the pod's
uid as a precondition: a pod that is already gone or was replaced by a namesake (404, 409)
needs nothing more. Successful writes are recorded on the owner as the ``SuccessfulCreate``
and ``SuccessfulDelete`` Events that ``kubectl describe`` shows, a refused create as a
``FailedCreate`` Event with the API's message (a missing ServiceAccount, a quota...).
"""

from __future__ import annotations

from typing import Any

from k3py.cluster.api.status import ApiError
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import PODS, QueueController

Object = dict[str, Any]


async def create_pod(controller: QueueController, owner: Object, pod: Object) -> Object:
    """Create ``pod`` in ``owner``'s namespace; return the stored pod."""
    try:
        created = await controller.api.create(PODS, pod, podutil.namespace_of(owner))
    except ApiError as err:
        controller.event(owner, "Warning", "FailedCreate", f"Error creating: {err}")
        raise
    controller.ctx.informers.get(PODS).assume(created)
    controller.event(
        owner, "Normal", "SuccessfulCreate", f"Created pod: {podutil.name_of(created)}"
    )
    return created


async def delete_pod(controller: QueueController, owner: Object | None, pod: Object) -> bool:
    """Delete ``pod`` if it is still the one seen; False when it was already gone or replaced.

    With an ``owner`` the deletion is recorded as the owner's Event.
    """
    try:
        result = await controller.api.delete(
            PODS,
            podutil.name_of(pod),
            podutil.namespace_of(pod),
            preconditions={"uid": podutil.uid_of(pod)},
        )
    except ApiError as err:
        if err.code in (404, 409):
            return False
        raise
    pods = controller.ctx.informers.get(PODS)
    if result is None:
        pods.assume_deleted(pod)
    else:
        pods.assume(result)
    if owner is not None:
        controller.event(
            owner, "Normal", "SuccessfulDelete", f"Deleted pod: {podutil.name_of(pod)}"
        )
    return True
