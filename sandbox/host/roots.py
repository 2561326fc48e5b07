"""The shared read-only roots a runtime's sandboxes run on, one per (image, build).

A create asks for an image by name and gets its *current* build (sandbox/images.py); the
build is pinned while any sandbox of this runtime runs on it, so a rebuild never changes or
deletes the tree under a running sandbox: it keeps the build it started with until it ends.
When the last sandbox of a build that is no longer current ends, the pin goes, the backend
takes its view of the tree down (`on_unused`, the undoing of `on_new`) and unused builds are
collected. Each sandbox's (image, build) is written in its dir, so a restarted daemon pins
what its adopted sandboxes run on. `host` is the host's /usr in a generated skeleton (never
collected). Blocking (file and mount work): call off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox import images
from sandbox.host import rootfs
from sandbox.host.agent import agent_pycache

logger = logging.getLogger(__name__)

ROOT_FILE = images.ROOT_FILE


@dataclass(frozen=True)
class Root:
    image: str  # "host" or an image name
    build_id: str
    tree: Path  # on the host
    binds: tuple[tuple[str, str], ...]  # host trees bound over it (the host image only)
    pycache: str  # the agent's bytecode dir to bind ("": none, see host.agent)
    env: tuple[tuple[str, str], ...] = ()  # the image's environment for sandbox processes

    @property
    def key(self) -> str:
        return f"{self.image}@{self.build_id}"


class Roots:
    def __init__(
        self,
        state_dir: Path,
        on_new: Callable[[Root], None] = lambda root: None,
        on_unused: Callable[[Root], None] = lambda root: None,
    ) -> None:
        self._state_dir = state_dir
        self._on_new = on_new
        self._on_unused = on_unused
        self._lock = threading.Lock()
        self._roots: dict[str, Root] = {}  # key -> root
        self._pins: dict[str, images.Pin] = {}  # key -> its pin (not the host root's)
        self._users: dict[str, str] = {}  # sandbox id -> key of its root

    def prepare(self, image: str) -> Root:
        """The current build of `image`, made ready (the default image, at start: a missing
        one fails the start, and the first create does not pay for it)."""
        with self._lock:
            return self._current(image)

    def acquire(self, sandbox_id: str, image: str) -> Root:
        """The current build of `image` for a new sandbox (ImageError: not built or broken).
        Call record() once the sandbox's dir exists."""
        with self._lock:
            root = self._current(image)
            self._users[sandbox_id] = root.key
            return root

    def adopt(self, sandbox_id: str, sandbox_dir: Path) -> Root | None:
        """After a restart: hold the build an existing sandbox runs on (None: it predates
        per-sandbox roots, or its build is gone — it keeps running on its own mount)."""
        try:
            image, _, build_id = (sandbox_dir / ROOT_FILE).read_text().strip().partition("@")
        except OSError:
            return None
        with self._lock:
            try:
                root = self._known(image, build_id)
            except images.ImageError as exc:
                logger.warning(
                    "an adopted sandbox's image build is gone",
                    extra={"container_id": sandbox_id, "image": image, "error": str(exc)},
                )
                return None
            self._users[sandbox_id] = root.key
            return root

    def on_current_build(self, sandbox_id: str) -> bool:
        """Whether the sandbox's root is its image's current build (unknown: no)."""
        with self._lock:
            key = self._users.get(sandbox_id)
            root = None if key is None else self._roots.get(key)
            if root is None:
                return False
            if root.image == images.HOST:
                return True
            return self._is_current(root)

    def _is_current(self, root: Root) -> bool:
        try:
            return images.current_id(self._state_dir, root.image) in (root.build_id, None)
        except images.ImageError:
            return False

    def release(self, sandbox_id: str) -> None:
        """The sandbox has ended (its dir is gone): let its build go if nothing else uses
        it and it is no longer current, then collect the image's unused builds."""
        with self._lock:
            key = self._users.pop(sandbox_id, None)
            root = None if key is None else self._roots.get(key)
            if root is None or not self._drop_unused(root.image):
                return
        try:
            removed = images.collect(self._state_dir, root.image)
        except (images.ImageError, OSError) as exc:
            logger.warning("collecting old image builds failed", extra={"error": str(exc)})
            return
        if removed:
            logger.info("old image builds removed", extra={"image": root.image, "builds": removed})

    def close(self) -> None:
        with self._lock:
            for pin in self._pins.values():
                pin.release()
            self._pins.clear()

    def _drop_unused(self, image: str) -> bool:
        """Let go of `image`'s builds that no sandbox here uses and that are not current;
        whether there were any. Under the lock."""
        if image == images.HOST:
            return False
        try:
            current = images.current_id(self._state_dir, image)
        except images.ImageError:
            return False
        used = set(self._users.values())
        dropped = False
        for key, root in list(self._roots.items()):
            if root.image == image and key not in used and root.build_id != current:
                del self._roots[key]
                try:
                    self._on_unused(root)
                finally:
                    self._pins.pop(key).release()
                dropped = True
        return dropped

    def _current(self, image: str) -> Root:
        if image == images.HOST:
            for root in self._roots.values():
                if root.image == images.HOST:
                    return root
            tree = rootfs.ensure_skeleton(self._state_dir / "rootfs")
            return self._add(images.HOST, tree.name.removeprefix("rootfs-"), tree, None)
        known = self._roots.get(f"{image}@{images.current_id(self._state_dir, image)}")
        if known is not None:  # the usual create: one small read, no metadata parsed
            return known
        try:
            return self._published(image)
        except images.BuildRemoved:  # published over and collected between our read and pin
            return self._published(image)

    def _published(self, image: str) -> Root:
        """The root of `image`'s current build, pinned and added if it is new."""
        built = images.load(self._state_dir, image)
        found = self._roots.get(f"{image}@{built.build_id}")
        if found is None:
            found = self._add_built(built)
            self._drop_unused(image)  # a new build was published: the old one may go
        return found

    def _known(self, image: str, build_id: str) -> Root:
        if image == images.HOST:
            return self._current(image)
        found = self._roots.get(f"{image}@{build_id}")
        return found or self._add_built(images.load_build(self._state_dir, image, build_id))

    def _add_built(self, built: images.BuiltImage) -> Root:
        pin = images.Pin(built)  # first: what is checked next cannot go away meanwhile
        try:
            missing = rootfs.missing_agent_targets(built.rootfs)
            if missing:
                raise images.ImageError(
                    f"image {built.name!r} has no mount point for {', '.join(missing)} (built"
                    f" by an older sandboxd): rebuild it with sandboxd image build {built.name}"
                )
            env = built.meta.get("env") or {}
            problem = images.env_problem(env)
            if problem is not None:
                raise images.ImageError(f"image {built.name!r}: its env is malformed: {problem}")
            return self._add(built.name, built.build_id, built.rootfs, pin, env)
        except BaseException:
            pin.release()
            raise

    def _add(
        self,
        image: str,
        build_id: str,
        tree: Path,
        pin: images.Pin | None,
        env: dict[str, str] | None = None,
    ) -> Root:
        binds = tuple(rootfs.host_binds()) if image == images.HOST else ()
        pycache = agent_pycache(self._state_dir, tree)
        root = Root(image, build_id, tree, binds, pycache, tuple(sorted((env or {}).items())))
        self._on_new(root)
        self._roots[root.key] = root
        if pin is not None:
            self._pins[root.key] = pin
        return root


def record(sandbox_dir: Path, root: Root) -> None:
    (sandbox_dir / ROOT_FILE).write_text(root.key + "\n")
