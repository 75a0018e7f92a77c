"""crmkit_client_api: an example plugin that adds an HTTP route to ``crmkit serve``.

``GET /api/clients/{client_id}`` answers with a client's card and its open
deals, as the user of the request's API token may see them. ``docs/server.rst``
shows this file; ``tests/test_server.py`` serves it and calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # the command line does not import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from crmkit import CRM


@hookimpl
def crmkit_routes(crm: CRM) -> list[Any]:
    from starlette.routing import Route

    return [Route("/api/clients/{client_id:int}", client_card, methods=["GET"])]


def client_card(request: Request) -> Response:
    """A synchronous handler: Starlette runs it in a thread, so blocking SQL is fine."""
    from starlette.responses import JSONResponse

    from crmkit.server import session_for

    crm: CRM = request.app.state.crm  # the deployment the server was started for
    client_id = request.path_params["client_id"]
    # as the token's user: policies apply; NotFound is a 404, PermissionDenied a 403
    with session_for(request, readonly=True) as s:
        client = s.clients.get(client_id)
        deals = s.deals.list(client_id=client.id, status="open")
        return JSONResponse(
            {
                "id": client.id,
                "name": client.name,
                "segment": client.segment,
                "open_deals": [
                    {"id": d.id, "stage": d.stage, "amount": str(d.amount), "currency": d.currency}
                    for d in deals
                ],
                "url": f"{crm.config.public_url}/api/clients/{client.id}",
            }
        )
