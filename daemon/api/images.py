"""Handlers for /v1/images: what a create's `image` may name (the same for every owner)."""

from __future__ import annotations

from aiohttp import web

from daemon.api import serialize
from daemon.api.context import IMAGES
from daemon.models import Page


async def list_(request: web.Request) -> web.Response:
    found = await request.app[IMAGES].list()
    return web.json_response(serialize.page(Page(found, False), serialize.image))


async def retrieve(request: web.Request) -> web.Response:
    info = await request.app[IMAGES].get(request.match_info["name"])
    return web.json_response(serialize.image(info))
