# containers.podman's podman connection, with pipelining: a module goes to the container on the
# stdin of one `podman exec -i` instead of a temporary file and four `podman exec` runs (mkdir,
# chmod, run, rm), and the container's filesystem is mounted only when a file is copied. Each
# podman run costs a runtime start-up, and a scenario runs its role three times (check, converge,
# idempotence): the scenarios' converges run this (molecule/*/molecule.yml, ansible_connection).
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt), as the plugin
# it extends.

from __future__ import annotations

DOCUMENTATION = """
    name: podman_pipelined
    short_description: containers.podman.podman with pipelining
    description:
        - Run commands or put/fetch files to an existing container using podman, modules on stdin.
    options:
      remote_addr:
        description:
          - The ID of the container you want to access.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description:
          - User specified via name or UID which is used to execute commands inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description:
          - Extra arguments to pass to the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description:
          - Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    transport = "podman_pipelined"
    has_pipelining = True

    def _connect(self):
        # No `podman mount` for every task: put_file and fetch_file mount when they need it.
        ConnectionBase._connect(self)
        self._connected = True
        return self

    def _mounted(self) -> None:
        if self._mount_point is None:
            PodmanConnection._connect(self)

    def exec_command(self, cmd, in_data=None, sudoable=False):
        """`podman exec`, with -i when there is input (a pipelined module) to give it."""
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = [
            "exec",
            *(["-i"] if in_data is not None else []),
            *(["--user", self.user] if self.user else []),
        ]
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)

    def put_file(self, in_path, out_path):
        self._mounted()
        super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._mounted()
        super().fetch_file(in_path, out_path)
