"""The host side of a sandbox, the same for every backend (runc in sandbox/oci/, a container
engine in sandbox/docker/): the base runtime, the state and sandbox dirs, the workspace
image and its loop mount, the shared root's skeleton, skills, the agent's files and command
line, and the one mount layout both backends render. Imports no backend."""
